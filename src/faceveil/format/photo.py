"""The photo record, built here and nowhere else (a video frame's record is one too):
what :func:`faceveil.pipeline.anonymize.anonymize_jobs` measured becomes a sealed
:class:`~faceveil.format.records.Record` of format 4, or 3 when deniable."""

from __future__ import annotations

from .. import __version__
from ..keys import SecretKey
from . import auth, records
from .records import FaceData, KeyInfo, Record, Sampler


def key_info(params: dict, secret: SecretKey, deniable: bool) -> KeyInfo:
    """The record's key information from the file's key parameters (those of
    :func:`faceveil.format.wrapping.new_file_key` for format 4)."""
    return KeyInfo(params["type"], bytes(params["salt"]), params.get("kdf"),
                   None if deniable else secret.check_value(), params.get("wrapped"),
                   tuple(params.get("recipients", ())))


def photo_record(*, params: dict, secret: SecretKey, model: dict, sampler: Sampler,
                 width: int, height: int, faces: list[FaceData], metadata: dict[str, bytes],
                 deniable: bool, video: dict | None = None) -> Record:
    """A new photo (or frame) record, sealed: format 4 when the key parameters carry a
    wrapped file key, format 3 otherwise (deniable records)."""
    key = key_info(params, secret, deniable)
    body = {
        "format": records.FORMAT,
        "version": records.VERSION if key.wrapped is not None else records.DENIABLE_VERSION,
        "created_by": f"faceveil {__version__}", "model": model,
        "sampler": sampler.to_json(), "key": key.to_json(),
        "image": {"width": int(width), "height": int(height)},
        "faces": [auth.face_entry(f, secret, deniable) for f in faces],
        "original_metadata": None if deniable else auth.seal_metadata(secret, metadata),
    }
    if video is not None:
        body["video"] = {"frame": int(video["frame"]), "pts": int(video["pts"])}
    return auth.seal(body, None if deniable else secret)
