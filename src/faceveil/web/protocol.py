"""HTTP for the page: errors as JSON, request bodies read with limits, the fields and
keys of a request, and the :class:`Guard` every request passes (host, origin, token,
security headers)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import json
import logging
import os
import re
from urllib.parse import unquote

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import (
    FaceveilError,
    InputError,
    KeyMaterialError,
    MetadataError,
    ModelError,
    NoFaceError,
    RecipientError,
    WrongKeyError,
)
from ..format.records import Record
from ..keys import KeySource
from ..recipients import Identities, Recipients

log = logging.getLogger("faceveil.web")


MB = 1024 * 1024


DEFAULT_MAX_UPLOAD = 25 * MB


MAX_BOXES = 256  # hand-drawn boxes per photo


TOKEN_HEADER = "x-faceveil-token"


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class HttpProblem(Exception):
    """A request the server refuses for a reason of its own (size, age, load, token)."""

    def __init__(self, status: int, kind: str, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code


# Most specific first: the kind the page explains, and the HTTP status.
_KINDS: tuple[tuple[type[FaceveilError], str, int], ...] = (
    (WrongKeyError, "wrong-key", 403),
    (MetadataError, "metadata", 422),
    (ModelError, "model", 500),
    (NoFaceError, "no-face", 422),
    (KeyMaterialError, "bad-key", 400),
    (RecipientError, "bad-key", 400),
    (InputError, "bad-input", 400),
    (FaceveilError, "bad-input", 400),
)


def error_info(exc: BaseException) -> tuple[int, dict]:
    """The HTTP status and the ``error`` object for an exception. Unexpected exceptions
    are logged by type only (their text could hold anything) and reported as a bug."""
    if isinstance(exc, HttpProblem):
        return exc.status, {"kind": exc.kind, "code": exc.code, "message": str(exc)}
    if isinstance(exc, FaceveilError):
        kind, status = next((k, s) for cls, k, s in _KINDS if isinstance(exc, cls))
        return status, {"kind": kind, "code": exc.exit_code, "message": str(exc)}
    if isinstance(exc, MemoryError):
        return 507, {"kind": "memory", "code": 1,
                     "message": "out of memory: try a smaller photo, or fewer at once"}
    if os.environ.get("FACEVEIL_DEBUG"):
        log.error("unexpected error (a bug)", exc_info=exc)
    else:
        log.error("unexpected %s (a bug; set FACEVEIL_DEBUG=1 for details)", type(exc).__name__)
    return 500, {"kind": "bug", "code": 70,
                 "message": f"unexpected {type(exc).__name__} (a bug in faceveil; the "
                            "server's log says more with FACEVEIL_DEBUG=1)"}


def problem_response(exc: BaseException) -> JSONResponse:
    status, error = error_info(exc)
    return JSONResponse({"error": error}, status_code=status)


def endpoint(func):
    """A request handler whose errors become JSON ``{"error": ...}`` responses."""

    @functools.wraps(func)
    async def wrapper(*args) -> Response:  # (request) or (self, request)
        try:
            return await func(*args)
        except Exception as e:  # every error, expected or not, is an answer, not a trace
            return problem_response(e)

    return wrapper


class RedactIds(logging.Filter):
    """Hides the ids in uvicorn's access log lines (``/api/jobs/<id>/output``): an id is
    the capability to fetch a photo while it is in memory. Keys never reach the log
    (they travel in request bodies, which are not logged)."""

    PATTERN = re.compile(r"(/api/[a-z]+/)[^/?\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1<id>", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def _too_large(limit: int) -> HttpProblem:
    return HttpProblem(413, "too-large",
                       f"the upload is larger than the limit of {limit / MB:g} MB "
                       "(serve --max-upload-mb sets it)")


BODY_TIMEOUT = 30.0
"""Seconds a request body may stall between two pieces before the request is dropped
(408): a client that stops half-way through an upload does not hold its place."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, read into memory, refused (413) past ``limit`` bytes and
    dropped (408) when it stalls for :data:`BODY_TIMEOUT` seconds."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    body = bytearray()
    pieces = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(pieces.__anext__(), BODY_TIMEOUT)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise HttpProblem(408, "timeout", f"the upload stalled for {BODY_TIMEOUT:g} s: "
                              "send it again") from None
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


WORK_BYTES_PER_PIXEL = 12
"""Memory one photo's work takes per pixel, about: a 64-megapixel photo took 620 MB
beyond the model's (docs/measured.md, issue 27), so 9.7, with a margin."""


def check_fits(data: bytes, max_memory: int) -> None:
    """Refuse (413) an image whose pixels, read from its header before anything is
    decoded, would take more than the server's memory bound to work on."""
    from ..images import header_size

    size = header_size(data)
    if size is None:
        return
    width, height = size
    need = width * height * WORK_BYTES_PER_PIXEL
    if need > max_memory:
        raise HttpProblem(
            413, "too-large",
            f"the photo is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels): "
            f"working on it takes about {need / MB:.0f} MB, more than this server's "
            f"--max-memory-mb of {max_memory / MB:g} MB; send a smaller photo, or start "
            "the server with a larger --max-memory-mb")


async def read_json(request: Request, limit: int) -> dict:
    body = await read_body(request, limit)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError("the request is not valid JSON") from None
    if not isinstance(data, dict):
        raise InputError("the request must be a JSON object")
    return data


def field_of(data: dict, name: str, kind: type, what: str):
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InputError(f"missing or malformed field {name!r} ({what})")
    return value


def key_from(data: dict):
    """The key of a request: ``{"key_file": BASE64}``, ``{"passphrase": TEXT}``,
    ``{"recipients": [PUBKEY, ...]}`` (anonymize to public keys) or ``{"identity":
    BASE64}`` (an age identity file or unencrypted SSH private key, to recover)."""
    spec = data.get("key")
    if not isinstance(spec, dict) or not spec:
        raise KeyMaterialError("no key: choose a key file (or generate one), or type a "
                               "passphrase")
    if "recipients" in spec:
        listed = spec["recipients"]
        if not isinstance(listed, list) or not all(isinstance(r, str) for r in listed):
            raise RecipientError("'recipients' must be a list of public keys")
        return Recipients.parse(listed)
    if "identity" in spec:
        return Identities.parse(_b64_field(spec["identity"]), "the chosen identity file")
    if "key_file" in spec:
        return KeySource.from_key_file_bytes(_b64_field(spec["key_file"]),
                                             "the chosen key file")
    phrase = spec.get("passphrase")
    if not isinstance(phrase, str):
        raise KeyMaterialError("the key must be a key file or a passphrase")
    return KeySource.from_passphrase(phrase)


def _b64_field(text: object) -> bytes:
    try:
        return base64.b64decode(text if isinstance(text, str) else "", validate=True)
    except (binascii.Error, ValueError):
        return b""


def upload_name(request: Request) -> str:
    """The uploaded file's name (for the page; never a path on this machine)."""
    name = unquote(request.headers.get("x-faceveil-name", ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:200] or "photo"


def boxes_of(value: object, width: int, height: int) -> list[tuple[int, int, int, int]]:
    if not isinstance(value, list) or len(value) > MAX_BOXES:
        raise InputError(f"'boxes' must be a list of at most {MAX_BOXES} [x, y, w, h] boxes")
    boxes = []
    for box in value:
        if (not isinstance(box, list) or len(box) != 4
                or not all(type(v) is int for v in box)):
            raise InputError(f"a box must be [x, y, w, h] in whole pixels, not {box!r:.60}")
        x, y, w, h = box
        if w <= 0 or h <= 0 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise InputError(f"box {box} is empty or outside the {width}x{height} photo")
        boxes.append((x, y, w, h))
    return boxes


def indices_of(value: object, known: set[int]) -> set[int]:
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise InputError("'exclude' must be a list of face numbers")
    unknown = sorted(set(value) - known)
    if unknown:
        raise InputError(f"face {unknown[0]} is not a detected face of this photo")
    return set(value)


def png_response(data: bytes | None) -> Response:
    if data is None:
        raise HttpProblem(404, "expired", "there is no such output (yet)")
    return Response(data, media_type="image/png")


def record_summary(record: Record) -> dict:
    """What a file's public record tells the person recovering it (nothing secret)."""
    return {"faces": len(record.faces), "key_type": record.key.type,
            "created_by": record.created_by, "model": record.model.get("id"),
            "recovery": record.sampler.default_recovery,
            "deniable": not record.authenticated}


MAX_REQUESTS = 64
"""Requests in progress at once; the next is answered 503 (open connections do not count:
an idle one is closed by the server's read timeout)."""


class Limit:
    """ASGI middleware: at most ``requests`` HTTP requests in progress; one more is
    answered 503 at once. It counts requests, not connections, so idle sockets cannot
    use the places up (one event loop: the count needs no lock)."""

    def __init__(self, app, requests: int = MAX_REQUESTS) -> None:
        self.app = app
        self.free = requests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.free <= 0:
            busy = HttpProblem(503, "busy", "the server is busy: try again in a moment")
            await problem_response(busy)(scope, receive, send)
            return
        self.free -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.free += 1


def _address_literal(address: str) -> str:
    """An IP address as it appears in a Host header (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


class Guard:
    """ASGI middleware: the Host check, the token on ``/api/``, no cross-site requests
    (``Sec-Fetch-Site``, ``Origin``),
    and the security headers on every response.

    A request's ``Host`` must be one of ``allowed_hosts`` or the very address the
    connection came in on (a DNS-rebinding page names its own domain, never an
    address), so a server on every interface (``--host 0.0.0.0``) answers to this
    machine's addresses and the names it was given, and to no other name."""

    def __init__(self, app, token: str, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = {h.lower() for h in allowed_hosts}

    def _refusal(self, scope) -> HttpProblem | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        name = host[: host.index("]") + 1] if host.startswith("[") and "]" in host \
            else host.rsplit(":", 1)[0]
        server = scope.get("server") or ("", None)
        if name not in self.hosts and name != _address_literal(str(server[0]).lower()):
            return HttpProblem(421, "forbidden", "this server does not answer to that host "
                               "name (use the address that `faceveil serve` printed)")
        origin = headers.get("origin")
        if headers.get("sec-fetch-site") == "cross-site" or (
                origin is not None and origin.lower() != f"http://{host}"):
            # A browser names the page that sent a request in Origin: only this one may.
            return HttpProblem(403, "forbidden", "cross-site requests are refused")
        if scope["path"].startswith("/api/") and not hmac.compare_digest(
                headers.get(TOKEN_HEADER, "").encode(), self.token):
            return HttpProblem(403, "forbidden", "missing or wrong page token: reload the page")
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secure(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await problem_response(refusal)(scope, receive, send_secure)
            return
        await self.app(scope, receive, send_secure)
