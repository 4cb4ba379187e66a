"""Where a photo's record lives: one compressed ``iTXt`` chunk, keyword ``faceveil``, in
an ordinary PNG (any viewer shows the picture and ignores the chunk), or a sidecar JSON
file (``anonymize --sidecar``, ``inspect --export``) for files that get re-encoded.

Both hold the record's stored form (:func:`faceveil.format.auth.wire`). Reading needs
neither the model nor torch, so ``faceveil inspect`` starts fast.
"""

from __future__ import annotations

import json
import os

from ..errors import MetadataError
from . import auth
from .fields import MAX_CHUNK
from .records import Record

CHUNK_KEYWORD = "faceveil"


def allow_large_chunks() -> None:
    """Nothing to do any more (kept for callers): faceveil's record chunk is read by
    :func:`faceveil.images.load_image` with its own bound (:data:`MAX_CHUNK`), and Pillow
    keeps its default limits for every other text chunk."""


def loads(text: str | bytes) -> Record:
    """A record from its stored JSON text (a chunk, a sidecar, a clip packet)."""
    if len(text) > MAX_CHUNK:
        raise MetadataError("faceveil metadata is too large")
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MetadataError("faceveil metadata is truncated or not valid JSON") from None
    return auth.load(obj)


def png_text(record: Record) -> dict[str, str]:
    """The PNG text chunks that carry a record (used when encoding the output)."""
    return {CHUNK_KEYWORD: auth.dumps(record)}


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
