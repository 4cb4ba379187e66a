"""The faceveil file format: one versioned metadata record inside an ordinary PNG.

The record is JSON stored in a single compressed ``iTXt`` chunk with keyword
``faceveil``; any viewer shows the PNG and ignores the chunk. It holds everything
recovery needs except the key::

    {
      "format": "faceveil", "version": 1, "created_by": "faceveil X.Y.Z",
      "model":   {"reference": {...}, "id": ..., "sha256": ..., "image_size": ..., ...},
      "sampler": {"name": "ddim", "eta": 0, "steps": 50, "spacing": "leading",
                  "timesteps": [...], "recovery_methods": [...]},
      "key":     {"type": "file" | "passphrase", "salt": b64, "kdf": {...} | null,
                  "check": b64 | null},          # null check = deniable mode
      "image":   {"width": W, "height": H},
      "faces":   [{"box": [x, y, w, h], "transform": [[a, b, c], [d, e, f]],
                   "crop_size": S, "source": ..., "nonce": b64,
                   "mask": {"shape": [S, S], "bits": b64},          # pixel mask, crop space
                   "latent_mask": {"shape": [s, s], "bits": b64}}],
      "original_metadata": b64 | null,   # input EXIF/XMP/ICC..., sealed under the key
      "digest": hex,                     # SHA-256 of the canonical record (corruption)
      "mac": b64 | null                  # HMAC under the key (tampering); null if deniable
    }

Masks are bit-packed then zlib-compressed. The same JSON is what ``faceveil inspect
--export`` and ``anonymize --sidecar`` write, so files whose PNG chunk was lost (a JPEG
re-encode) stay recoverable.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import MetadataError

FORMAT = "faceveil"
VERSION = 1
CHUNK_KEYWORD = "faceveil"
_REQUIRED = ("format", "version", "model", "sampler", "key", "image", "faces", "digest")
_MAX_CHUNK = 256 * 1024 * 1024  # Pillow refuses text chunks over 1 MB by default


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str, what: str = "field") -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, AttributeError):
        raise MetadataError(f"faceveil metadata is corrupt ({what} is not valid base64)") from None


def pack_mask(mask: np.ndarray) -> dict:
    """A boolean 2-D mask as {"shape", "bits"} (bit-packed, zlib, base64)."""
    mask = np.asarray(mask, dtype=bool)
    return {"shape": list(mask.shape), "bits": b64e(zlib.compress(np.packbits(mask).tobytes(), 9))}


def unpack_mask(record: dict) -> np.ndarray:
    try:
        shape = tuple(int(n) for n in record["shape"])
        bits = np.frombuffer(zlib.decompress(b64d(record["bits"], "mask")), dtype=np.uint8)
        n = int(np.prod(shape))
        if len(shape) != 2 or bits.size * 8 < n:
            raise ValueError
        return np.unpackbits(bits)[:n].reshape(shape).astype(bool)
    except (KeyError, TypeError, ValueError, zlib.error):
        raise MetadataError("faceveil metadata is corrupt (a face mask is unreadable)") from None


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


def validate(record: object) -> dict:
    """Check a record's shape, version and digest; raise :class:`MetadataError` if bad."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MetadataError("this is not faceveil metadata")
    version = record.get("version")
    if version != VERSION:
        raise MetadataError(
            f"faceveil metadata version {version!r} is not supported by this faceveil "
            f"(it reads version {VERSION}); use the faceveil release that made the file"
        )
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise MetadataError(f"faceveil metadata is incomplete (missing {', '.join(missing)})")
    if hashlib.sha256(canonical_bytes(record)).hexdigest() != record["digest"]:
        raise MetadataError("faceveil metadata is corrupt or was modified (digest mismatch)")
    if not isinstance(record["faces"], list) or not record["faces"]:
        raise MetadataError("faceveil metadata lists no faces")
    return record


def dumps(record: dict) -> str:
    return json.dumps(record, indent=2, sort_keys=True)


def loads(text: str | bytes) -> dict:
    try:
        record = json.loads(text)
    except (ValueError, UnicodeDecodeError):
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
        return loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise MetadataError(f"metadata file {str(path)!r} not found") from None
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
            "the image has no faceveil metadata (was it re-encoded?); "
            "pass the exported metadata with --meta META.json"
        )
    raise MetadataError("no faceveil metadata given for this image")


def allow_large_chunks() -> None:
    """Let Pillow read faceveil chunks larger than its 1 MB default."""
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, _MAX_CHUNK)


def record_from_png_bytes(data: bytes) -> dict | None:
    """Convenience for tests and tools: the record inside PNG bytes."""
    allow_large_chunks()
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return read_png_record(getattr(img, "text", {}))
