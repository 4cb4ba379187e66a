"""A clip's public records, without the key (``faceveil inspect``): no torch, no model."""

from __future__ import annotations

import os
from pathlib import Path

from .. import media
from ..format import clip
from . import io


def inspect_video(src: str | os.PathLike, meta: str | os.PathLike | None = None,
                  export: str | os.PathLike | None = None, force: bool = False) -> dict:
    """The public part of a clip's records, without the key: the clip record and, per
    frame with faces, its number, time and the boxes and nonces (one nonce per track)
    of its faces. Checks what can be checked without the key (digests, order, chain).
    ``export`` also writes every record to a JSON Lines file for ``recover --meta``."""
    src = Path(src)
    if export is not None:
        media.check_output(export, [src, meta], force)
        with media.Staged([export], replace=force) as staged:
            with open(staged.temps[0], "wb") as out:
                for data in io.raw_records(src, meta):
                    out.write(bytes(data).rstrip(b"\n") + b"\n")
            scanned = clip.scan(io.raw_records(src, meta))
            staged.commit()
    else:
        scanned = clip.scan(io.raw_records(src, meta))
    return {"clip": scanned.clip.public(), "frames": scanned.frames}
