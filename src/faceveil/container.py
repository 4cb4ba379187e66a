"""The faceveil file format: one versioned metadata record inside an ordinary PNG.

The record is JSON stored in a single compressed ``iTXt`` chunk with keyword
``faceveil``; any viewer shows the PNG and ignores the chunk. It holds everything
recovery needs except the key. Format version 2 (written since faceveil 0.2)::

    {
      "format": "faceveil", "version": 2, "created_by": "faceveil X.Y.Z",
      "model":   {"reference": {...}, "id": ..., "sha256": ..., "image_size": ..., ...},
      "sampler": {"name": "ddim", "eta": 0, "steps": 50, "spacing": "leading",
                  "timesteps": [...], "inversion": ..., "context": ...,
                  "flip": "mixed" | "signs", "norm": "hidden" | "kept",
                  "recovery_methods": [...], "default_recovery": ...},
      "key":     {"type": "file" | "passphrase", "salt": b64, "kdf": {...} | null,
                  "check": b64 | null},        # null check = deniable mode
      "image":   {"width": W, "height": H},
      "faces":   [{"box": [x, y, w, h], "crop_size": S, "nonce": b64,
                   "window_sha256": hex,      # of the published pixels around the face
                   "sealed": b64,             # everything else, under the face key
                   "lossless": b64}],         # optional: the original pixels, sealed
      "original_metadata": b64 | null,   # input EXIF/XMP/ICC..., sealed under the key
      "digest": hex,                     # SHA-256 of the canonical record (corruption)
      "mac": b64 | null                  # HMAC under the key (tampering)
    }

The public part is only what is needed before the key is known: where the faces are
(boxes, crop sizes), the nonces, the model and sampler, and the key's salt and KDF. A
face's geometry (its landmark-derived crop transform and exact mask outline), its
precision residual and its original noise radius are biometric or pixel-derived, so
they are sealed (ChaCha20-Poly1305) under that face's key::

    sealed = {"transform": [[a, b, c], [d, e, f]], "source": ...,
              "mask": {"shape": [S, S], "bits": b64}, "latent_mask": {...},
              "photo_mask": {"shape": [H, W], "bits": b64},   # only with --mask: the
                                                # pixels it may change, photo space
              "residual": {"scale": 64, "data": b64} | null, "radius": float | null}

Deniable files (``--deniable``) store no key check and no MAC, so nothing in them can
tell a wrong key from the right one: they can hold nothing authenticated. Their faces
carry the sealed fields in clear (``transform``, ``source``, ``mask``, ``latent_mask``,
``residual``, the last only where the facial mask is exactly 0 or 1, so it holds no
original pixels), no lossless copy, no original metadata, and the noise norm is kept.

Every field is validated, with bounds, before anything is computed from it (a hostile
file must not allocate gigabytes or crash the reader), and :func:`open_record` is the
one way to get at a record's faces: it checks the key and the MAC, or refuses a record
without them unless the caller asked for deniable recovery.

Version 1 records (faceveil 0.1: all geometry public, signs-only flip) are still read.
Masks are bit-packed then zlib-compressed. The same JSON is what ``faceveil inspect
--export`` and ``anonymize --sidecar`` write, so files whose PNG chunk was lost (a JPEG
re-encode) stay recoverable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import MetadataError, WrongKeyError
from .keys import NONCE_BYTES, SALT_BYTES, FaceKey, KeySource, SecretKey, check_kdf

FORMAT = "faceveil"
VERSION = 2
READABLE_VERSIONS = (1, 2)
CHUNK_KEYWORD = "faceveil"
_REQUIRED = ("format", "version", "model", "sampler", "key", "image", "faces", "digest")

# Bounds on what a record may ask for, checked before the key is known.
MAX_CHUNK = 256 * 1024 * 1024  # Pillow refuses text chunks over 1 MB by default
MAX_FACES = 4096
MAX_CROP = 2048  # pixels per side of a model crop (SD: 512)
MAX_LATENT = 512
MAX_SIDE = 1 << 16
MAX_PHOTO_PIXELS = 64_000_000  # as images.MAX_PIXELS: a photo-space mask's bits
MAX_STEPS = 1000
MAX_SEALED = 64 * 1024 * 1024  # bytes of one sealed or compressed blob, decoded
RESIDUAL_SCALE = 64
SEAL_FACE = "face"
SEAL_LOSSLESS = "lossless"
SEAL_METADATA = "original-metadata"


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, what: str = "field", max_bytes: int = MAX_SEALED) -> bytes:
    if not isinstance(text, str) or len(text) > 4 * (max_bytes // 3 + 1):
        raise MetadataError(f"faceveil metadata is corrupt ({what} is missing or too large)")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        raise MetadataError(f"faceveil metadata is corrupt ({what} is not valid base64)") from None


def inflate(data: bytes, limit: int, what: str) -> bytes:
    """zlib-decompress at most ``limit`` bytes; more is a corrupt (or hostile) record."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit)
    except zlib.error:
        raise MetadataError(f"faceveil metadata is corrupt ({what} does not decompress)") from None
    if d.unconsumed_tail or not d.eof:
        raise MetadataError(f"faceveil metadata is corrupt ({what} is larger than it may be)")
    return out


# ---------------------------------------------------------------------------
# Typed field access: every read of the record goes through these
# ---------------------------------------------------------------------------


def _corrupt(what: str) -> MetadataError:
    return MetadataError(f"faceveil metadata is corrupt ({what})")


def _dict(d: object, what: str) -> dict:
    if not isinstance(d, dict):
        raise _corrupt(f"{what} is not an object")
    return d


def _int(d: dict, key: str, lo: int, hi: int, what: str) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _corrupt(f"{what}.{key} must be an integer in {lo}..{hi}")
    return v


def _str(d: dict, key: str, what: str, choices: tuple[str, ...] | None = None,
         optional: bool = False) -> str | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > 1024 or (choices and v not in choices):
        allowed = f" (one of {', '.join(choices)})" if choices else ""
        raise _corrupt(f"{what}.{key} is not a valid string{allowed}")
    return v


def _transform(value: object, what: str) -> np.ndarray:
    try:
        t = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _corrupt(f"{what} transform is not numeric") from None
    if t.shape != (2, 3) or not np.all(np.isfinite(t)) or np.abs(t).max() > 1e7:
        raise _corrupt(f"{what} transform must be a finite 2x3 matrix")
    det = float(np.linalg.det(t[:, :2]))
    if not 1e-6 < abs(det) < 1e6:
        raise _corrupt(f"{what} transform is singular or degenerate")
    return t


def pack_mask(mask: np.ndarray) -> dict:
    """A boolean 2-D mask as {"shape", "bits"} (bit-packed, zlib, base64)."""
    mask = np.asarray(mask, dtype=bool)
    return {"shape": list(mask.shape), "bits": b64e(zlib.compress(np.packbits(mask).tobytes(), 9))}


def unpack_mask(record: object, side: int | None = None, what: str = "a face mask",
                max_side: int = MAX_CROP) -> np.ndarray:
    """The boolean mask of a {"shape", "bits"} record; square of ``side`` when given."""
    d = _dict(record, what)
    shape = d.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(type(n) is int and 1 <= n <= max_side for n in shape)
            or shape[0] * shape[1] > MAX_PHOTO_PIXELS
            or (side is not None and shape != [side, side])):
        raise _corrupt(f"{what} has a wrong shape")
    n = shape[0] * shape[1]
    raw = inflate(b64d(d.get("bits"), what, MAX_SEALED), (n + 7) // 8, what)
    if len(raw) != (n + 7) // 8:
        raise _corrupt(f"{what} is truncated")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n].reshape(shape).astype(bool)


def pack_residual(q: np.ndarray) -> dict:
    """An int16 (S, S, 3) residual in 1/RESIDUAL_SCALE pixel steps, zlib + base64."""
    q = np.asarray(q, dtype="<i2")
    return {"scale": RESIDUAL_SCALE, "data": b64e(zlib.compress(q.tobytes(), 9))}


def unpack_residual(record: object, side: int) -> np.ndarray | None:
    """A stored residual as float32 pixels (S, S, 3), or None when there is none."""
    if record is None:
        return None
    d = _dict(record, "residual")
    scale = _int(d, "scale", 1, 1 << 16, "residual")
    size = side * side * 3 * 2
    raw = inflate(b64d(d.get("data"), "residual"), size, "residual")
    if len(raw) != size:
        raise _corrupt("the residual does not fit its face")
    return np.frombuffer(raw, "<i2").reshape(side, side, 3).astype(np.float32) / scale


# ---------------------------------------------------------------------------
# Whole-record validation (before the key is known)
# ---------------------------------------------------------------------------


def canonical_bytes(record: dict) -> bytes:
    """The bytes that the digest and MAC cover: every field but those two, canonical JSON."""
    body = {k: v for k, v in record.items() if k not in ("digest", "mac")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def finalize(record: dict, mac: bytes | None) -> dict:
    """Add the digest (and the MAC computed over :func:`canonical_bytes`, if any)."""
    record = dict(record)
    record["mac"] = b64e(mac) if mac is not None else None
    record["digest"] = hashlib.sha256(canonical_bytes(record)).hexdigest()
    return record


def _validate_face(face: object, i: int, version: int, deniable: bool) -> None:
    what = f"face {i}"
    f = _dict(face, what)
    box = f.get("box")
    if (not isinstance(box, list) or len(box) != 4
            or not all(type(v) is int and abs(v) <= MAX_SIDE for v in box)):
        raise _corrupt(f"{what} box")
    crop = _int(f, "crop_size", 1, MAX_CROP, what)
    if len(b64d(f.get("nonce"), f"{what} nonce", 64)) != NONCE_BYTES:
        raise _corrupt(f"{what} nonce must be {NONCE_BYTES} bytes")
    if version == 1 or deniable:  # geometry in clear
        _transform(f.get("transform"), what)
        unpack_mask(f.get("mask"), crop, f"{what} mask")
        lm = _dict(f.get("latent_mask"), f"{what} latent mask").get("shape")
        if not isinstance(lm, list) or len(lm) != 2 or not all(
                type(n) is int and 1 <= n <= MAX_LATENT for n in lm):
            raise _corrupt(f"{what} latent mask shape")
        unpack_residual(f.get("residual") or None, crop)
        if f.get("photo_mask") is not None:
            unpack_mask(f["photo_mask"], None, f"{what} photo mask", MAX_SIDE)
    else:
        b64d(f.get("sealed"), f"{what} sealed data")
        if "lossless" in f:
            b64d(f["lossless"], f"{what} lossless data")
        sha = f.get("window_sha256")
        if not (isinstance(sha, str) and len(sha) == 64):
            raise _corrupt(f"{what} window hash")


def validate(record: object) -> dict:
    """Check a record's shape, version, bounds and digest; raise :class:`MetadataError`.

    Every field that is read before the key is known is checked here, with limits, so
    that a hostile or damaged record fails fast with a clear message.
    """
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MetadataError("this is not faceveil metadata")
    version = record.get("version")
    if version not in READABLE_VERSIONS:
        raise MetadataError(
            f"faceveil metadata version {version!r} is not supported by this faceveil "
            f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); use the "
            "faceveil release that made the file"
        )
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise MetadataError(f"faceveil metadata is incomplete (missing {', '.join(missing)})")
    if not isinstance(record["digest"], str) or not hmac.compare_digest(
            hashlib.sha256(canonical_bytes(record)).hexdigest(), record["digest"]):
        raise MetadataError("faceveil metadata is corrupt or was modified (digest mismatch)")

    key = _dict(record["key"], "key")
    kind = _str(key, "type", "key", ("file", "passphrase"))
    if len(b64d(key.get("salt"), "key salt", 64)) != SALT_BYTES:
        raise _corrupt(f"the key salt must be {SALT_BYTES} bytes")
    if kind == "passphrase":
        check_kdf(key.get("kdf"))
    elif key.get("kdf") is not None:
        raise _corrupt("a key-file record has KDF parameters")
    deniable = key.get("check") is None
    if deniable != (record.get("mac") is None):
        raise MetadataError("faceveil metadata was modified (key check and MAC disagree)")
    if not deniable:
        b64d(key["check"], "key check", 64)
        b64d(record["mac"], "MAC", 64)

    image = _dict(record["image"], "image")
    _int(image, "width", 1, MAX_SIDE, "image")
    _int(image, "height", 1, MAX_SIDE, "image")
    sampler = _dict(record["sampler"], "sampler")
    steps = _int(sampler, "steps", 1, MAX_STEPS, "sampler")
    _str(sampler, "spacing", "sampler", ("leading", "trailing", "linspace"))
    timesteps = sampler.get("timesteps")
    if (not isinstance(timesteps, list) or len(timesteps) != steps
            or not all(type(t) is int and 0 <= t < 100_000 for t in timesteps)):
        raise _corrupt("sampler.timesteps")
    _str(sampler, "inversion", "sampler", ("plain", "exact-steps"), optional=True)
    _str(sampler, "context", "sampler", ("own", "masked"), optional=True)
    if version >= 2:
        _str(sampler, "flip", "sampler", ("mixed", "signs"))
        _str(sampler, "norm", "sampler", ("hidden", "kept"))
    methods = sampler.get("recovery_methods", ["plain"])
    if not isinstance(methods, list) or not all(
            m in ("lossless", "exact-steps", "plain") for m in methods):
        raise _corrupt("sampler.recovery_methods")
    _str(sampler, "default_recovery", "sampler", ("lossless", "exact-steps", "plain"),
         optional=True)

    model = _dict(record["model"], "model")
    ref = _dict(model.get("reference"), "model reference")
    if not ({"preset", "path", "hub"} & set(ref)):
        raise _corrupt("model reference")
    for k in ("preset", "path", "hub", "revision"):
        _str(ref, k, "model reference", optional=True)
    _str(model, "sha256", "model", optional=True)

    faces = record["faces"]
    if not isinstance(faces, list) or not faces:
        raise MetadataError("faceveil metadata lists no faces")
    if len(faces) > MAX_FACES:
        raise _corrupt(f"more than {MAX_FACES} faces")
    if version >= 2 and deniable and any(isinstance(f, dict) and "sealed" in f for f in faces):
        raise MetadataError(
            "faceveil metadata was modified: the key check and MAC of a record with sealed "
            "faces were removed (an attempt to switch off tamper protection)")
    nonces = set()
    for i, face in enumerate(faces):
        _validate_face(face, i, version, deniable)
        nonces.add(face["nonce"])
    if len(nonces) != len(faces):
        raise _corrupt("two faces share a nonce")
    if record.get("original_metadata") is not None:
        b64d(record["original_metadata"], "original metadata")
    return record


def dumps(record: dict) -> str:
    return json.dumps(record, indent=2, sort_keys=True)


def loads(text: str | bytes) -> dict:
    if len(text) > MAX_CHUNK:
        raise MetadataError("faceveil metadata is too large")
    try:
        record = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MetadataError("faceveil metadata is truncated or not valid JSON") from None
    return validate(record)


def png_text(record: dict) -> dict[str, str]:
    """The PNG text chunks that carry a record (used when encoding the output)."""
    return {CHUNK_KEYWORD: json.dumps(record, sort_keys=True, separators=(",", ":"))}


def read_png_record(text: dict[str, str]) -> dict | None:
    """The faceveil record among a PNG's text chunks, or None when there is none."""
    if CHUNK_KEYWORD not in text:
        return None
    return loads(text[CHUNK_KEYWORD])


def read_sidecar(path: str | os.PathLike) -> dict:
    try:
        if Path(path).stat().st_size > MAX_CHUNK:
            raise MetadataError(f"metadata file {str(path)!r} is too large")
        return loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise MetadataError(f"metadata file {str(path)!r} not found") from None
    except IsADirectoryError:
        raise MetadataError(f"metadata file {str(path)!r} is a folder") from None
    except OSError as e:
        raise MetadataError(f"cannot read metadata file {str(path)!r}: {e.strerror}") from None


def read_record(image: object = None, meta: str | os.PathLike | dict | None = None) -> dict:
    """The record of an anonymized image: from ``meta`` (a record or an exported JSON
    file) when given, else from the PNG chunk of ``image`` (a path, PNG bytes, or a
    decoded image with a ``text`` dict such as :class:`faceveil.images.LoadedImage`).

    Needs neither the model nor torch, so ``faceveil inspect`` starts fast.
    """
    if isinstance(meta, dict):
        return validate(meta)
    if meta is not None:
        return read_sidecar(meta)
    if isinstance(image, (str, os.PathLike, bytes)):
        from .images import load_image

        allow_large_chunks()
        image = load_image(image)
    text = getattr(image, "text", None)
    if isinstance(text, dict):
        record = read_png_record(text)
        if record is not None:
            return record
        raise MetadataError(
            "the image has no faceveil metadata (was it re-encoded?); to recover it, "
            "pass the metadata saved with `anonymize --sidecar` or `inspect --export` "
            "as `recover --meta META.json`"
        )
    raise MetadataError("no faceveil metadata given for this image")


def allow_large_chunks() -> None:
    """Let Pillow read faceveil chunks larger than its 1 MB default."""
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, MAX_CHUNK)


def record_from_png_bytes(data: bytes) -> dict | None:
    """Convenience for tests and tools: the record inside PNG bytes."""
    allow_large_chunks()
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return read_png_record(getattr(img, "text", {}))


# ---------------------------------------------------------------------------
# Faces: what anonymization stores and what recovery gets back
# ---------------------------------------------------------------------------


@dataclass
class FaceData:
    """Everything the record holds about one face, in usable form.

    ``mask`` is the hard pixel mask in crop space, ``latent_mask`` the latent one,
    ``photo_mask`` the user's ``--mask`` in photo space (None without one: then
    recovery may change every pixel the face's mask reaches),
    ``residual`` the precision residual as float pixels (None: not stored), ``radius``
    the original norm of the masked noise (None: the norm was kept), ``lossless`` the
    original pixels' PNG (None: not stored), ``key`` the face's key material (None for
    version 1 files, whose signs come from :meth:`SecretKey.signs`).
    """

    box: tuple[int, int, int, int]
    crop_size: int
    nonce: bytes
    transform: np.ndarray
    mask: np.ndarray
    latent_mask: np.ndarray
    source: str = "file"
    residual: np.ndarray | None = None
    radius: float | None = None
    window_sha256: str | None = None
    lossless: bytes | None = None
    key: FaceKey | None = None
    photo_mask: np.ndarray | None = None


@dataclass
class OpenedRecord:
    """A record whose key was checked (or, deniable, at least applied).

    ``authenticated``: the key check and MAC verified, so every field is the one
    anonymization wrote. ``metadata``: the input's own metadata, restored.
    """

    record: dict
    secret: SecretKey
    faces: list[FaceData]
    authenticated: bool
    metadata: dict[str, bytes] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return int(self.record["version"])

    @property
    def sampler(self) -> dict:
        return self.record["sampler"]


def _face_associated(salt: bytes, face: dict) -> bytes:
    """What a face's sealed data is bound to: the file salt and the face's public fields."""
    public = {k: face[k] for k in ("box", "crop_size", "nonce")}
    return salt + json.dumps(public, sort_keys=True, separators=(",", ":")).encode()


def _geometry(f: FaceData, residual: dict | None) -> dict:
    geometry = {
        "transform": np.asarray(f.transform, dtype=float).round(10).tolist(),
        "source": f.source,
        "mask": pack_mask(f.mask),
        "latent_mask": pack_mask(f.latent_mask),
        "residual": residual,
    }
    if f.photo_mask is not None:
        geometry["photo_mask"] = pack_mask(f.photo_mask)
    return geometry


def face_entry(f: FaceData, secret: SecretKey, deniable: bool) -> dict:
    """The record entry of one face (format version 2). ``f.residual`` must be the
    quantized residual (int16 steps of 1/RESIDUAL_SCALE); in deniable mode it must
    already be cleared wherever it could reveal original pixels."""
    entry: dict = {"box": [int(v) for v in f.box], "crop_size": int(f.crop_size),
                   "nonce": b64e(f.nonce), "window_sha256": f.window_sha256}
    residual = None if f.residual is None else pack_residual(f.residual)
    if deniable:
        if f.lossless is not None or f.radius is not None:
            raise ValueError("deniable records hold nothing that authenticates")
        entry.update(_geometry(f, residual))
        return entry
    fk = secret.face(f.nonce)
    payload = {**_geometry(f, residual), "radius": f.radius}
    plain = zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 9)
    entry["sealed"] = b64e(fk.seal(SEAL_FACE, plain, _face_associated(secret.salt, entry)))
    if f.lossless is not None:
        entry["lossless"] = b64e(fk.seal(SEAL_LOSSLESS, f.lossless,
                                         _face_associated(secret.salt, entry)))
    return entry


def seal_metadata(secret: SecretKey, metadata: dict[str, bytes]) -> str | None:
    """The input's own metadata (EXIF, XMP, ...), sealed under the file key."""
    if not metadata:
        return None
    blob = json.dumps({k: b64e(v) for k, v in metadata.items()}).encode()
    return b64e(secret.seal(SEAL_METADATA, blob))


def _face_from_entry(f: dict, i: int, payload: dict, fk: FaceKey | None,
                     lossless: bytes | None, window: str | None) -> FaceData:
    what = f"face {i}"
    crop = f["crop_size"]
    latent = unpack_mask(payload.get("latent_mask"), None, f"{what} latent mask")
    if latent.shape[0] != latent.shape[1] or not latent.any():
        raise _corrupt(f"{what} latent mask")
    radius = payload.get("radius")
    if radius is not None and not (isinstance(radius, (int, float)) and
                                   math.isfinite(radius) and 0 < radius < 1e6):
        raise _corrupt(f"{what} radius")
    return FaceData(
        box=tuple(f["box"]), crop_size=crop, nonce=b64d(f["nonce"], "nonce", 64),
        transform=_transform(payload.get("transform"), what),
        mask=unpack_mask(payload.get("mask"), crop, f"{what} mask"),
        latent_mask=latent,
        source=str(payload.get("source") or "file")[:64],
        residual=unpack_residual(payload.get("residual"), crop),
        radius=None if radius is None else float(radius),
        window_sha256=window, lossless=lossless, key=fk,
        photo_mask=(None if payload.get("photo_mask") is None else
                    unpack_mask(payload["photo_mask"], None, f"{what} photo mask", MAX_SIDE)),
    )


def open_record(record: dict, key: KeySource, *, deniable: bool = False) -> OpenedRecord:
    """The one way to open a record: resolve the key, check it and the MAC, unseal.

    A record with a key check is opened only with the right key (and only if the MAC
    verifies), whatever ``deniable`` says. A record without key check and MAC is
    unauthenticated by design (``--deniable``): it is refused unless the caller asks
    for deniable recovery, because anyone who edits a file can strip both.

    Raises:
        WrongKeyError: the key is not the file's (or not the kind of key it needs).
        MetadataError: corrupt, tampered or unauthenticated record (without
            ``deniable``).
    """
    record = validate(record)
    info = record["key"]
    params = {"type": info["type"], "salt": b64d(info["salt"], "salt", 64),
              "kdf": info.get("kdf")}
    authenticated = info.get("check") is not None
    if not authenticated and not deniable:
        raise MetadataError(
            "this file carries no key check and no MAC: it was made with --deniable, or "
            "someone removed them to switch off tamper protection. Its metadata cannot be "
            "authenticated; recover it only if you expect a deniable file "
            "(`recover --deniable`)"
        )
    secret = key.resolve(params)
    if authenticated:
        if not secret.matches(b64d(info["check"], "key check", 64)):
            raise WrongKeyError("wrong key: this file was anonymized with a different key")
        if not hmac.compare_digest(b64d(record["mac"], "MAC", 64),
                                   secret.mac(canonical_bytes(record))):
            raise MetadataError("faceveil metadata was modified after anonymization "
                                "(MAC mismatch)")
    version = record["version"]
    faces = []
    for i, f in enumerate(record["faces"]):
        nonce = b64d(f["nonce"], "nonce", 64)
        if version == 1:
            residual = f.get("residual") or None
            lossless = None
            if authenticated and isinstance(f.get("lossless"), dict):
                lossless = secret.open(SEAL_LOSSLESS, b64d(f["lossless"].get("data"),
                                                           "lossless data"), nonce=nonce)
                if lossless is None:
                    raise MetadataError(f"face {i}: the lossless data does not authenticate")
            window = residual.get("window_sha256") if isinstance(residual, dict) else None
            faces.append(_face_from_entry(f, i, f, None, lossless, window))
            continue
        fk = secret.face(nonce)
        if not authenticated:
            faces.append(_face_from_entry(f, i, f, fk, None, f.get("window_sha256")))
            continue
        associated = _face_associated(secret.salt, f)
        plain = fk.open(SEAL_FACE, b64d(f["sealed"], f"face {i} sealed data"), associated)
        if plain is None:
            raise MetadataError(f"face {i}: its sealed data does not authenticate (tampered)")
        try:
            payload = json.loads(inflate(plain, MAX_SEALED, f"face {i} sealed data"))
        except ValueError:
            raise _corrupt(f"face {i} sealed data") from None
        lossless = None
        if "lossless" in f:
            lossless = fk.open(SEAL_LOSSLESS, b64d(f["lossless"], f"face {i} lossless"),
                               associated)
            if lossless is None:
                raise MetadataError(f"face {i}: the lossless data does not authenticate")
        faces.append(_face_from_entry(f, i, _dict(payload, f"face {i} sealed data"), fk,
                                      lossless, f.get("window_sha256")))
    metadata = open_metadata(secret, record.get("original_metadata")) if authenticated else {}
    return OpenedRecord(record, secret, faces, authenticated, metadata)


def open_metadata(secret: SecretKey, sealed: str | None) -> dict[str, bytes]:
    """The input's own metadata sealed by :func:`seal_metadata` ({} for None)."""
    if not sealed:
        return {}
    blob = secret.open(SEAL_METADATA, b64d(sealed, "metadata"))
    if blob is None:
        raise MetadataError("the encrypted original metadata does not authenticate")
    try:
        return {str(k): b64d(v, "original metadata")
                for k, v in _dict(json.loads(blob), "original metadata").items()}
    except ValueError:
        raise _corrupt("original metadata") from None
