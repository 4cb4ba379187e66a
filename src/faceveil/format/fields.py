"""Reading and writing record fields: base64, bounded zlib, typed values, packed masks.

Every value read from a record before the key is known goes through these helpers, with
bounds, so a damaged or hostile file fails fast with a clear :class:`MetadataError`
instead of allocating gigabytes or crashing the reader.
"""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np

from ..errors import MetadataError

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


def corrupt(what: str) -> MetadataError:
    return MetadataError(f"faceveil metadata is corrupt ({what})")


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, what: str = "field", max_bytes: int = MAX_SEALED) -> bytes:
    if not isinstance(text, str) or len(text) > 4 * (max_bytes // 3 + 1):
        raise corrupt(f"{what} is missing or too large")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        raise corrupt(f"{what} is not valid base64") from None


def inflate(data: bytes, limit: int, what: str) -> bytes:
    """zlib-decompress at most ``limit`` bytes; more is a corrupt (or hostile) record."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit)
    except zlib.error:
        raise corrupt(f"{what} does not decompress") from None
    if d.unconsumed_tail or not d.eof:
        raise corrupt(f"{what} is larger than it may be")
    return out


def as_dict(d: object, what: str) -> dict:
    if not isinstance(d, dict):
        raise corrupt(f"{what} is not an object")
    return d


def as_int(d: dict, key: str, lo: int, hi: int, what: str) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise corrupt(f"{what}.{key} must be an integer in {lo}..{hi}")
    return v


def as_str(d: dict, key: str, what: str, choices: tuple[str, ...] | None = None,
           optional: bool = False) -> str | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > 1024 or (choices and v not in choices):
        allowed = f" (one of {', '.join(choices)})" if choices else ""
        raise corrupt(f"{what}.{key} is not a valid string{allowed}")
    return v


def as_transform(value: object, what: str) -> np.ndarray:
    """A finite, non-degenerate 2x3 affine."""
    try:
        t = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise corrupt(f"{what} transform is not numeric") from None
    if t.shape != (2, 3) or not np.all(np.isfinite(t)) or np.abs(t).max() > 1e7:
        raise corrupt(f"{what} transform must be a finite 2x3 matrix")
    det = float(np.linalg.det(t[:, :2]))
    if not 1e-6 < abs(det) < 1e6:
        raise corrupt(f"{what} transform is singular or degenerate")
    return t


def pack_mask(mask: np.ndarray) -> dict:
    """A boolean 2-D mask as {"shape", "bits"} (bit-packed, zlib, base64)."""
    mask = np.asarray(mask, dtype=bool)
    return {"shape": list(mask.shape), "bits": b64e(zlib.compress(np.packbits(mask).tobytes(), 9))}


def unpack_mask(record: object, side: int | None = None, what: str = "a face mask",
                max_side: int = MAX_CROP) -> np.ndarray:
    """The boolean mask of a {"shape", "bits"} record; square of ``side`` when given."""
    d = as_dict(record, what)
    shape = d.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(type(n) is int and 1 <= n <= max_side for n in shape)
            or shape[0] * shape[1] > MAX_PHOTO_PIXELS
            or (side is not None and shape != [side, side])):
        raise corrupt(f"{what} has a wrong shape")
    n = shape[0] * shape[1]
    raw = inflate(b64d(d.get("bits"), what, MAX_SEALED), (n + 7) // 8, what)
    if len(raw) != (n + 7) // 8:
        raise corrupt(f"{what} is truncated")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n].reshape(shape).astype(bool)


def pack_residual(q: np.ndarray) -> dict:
    """An int16 (S, S, 3) residual in 1/RESIDUAL_SCALE pixel steps, zlib + base64."""
    q = np.asarray(q, dtype="<i2")
    return {"scale": RESIDUAL_SCALE, "data": b64e(zlib.compress(q.tobytes(), 9))}


def unpack_residual(record: object, side: int) -> np.ndarray | None:
    """A stored residual as float32 pixels (S, S, 3), or None when there is none."""
    if record is None:
        return None
    d = as_dict(record, "residual")
    scale = as_int(d, "scale", 1, 1 << 16, "residual")
    size = side * side * 3 * 2
    raw = inflate(b64d(d.get("data"), "residual"), size, "residual")
    if len(raw) != size:
        raise corrupt("the residual does not fit its face")
    return np.frombuffer(raw, "<i2").reshape(side, side, 3).astype(np.float32) / scale
