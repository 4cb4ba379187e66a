"""Where a photo's record lives: one compressed ``iTXt`` chunk, keyword ``faceveil``, in
an ordinary PNG (any viewer shows the picture and ignores the chunk), or a sidecar JSON
file (``anonymize --sidecar``, ``inspect --export``) for files that get re-encoded.

Both hold the record's stored form (:func:`faceveil.format.auth.wire`). Reading needs
neither the model nor torch, so ``faceveil inspect`` starts fast.
"""

from __future__ import annotations

import json
import os
import struct
import zlib

from ..errors import MetadataError
from . import auth
from .fields import MAX_CHUNK
from .label import XMP_KEYWORD, xmp_packet
from .records import Record

CHUNK_KEYWORD = "faceveil"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def loads(text: str | bytes) -> Record:
    """A record from its stored JSON text (a chunk, a sidecar, a clip packet)."""
    if len(text) > MAX_CHUNK:
        raise MetadataError("faceveil metadata is too large")
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MetadataError("faceveil metadata is truncated or not valid JSON") from None
    return auth.load(obj)


def png_text(record: Record, label: bool = True) -> dict[str, str]:
    """The PNG text chunks that carry a record (used when encoding the output) and,
    with ``label``, the XMP packet that says the faces are synthetic
    (:mod:`.label`)."""
    text = {CHUNK_KEYWORD: auth.dumps(record)}
    if label:
        text[XMP_KEYWORD] = xmp_packet(record)
    return text


def replace_record(data: bytes, record: Record) -> bytes:
    """The PNG ``data`` with its faceveil chunk replaced by ``record``'s: every other
    chunk (pixels, label, colour profile) is kept byte for byte (``rewrap``).

    Raises:
        MetadataError: not a PNG, or one without exactly one faceveil chunk.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise MetadataError("not a PNG file: only a PNG's faceveil chunk can be rewritten")
    out, at, found = [data[:8]], 8, 0
    while at + 12 <= len(data):
        length = struct.unpack(">I", data[at:at + 4])[0]
        end = at + 12 + length
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        if end > len(data):
            raise MetadataError("the PNG file is truncated")
        if kind == b"iTXt" and body.startswith(CHUNK_KEYWORD.encode() + b"\0"):
            found += 1
            new = (CHUNK_KEYWORD.encode() + b"\0\1\0\0\0"
                   + zlib.compress(auth.dumps(record).encode("utf-8"), 9))
            chunk = b"iTXt" + new
            out.append(struct.pack(">I", len(new)) + chunk
                       + struct.pack(">I", zlib.crc32(chunk)))
        else:
            out.append(data[at:end])
        at = end
    if found != 1:
        raise MetadataError("the PNG holds no faceveil chunk (or several): nothing to "
                            "rewrite")
    return b"".join(out)


def from_text_chunks(text: dict[str, str]) -> Record | None:
    """The faceveil record among a PNG's text chunks, or None when there is none."""
    if CHUNK_KEYWORD not in text:
        return None
    return loads(text[CHUNK_KEYWORD])


def read_sidecar(path: str | os.PathLike) -> Record:
    """The record in a sidecar file (``--sidecar``, ``inspect --export``)."""
    from ..media import reading

    with reading(path, "metadata file", MetadataError) as f:
        data = f.read(MAX_CHUNK + 1)
    if len(data) > MAX_CHUNK:
        raise MetadataError(f"metadata file {str(path)!r} is too large")
    return loads(data)


def sidecar_bytes(record: Record) -> bytes:
    """What a sidecar file holds: the stored record, pretty-printed for people (the MAC
    covers the record text inside it, which no reformatting changes)."""
    return (json.dumps(auth.wire(record), indent=2, sort_keys=True) + "\n").encode()


def read(image: object = None, meta: str | os.PathLike | dict | Record | None = None) -> Record:
    """The record of an anonymized image: from ``meta`` (a record, its stored form or a
    sidecar file) when given, else from the PNG chunk of ``image`` (a path, PNG bytes, or
    a decoded image with a ``text`` dict such as :class:`faceveil.images.LoadedImage`)."""
    if isinstance(meta, Record):
        return meta
    if isinstance(meta, dict):
        return auth.load(meta)
    if meta is not None:
        return read_sidecar(meta)
    if isinstance(image, (str, os.PathLike, bytes)):
        from ..images import load_image

        image = load_image(image)
    text = getattr(image, "text", None)
    if isinstance(text, dict):
        record = from_text_chunks(text)
        if record is not None:
            return record
        raise MetadataError(
            "the image has no faceveil metadata (was it re-encoded?); to recover it, "
            "pass the metadata saved with `anonymize --sidecar` or `inspect --export` "
            "as `recover --meta META.json`")
    raise MetadataError("no faceveil metadata given for this image")


def from_png_bytes(data: bytes) -> Record | None:
    """The record inside PNG bytes (None when it has none); the pixels are not decoded."""
    from ..images import record_text

    text = record_text(data)
    return None if text is None else loads(text)
