"""The web page's server: a Starlette application over :mod:`faceveil.api`.

Privacy. Photos, keys and results live in this process's memory only: uploads are
read into memory (never spooled to a temporary file), decoded by
:func:`faceveil.images.load_image` like the command line's inputs, and kept in a
:class:`Store` under random, unguessable ids that expire and fit a memory bound. A key
(a key file's contents or a passphrase) arrives in a JSON body, is parsed in memory
(:func:`faceveil.keys.parse_key_file`), lives as long as the one job it was sent for,
and is never stored, logged or sent back. Nothing is ever written to disk.

Who may call. Every ``/api/`` request must carry the page's token (a random value made
at start-up and written into the page) in the ``X-Faceveil-Token`` header: a page of
another site cannot read it, nor send a custom header without a CORS preflight, which
this server never allows (it sends no CORS headers). Requests whose ``Host`` is not this
server's name are refused (a DNS-rebinding site would otherwise be "same-origin"), as
are requests a browser marks ``Sec-Fetch-Site: cross-site`` or sends with an ``Origin``
other than this server. Responses forbid framing,
caching, sniffing and any resource not from this server (Content-Security-Policy).

Work. Detection runs in one worker thread and the model in another, off the event
loop: one model per process (:func:`faceveil.api.get_model` caches it), one model job
at a time (a 2-core machine gains nothing from two), the others queued. The page polls
``GET /api/jobs/ID`` for the progress of a job.

The HTTP API (what the page's script calls):

==============================  =====================================================
``POST /api/photos``            raw image bytes (header ``X-Faceveil-Name``: its
                                URL-encoded name) -> decoded, faces detected: ``id``,
                                ``faces``, ``candidates`` (low scores), ``skipped``
``GET /api/photos/ID/image``    the photo as the server decoded it (PNG)
``POST /api/anonymize``         JSON ``{photo, exclude, boxes, key, sidecar}`` -> 202
                                ``{job}``
``POST /api/files``             raw bytes of an anonymized file -> ``id`` and what its
                                public record says (``record``: null when it has none)
``POST /api/recover``           JSON ``{file, key, sidecar}`` -> 202 ``{job}``
``GET /api/jobs/ID``            state, progress, seconds, result summary or error
``GET /api/jobs/ID/output``     the anonymized or recovered PNG
``GET /api/jobs/ID/sidecar``    the anonymized file's metadata, when it was asked for
``POST /api/keygen``            the contents of a new key file
``DELETE /api/{photos,files,jobs}/ID``  forget it now (a running job is stopped)
==============================  =====================================================

``key`` is ``{"key_file": BASE64}`` (the file's bytes) or ``{"passphrase": TEXT}``.
Errors are JSON ``{"error": {"kind", "code", "message"}}`` where ``code`` is the exit
status the command line gives for the same problem (1 bad input or key, 3 wrong key, 4
missing/corrupt/modified metadata, 5 model, 6 no face, 70 a bug) and ``kind`` names it.
"""

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
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import api, batch, images
from ..errors import (
    FaceveilError,
    InputError,
    KeyMaterialError,
    MetadataError,
    ModelError,
    NoFaceError,
    WrongKeyError,
)
from ..format import png
from ..format.records import Record
from ..keys import KeySource
from ..options import Options

log = logging.getLogger("faceveil.web")

MB = 1024 * 1024
DEFAULT_MAX_UPLOAD = 25 * MB
DEFAULT_MAX_MEMORY = 1024 * MB
DEFAULT_KEEP_SECONDS = 30 * 60
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


@dataclass
class Settings:
    """What ``faceveil serve`` was started with."""

    model: str | None = None
    options: Options = field(default_factory=Options)  # sampling, detection, runtime
    max_upload: int = DEFAULT_MAX_UPLOAD  # bytes of one upload (and of one JSON body)
    max_memory: int = DEFAULT_MAX_MEMORY  # bytes the store may hold
    keep_seconds: float = DEFAULT_KEEP_SECONDS  # unused entries are forgotten after this
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # Host header values; "*": any


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


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


def _problem_response(exc: BaseException) -> JSONResponse:
    status, error = error_info(exc)
    return JSONResponse({"error": error}, status_code=status)


def endpoint(func):
    """A request handler whose errors become JSON ``{"error": ...}`` responses."""

    @functools.wraps(func)
    async def wrapper(*args) -> Response:  # (request) or (self, request)
        try:
            return await func(*args)
        except Exception as e:  # every error, expected or not, is an answer, not a trace
            return _problem_response(e)

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


# ---------------------------------------------------------------------------
# The in-memory store
# ---------------------------------------------------------------------------


@dataclass
class _Entry:
    value: object
    size: int
    used: float
    pinned: bool


class Store:
    """Uploaded photos, anonymized files and jobs, under random ids, in memory only.

    An entry unused for ``keep_seconds`` is forgotten; when a new entry would take the
    total over ``max_bytes``, the least recently used entries are forgotten first, and
    if that is not enough (running jobs are never forgotten) the new one is refused.
    Thread-safe: the event loop and the worker threads share it.
    """

    def __init__(self, max_bytes: int, keep_seconds: float, clock=time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, value: object, size: int, *, pinned: bool = False) -> str:
        with self._lock:
            self._expire()
            self._make_room(size)
            key = secrets.token_urlsafe(24)
            self._items[key] = _Entry(value, size, self._clock(), pinned)
            return key

    def get(self, key: str, kind: type, what: str):
        """The entry ``key`` if it is a ``kind``, else 404 (expired, forgotten, unknown)."""
        with self._lock:
            self._expire()
            entry = self._items.get(key)
            if entry is None or not isinstance(entry.value, kind):
                raise HttpProblem(404, "expired",
                                  f"this {what} is no longer on the server (forgotten after "
                                  f"{self.keep_seconds / 60:g} minutes unused, or to make "
                                  "room): add it again")
            entry.used = self._clock()
            self._items.move_to_end(key)
            return entry.value

    def update(self, key: str, *, size: int, pinned: bool) -> None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                entry.size, entry.pinned, entry.used = size, pinned, self._clock()

    def remove(self, key: str) -> object | None:
        with self._lock:
            entry = self._items.pop(key, None)
            return None if entry is None else entry.value

    def values(self) -> list:
        with self._lock:
            return [e.value for e in self._items.values()]

    @property
    def total(self) -> int:
        with self._lock:
            return sum(e.size for e in self._items.values())

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._items.items()
                    if not e.pinned and now - e.used > self.keep_seconds]:
            del self._items[key]

    def _make_room(self, size: int) -> None:
        total = sum(e.size for e in self._items.values())
        for key in [k for k, e in self._items.items() if not e.pinned]:
            if total + size <= self.max_bytes:
                break
            total -= self._items.pop(key).size
        if total + size > self.max_bytes:
            raise HttpProblem(503, "busy",
                              f"the server holds as much as its memory limit allows "
                              f"({self.max_bytes // MB} MB, serve --max-memory-mb): wait for "
                              "running work to finish, or remove photos from the page")


@dataclass
class Photo:
    """A photo to anonymize, decoded, with what detection found in it."""

    name: str
    loaded: images.LoadedImage
    regions: list
    skipped: list[dict]
    detections: int  # detected faces, numbered 0..n-1 (boxes are numbered after them)


@dataclass
class AnonymizedFile:
    """An anonymized file to recover, decoded, with its record (None: it has none)."""

    name: str
    loaded: images.LoadedImage
    record: Record | None


class JobCancelled(Exception):
    """Raised inside a job's progress callback once the job was cancelled."""


@dataclass
class Job:
    """One model run (anonymize or recover) and its progress, result or error."""

    kind: str
    name: str
    phases: int  # engine phases expected (each ``steps`` long), for the progress fraction
    created: float = field(default_factory=time.monotonic)
    state: str = "queued"  # queued, running, done, error
    phase: str | None = None
    step: int = 0
    steps: int = 0
    phases_done: int = 0
    started: float | None = None
    finished: float | None = None
    summary: dict = field(default_factory=dict)
    output: bytes | None = None
    sidecar: bytes | None = None
    error: dict | None = None
    cancelled: bool = False

    def progress(self, phase: str, done: int, total: int) -> None:
        """The engine's progress callback (called from the worker thread)."""
        if self.cancelled:
            raise JobCancelled()
        self.phase, self.step, self.steps = phase, done, total
        if done == total:
            self.phases_done += 1

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        if not self.steps:
            return 0.0
        current = 0.0 if self.step == self.steps else self.step / self.steps
        return min(0.99, (self.phases_done + current) / max(1, self.phases))

    @property
    def size(self) -> int:
        return len(self.output or b"") + len(self.sidecar or b"")


# ---------------------------------------------------------------------------
# Request helpers
# ---------------------------------------------------------------------------


def _too_large(limit: int) -> HttpProblem:
    return HttpProblem(413, "too-large",
                       f"the upload is larger than the limit of {limit / MB:g} MB "
                       "(serve --max-upload-mb sets it)")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, read into memory, refused (413) past ``limit`` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


async def read_json(request: Request, limit: int) -> dict:
    body = await read_body(request, limit)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError("the request is not valid JSON") from None
    if not isinstance(data, dict):
        raise InputError("the request must be a JSON object")
    return data


def _field(data: dict, name: str, kind: type, what: str):
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InputError(f"missing or malformed field {name!r} ({what})")
    return value


def key_from(data: dict) -> KeySource:
    """The key of a request: ``{"key_file": BASE64}`` or ``{"passphrase": TEXT}``."""
    spec = data.get("key")
    if not isinstance(spec, dict) or not spec:
        raise KeyMaterialError("no key: choose a key file (or generate one), or type a "
                               "passphrase")
    if "key_file" in spec:
        text = spec["key_file"]
        try:
            raw = base64.b64decode(text if isinstance(text, str) else "", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        return KeySource.from_key_file_bytes(raw, "the chosen key file")
    phrase = spec.get("passphrase")
    if not isinstance(phrase, str):
        raise KeyMaterialError("the key must be a key file or a passphrase")
    return KeySource.from_passphrase(phrase)


def _name(request: Request) -> str:
    """The uploaded file's name (for the page; never a path on this machine)."""
    name = unquote(request.headers.get("x-faceveil-name", ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:200] or "photo"


def _boxes(value: object, width: int, height: int) -> list[tuple[int, int, int, int]]:
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


def _indices(value: object, known: set[int]) -> set[int]:
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise InputError("'exclude' must be a list of face numbers")
    unknown = sorted(set(value) - known)
    if unknown:
        raise InputError(f"face {unknown[0]} is not a detected face of this photo")
    return set(value)


def _png(data: bytes | None) -> Response:
    if data is None:
        raise HttpProblem(404, "expired", "there is no such output (yet)")
    return Response(data, media_type="image/png")


def record_summary(record: Record) -> dict:
    """What a file's public record tells the person recovering it (nothing secret)."""
    return {"faces": len(record.faces), "key_type": record.key.type,
            "created_by": record.created_by, "model": record.model.get("id"),
            "recovery": record.sampler.default_recovery,
            "deniable": not record.authenticated}


# ---------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------


class Guard:
    """ASGI middleware: the Host check, the token on ``/api/``, no cross-site requests
    (``Sec-Fetch-Site``, ``Origin``),
    and the security headers on every response."""

    def __init__(self, app, token: str, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.token = token.encode()
        self.any_host = "*" in allowed_hosts
        self.hosts = {h.lower() for h in allowed_hosts}

    def _refusal(self, scope) -> HttpProblem | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        name = host[: host.index("]") + 1] if host.startswith("[") and "]" in host \
            else host.rsplit(":", 1)[0]
        if not self.any_host and name not in self.hosts:
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
            await _problem_response(refusal)(scope, receive, send_secure)
            return
        await self.app(scope, receive, send_secure)


class WebApp:
    """The handlers and the state they share (the store, the worker threads, the model)."""

    def __init__(self, settings: Settings, token: str | None = None) -> None:
        self.settings = settings
        self.token = token or secrets.token_urlsafe(32)
        self.backbone = api.get_model(settings.model, settings.options.runtime.device)
        self.store = Store(settings.max_memory, settings.keep_seconds)
        self.detect_pool = ThreadPoolExecutor(1, thread_name_prefix="faceveil-detect")
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="faceveil-model")
        page = resources.files(__package__).joinpath("static", "index.html").read_text("utf-8")
        self.page = (page.replace("__TOKEN__", self.token)
                     .replace("__MAX_UPLOAD__", str(settings.max_upload))
                     .replace("__STEPS__", str(settings.options.sampling.steps)))

    # -- plumbing --

    async def _in(self, pool: ThreadPoolExecutor, func, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    def _submit(self, job: Job, work) -> str:
        """Queue ``work`` (returns summary, output, sidecar) on the model thread."""
        job_id = self.store.add(job, 0, pinned=True)
        self.model_pool.submit(self._run, job_id, job, work)
        return job_id

    def _run(self, job_id: str, job: Job, work) -> None:
        t0 = time.monotonic()
        job.started, job.state = t0, "running"
        try:
            if job.cancelled:
                raise JobCancelled()
            job.summary, job.output, job.sidecar = work()
            job.state = "done"
            log.info("%s: %d face(s) in %.1f s", job.kind, job.summary.get("faces", 0),
                     time.monotonic() - t0)
        except JobCancelled:
            job.state, job.error = "error", {"kind": "cancelled", "code": 1,
                                             "message": "stopped"}
        except Exception as e:
            job.state, job.error = "error", error_info(e)[1]
        finally:
            job.finished = time.monotonic()
            self.store.update(job_id, size=job.size, pinned=False)

    def shutdown(self) -> None:
        """Stop queued and running jobs (at the end of ``faceveil serve``)."""
        for value in self.store.values():
            if isinstance(value, Job):
                value.cancelled = True
        self.model_pool.shutdown(wait=False, cancel_futures=True)
        self.detect_pool.shutdown(wait=False, cancel_futures=True)

    # -- pages --

    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.page)

    # -- anonymize --

    @endpoint
    async def add_photo(self, request: Request) -> Response:
        data = await read_body(request, self.settings.max_upload)
        name = _name(request)
        options = self.settings.options

        def work():
            loaded = images.load_image(data)
            regions, skipped = api.find_regions(loaded.pixels, options=options,
                                                model=self.backbone)
            return loaded, regions, skipped

        loaded, regions, skipped = await self._in(self.detect_pool, work)
        detections = len(regions) + sum("index" in x for x in skipped)
        size = loaded.pixels.nbytes + sum(len(v) for v in loaded.metadata.values())
        photo_id = self.store.add(Photo(name, loaded, regions, skipped, detections), size)
        height, width = loaded.pixels.shape[:2]
        return JSONResponse({
            "id": photo_id, "name": name, "width": width, "height": height,
            "faces": [batch.face_json(r.index, r) for r in regions],
            "candidates": [{"box": x["box"], "score": x["score"], "reason": x["reason"]}
                           for x in skipped if x.get("kind") == "low-score"],
            "skipped": [x for x in skipped if x.get("kind") != "low-score"],
            "notes": loaded.notes + api.resolution_notes(regions, self.backbone),
            "metadata": sorted(loaded.metadata),
        })

    @endpoint
    async def photo_image(self, request: Request) -> Response:
        photo = self.store.get(request.path_params["id"], Photo, "photo")
        return _png(await self._in(self.detect_pool, images.encode_image, photo.loaded.pixels,
                                   "PNG"))

    @endpoint
    async def anonymize(self, request: Request) -> Response:
        data = await read_json(request, self.settings.max_upload)
        photo = self.store.get(_field(data, "photo", str, "the photo's id"), Photo, "photo")
        height, width = photo.loaded.pixels.shape[:2]
        excluded = _indices(data.get("exclude", []), {r.index for r in photo.regions})
        boxes = _boxes(data.get("boxes", []), width, height)
        key = key_from(data)
        kept = [r for r in photo.regions if r.index not in excluded]
        if not kept and not boxes:
            raise NoFaceError("no face to anonymize: every face is switched off; switch one "
                              "on, or draw a box around a face")
        sidecar = bool(data.get("sidecar"))
        options, backbone = self.settings.options, self.backbone
        job = Job("anonymize", photo.name, phases=3)  # context, exact inversion, denoising

        def work():
            # Boxes are numbered after the detections, as `anonymize --box` numbers them.
            regions = kept + [api.box_region(photo.loaded.pixels, b, model=backbone,
                                             index=photo.detections + k)
                              for k, b in enumerate(boxes)]
            job.phases = 3 * -(-len(regions) // options.runtime.batch_size)
            result = api.anonymize(photo.loaded, key, options=options, model=backbone,
                                   regions=regions, progress=job.progress)
            summary = {"faces": len(result.regions),
                       "notes": result.notes + batch.left_out_notes(result.skipped),
                       "anonymized": [batch.face_json(r.index, r) for r in result.regions],
                       "excluded": sorted(excluded)}
            side = result.sidecar_bytes() if sidecar else None
            return summary, result.png_bytes(), side

        return JSONResponse({"job": self._submit(job, work)}, status_code=202)

    # -- recover --

    @endpoint
    async def add_file(self, request: Request) -> Response:
        data = await read_body(request, self.settings.max_upload)
        name = _name(request)

        def work():
            png.allow_large_chunks()
            loaded = images.load_image(data)
            return loaded, png.from_text_chunks(loaded.text)

        loaded, record = await self._in(self.detect_pool, work)
        size = loaded.pixels.nbytes + len(data)
        file_id = self.store.add(AnonymizedFile(name, loaded, record), size)
        height, width = loaded.pixels.shape[:2]
        return JSONResponse({"id": file_id, "name": name, "width": width, "height": height,
                             "record": None if record is None else record_summary(record)})

    @endpoint
    async def recover(self, request: Request) -> Response:
        data = await read_json(request, self.settings.max_upload)
        file = self.store.get(_field(data, "file", str, "the file's id"), AnonymizedFile,
                              "file")
        meta = None
        if data.get("sidecar"):
            meta = png.loads(_field(data, "sidecar", str, "the sidecar's JSON text"))
        elif file.record is None:
            raise MetadataError("this image has no faceveil metadata (was it re-encoded?): "
                                "add the sidecar JSON saved when it was anonymized")
        key = key_from(data)
        record = meta or file.record
        options = self.settings.options
        per_batch = 3 if record.sampler.context == "masked" else 2
        batches = -(-len(record.faces) // options.runtime.batch_size)
        job = Job("recover", file.name, phases=per_batch * batches)

        def work():
            result = api.recover(file.loaded, key, meta=meta, options=options,
                                 progress=job.progress)
            notes = list(result.notes)
            data = result.encode("PNG", notes)
            return {"faces": len(result.faces), "notes": notes}, data, None

        return JSONResponse({"job": self._submit(job, work)}, status_code=202)

    # -- jobs and keys --

    @endpoint
    async def job_status(self, request: Request) -> Response:
        job = self.store.get(request.path_params["id"], Job, "job")
        ahead = sum(1 for j in self.store.values() if isinstance(j, Job)
                    and j.state in ("queued", "running") and j.created < job.created)
        end = job.finished or time.monotonic()
        return JSONResponse({
            "kind": job.kind, "name": job.name, "state": job.state, "phase": job.phase,
            "step": job.step, "steps": job.steps, "fraction": round(job.fraction, 4),
            "ahead": ahead if job.state == "queued" else 0,
            "seconds": None if job.started is None else round(end - job.started, 2),
            "result": job.summary if job.state == "done" else None,
            "has_sidecar": job.sidecar is not None, "error": job.error,
        })

    @endpoint
    async def job_output(self, request: Request) -> Response:
        return _png(self.store.get(request.path_params["id"], Job, "job").output)

    @endpoint
    async def job_sidecar(self, request: Request) -> Response:
        job = self.store.get(request.path_params["id"], Job, "job")
        if job.sidecar is None:
            raise HttpProblem(404, "expired", "no sidecar was asked for with this photo")
        return Response(job.sidecar, media_type="application/json")

    @endpoint
    async def forget(self, request: Request) -> Response:
        value = self.store.remove(request.path_params["id"])
        if isinstance(value, Job):
            value.cancelled = True
        return Response(status_code=204)

    @endpoint
    async def keygen(self, request: Request) -> Response:
        from ..keys import new_key_file

        return Response(new_key_file(), media_type="application/octet-stream")

    def routes(self) -> list:
        static = StaticFiles(packages=[("faceveil.web", "static")])
        return [
            Route("/", self.index, methods=["GET"]),
            Mount("/static", static, name="static"),
            Route("/api/photos", self.add_photo, methods=["POST"]),
            Route("/api/photos/{id}/image", self.photo_image, methods=["GET"]),
            Route("/api/anonymize", self.anonymize, methods=["POST"]),
            Route("/api/files", self.add_file, methods=["POST"]),
            Route("/api/recover", self.recover, methods=["POST"]),
            Route("/api/jobs/{id}", self.job_status, methods=["GET"]),
            Route("/api/jobs/{id}/output", self.job_output, methods=["GET"]),
            Route("/api/jobs/{id}/sidecar", self.job_sidecar, methods=["GET"]),
            Route("/api/keygen", self.keygen, methods=["POST"]),
            Route("/api/{what:str}/{id}", self.forget, methods=["DELETE"]),
        ]


def create_app(settings: Settings | None = None, *, token: str | None = None) -> Starlette:
    """The ASGI application for ``settings`` (loads the model now: a missing model is an
    error at start-up, not at the first photo). ``app.state.web`` is the :class:`WebApp`."""
    settings = settings or Settings()
    web = WebApp(settings, token)
    app = Starlette(routes=web.routes())
    app.state.web = web
    app.add_middleware(Guard, token=web.token, allowed_hosts=settings.allowed_hosts)
    return app
