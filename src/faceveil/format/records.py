"""Typed records: what an anonymized photo (or video frame) says about itself.

A record holds everything recovery needs except the key. Its public part is only what
is needed before the key is known: where the faces are (boxes, crop sizes), their
nonces, the model and sampler, and the key's salt and KDF. Everything derived from a
face's pixels or landmarks (its crop transform, masks, precision residual, noise
radius, original pixels) is sealed under that face's key by :mod:`.auth`.

The record body (format version 3)::

    {
      "format": "faceveil", "version": 3, "created_by": "faceveil X.Y.Z",
      "model":   {"reference": {...}, "id": ..., "sha256": ..., "image_size": ..., ...},
      "sampler": {"name": "ddim", "eta": 0, "steps": 50, "spacing": "leading",
                  "timesteps": [...], "inversion": ..., "context": ...,
                  "flip": "mixed" | "signs" | "fresh", "norm": "hidden" | "kept",
                  "recovery_methods": [...], "default_recovery": ...},
      "key":     {"type": "file" | "passphrase", "salt": b64, "kdf": {...} | null,
                  "check": b64 | null},        # null check = deniable mode
      "image":   {"width": W, "height": H},
      "faces":   [{"box": [x, y, w, h], "crop_size": S, "nonce": b64,
                   "window_sha256": hex,      # of the published pixels around the face
                   "sealed": b64,             # the face's geometry, under its key
                   "lossless": b64}],         # optional: its original pixels, sealed
      "original_metadata": b64 | null,       # the input's EXIF, XMP, ..., sealed
      "video": {"frame": N, "pts": P}        # only in a video's frame records
    }

Versions 1 and 2 stored this object itself, with ``digest`` and ``mac`` fields computed
over a canonical re-serialization of the rest. Version 3 stores the body's JSON text
inside an envelope, and the digest and MAC cover exactly those stored bytes (see
:mod:`.auth`)::

    {"format": "faceveil", "version": 3, "record": "<the body's JSON text>",
     "digest": hex, "mac": b64 | null}

Deniable records (no key check, no MAC) can hold nothing authenticated: their faces
carry the geometry in clear (``transform``, ``source``, ``mask``, ``latent_mask``,
``residual``), no sealed original and no original metadata, and the noise norm is kept.

This module validates shapes and bounds only; it has no key and does no cryptography.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..choices import CONTEXTS, FLIPS, RECOVERY_METHODS, SPACINGS
from ..choices import METHODS as INVERSIONS
from ..errors import MetadataError
from ..keys import NONCE_BYTES, SALT_BYTES, FaceKey, check_kdf
from .fields import (
    MAX_CROP,
    MAX_FACES,
    MAX_LATENT,
    MAX_SIDE,
    MAX_STEPS,
    as_dict,
    as_int,
    as_str,
    as_transform,
    b64d,
    b64e,
    corrupt,
    unpack_mask,
    unpack_residual,
)

FORMAT = "faceveil"
VERSION = 4
DENIABLE_VERSION = 3  # deniable records keep format 3: a wrapped key would authenticate
READABLE_VERSIONS = (1, 2, 3, 4)
MAX_RECIPIENTS = 256
_REQUIRED = ("format", "version", "model", "sampler", "key", "image", "faces")


# ---------------------------------------------------------------------------
# Parts of a record
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampler:
    """How the faces were made: the DDIM chain, the inversion, the key operation, and
    which recovery methods the file supports."""

    steps: int
    spacing: str
    timesteps: tuple[int, ...]
    inversion: str = "plain"
    context: str = "own"
    flip: str = "signs"
    norm: str = "kept"
    recovery_methods: tuple[str, ...] = ("plain",)
    default_recovery: str = "plain"
    eta: float = 0.0
    harmonize: bool = False  # the new face's colour matched to its surroundings (format 3)

    def to_json(self) -> dict:
        return {"name": "ddim", "eta": self.eta, "steps": self.steps, "spacing": self.spacing,
                "timesteps": list(self.timesteps), "inversion": self.inversion,
                "context": self.context, "flip": self.flip, "norm": self.norm,
                "recovery_methods": list(self.recovery_methods),
                "default_recovery": self.default_recovery, "harmonize": self.harmonize}

    @classmethod
    def from_json(cls, value: object, version: int) -> Sampler:
        d = as_dict(value, "sampler")
        steps = as_int(d, "steps", 1, MAX_STEPS, "sampler")
        spacing = as_str(d, "spacing", "sampler", SPACINGS)
        timesteps = d.get("timesteps")
        if (not isinstance(timesteps, list) or len(timesteps) != steps
                or not all(type(t) is int and 0 <= t < 100_000 for t in timesteps)):
            raise corrupt("sampler.timesteps")
        inversion = as_str(d, "inversion", "sampler", INVERSIONS, optional=True) or "plain"
        context = as_str(d, "context", "sampler", CONTEXTS, optional=True) or "own"
        if version >= 2:
            flip = as_str(d, "flip", "sampler", FLIPS if version >= 3 else ("mixed", "signs"))
            norm = as_str(d, "norm", "sampler",
                          ("hidden", "kept", "none") if version >= 3 else ("hidden", "kept"))
        else:
            flip, norm = "signs", "kept"
        eta = d.get("eta", 0)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise corrupt("sampler.eta")
        methods = d.get("recovery_methods", ["plain"])
        if not isinstance(methods, list) or not methods or not all(
                m in RECOVERY_METHODS for m in methods):
            raise corrupt("sampler.recovery_methods")
        default = as_str(d, "default_recovery", "sampler", RECOVERY_METHODS,
                         optional=True) or "plain"
        harmonize = d.get("harmonize", False)
        if not isinstance(harmonize, bool):
            raise corrupt("sampler.harmonize")
        if (flip == "fresh" or eta or harmonize) and methods != ["lossless"]:
            raise corrupt("sampler: fresh, stochastic or harmonized faces recover only from "
                          "their sealed originals")
        return cls(steps, spacing, tuple(timesteps), inversion, context, flip, norm,
                   tuple(methods), default, float(eta), harmonize)


@dataclass(frozen=True)
class KeyInfo:
    """The public key parameters: kind, salt, KDF and (unless deniable) the key check.

    Format 4 adds ``wrapped``, the file key wrapped for its holders (sealed under a key
    file or passphrase, or an age file to ``recipients``, the public keys of kind
    ``"age"``): see :mod:`faceveil.format.wrapping`."""

    type: str
    salt: bytes
    kdf: dict | None = None
    check: bytes | None = None
    wrapped: bytes | None = None
    recipients: tuple[str, ...] = ()

    def params(self) -> dict:
        """What :meth:`faceveil.keys.KeySource.resolve` takes."""
        return {"type": self.type, "salt": self.salt, "kdf": self.kdf}

    def to_json(self) -> dict:
        out = {"type": self.type, "salt": b64e(self.salt), "kdf": self.kdf,
               "check": None if self.check is None else b64e(self.check)}
        if self.wrapped is not None:
            out["wrapped"] = b64e(self.wrapped)
            if self.type == "age":
                out["recipients"] = list(self.recipients)
        return out

    @classmethod
    def from_json(cls, value: object, version: int = 3) -> KeyInfo:
        d = as_dict(value, "key")
        kind = as_str(d, "type", "key", ("file", "passphrase", "age") if version >= 4
                      else ("file", "passphrase"))
        salt = b64d(d.get("salt"), "key salt", 64)
        if len(salt) != SALT_BYTES:
            raise corrupt(f"the key salt must be {SALT_BYTES} bytes")
        kdf = d.get("kdf")
        if kind == "passphrase":
            check_kdf(kdf)
        elif kdf is not None:
            raise corrupt("a key-file record has KDF parameters")
        check = None if d.get("check") is None else b64d(d["check"], "key check", 64)
        if version < 4:
            return cls(kind, salt, kdf, check)
        if check is None:
            raise MetadataError("faceveil metadata was modified: the key check of a format 4 "
                                "record was removed (an attempt to switch off tamper "
                                "protection)")
        wrapped = b64d(d.get("wrapped"), "wrapped file key", 1 << 20)
        recipients = d.get("recipients", []) if kind == "age" else []
        if (not isinstance(recipients, list) or len(recipients) > MAX_RECIPIENTS
                or (kind == "age" and not recipients)
                or not all(isinstance(r, str) and 0 < len(r) <= 2048 for r in recipients)):
            raise corrupt("key recipients")
        return cls(kind, salt, kdf, check, wrapped, tuple(recipients))


@dataclass(frozen=True)
class PublicFace:
    """One face as the record shows it before the key is known.

    ``sealed`` (formats 2 and 3) is the face's geometry under its key, ``lossless`` its
    sealed original pixels (format 1: ``{"data": b64}`` sealed under the file key);
    ``clear`` holds the geometry fields in clear (format 1, and deniable records).
    """

    box: tuple[int, int, int, int]
    crop_size: int
    nonce: bytes
    window_sha256: str | None = None
    sealed: bytes | None = None
    lossless: bytes | None = None
    clear: dict | None = None

    @property
    def public(self) -> dict:
        """The fields a face's sealed data is bound to."""
        return {"box": list(self.box), "crop_size": self.crop_size, "nonce": b64e(self.nonce)}


@dataclass(frozen=True)
class Record:
    """A parsed, shape-checked record (version 1 to 4).

    ``body`` is the record as JSON (what ``faceveil inspect`` prints); ``stored`` the
    bytes its ``digest`` and ``mac`` cover (format 3: the body's JSON text exactly as
    stored; formats 1 and 2: its canonical re-serialization). Made by
    :func:`faceveil.format.auth.load` (read) or :func:`faceveil.format.auth.seal`
    (written), which check and compute the digest and MAC.
    """

    version: int
    model: dict
    sampler: Sampler
    key: KeyInfo
    width: int
    height: int
    faces: tuple[PublicFace, ...]
    body: dict
    stored: bytes
    digest: str
    mac: bytes | None
    original_metadata: bytes | None = None
    created_by: str | None = None
    video: dict | None = None

    @property
    def authenticated(self) -> bool:
        """Whether the record carries a key check and a MAC (not deniable)."""
        return self.key.check is not None

    def public(self) -> dict:
        """The record as one JSON document (nothing secret in it)."""
        out = dict(self.body)
        out.update(digest=self.digest, mac=None if self.mac is None else b64e(self.mac))
        return out


@dataclass
class FaceData:
    """Everything a record holds about one face, in usable form (what anonymization
    writes, what the key holder reads back).

    ``mask`` is the hard pixel mask in crop space, ``latent_mask`` the latent one,
    ``photo_mask`` the user's ``--mask`` in photo space (None without one: then recovery
    may change every pixel the face's mask reaches), ``residual`` the precision residual
    (anonymization: int16 steps of 1/RESIDUAL_SCALE; read back: float pixels; None: not
    stored), ``radius`` the original norm of the masked noise (None: the norm was kept),
    ``lossless`` the original pixels' PNG (None: not stored), ``key`` the face's key
    material (None for version 1 files, whose signs come from
    :meth:`~faceveil.keys.SecretKey.signs`).
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
class Opened:
    """A record opened with its key: verified (or, deniable, at least applied).

    ``authenticated``: the key check and MAC verified, so every field is the one
    anonymization wrote. ``metadata``: the input's own metadata, restored.
    """

    record: Record
    secret: Any  # faceveil.keys.SecretKey
    faces: list[FaceData]
    authenticated: bool
    metadata: dict[str, bytes] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def sampler(self) -> Sampler:
        return self.record.sampler


# ---------------------------------------------------------------------------
# Validation of a body (before the key is known)
# ---------------------------------------------------------------------------


def _latent_shape_ok(d: object) -> bool:
    shape = d.get("shape") if isinstance(d, dict) else None
    return isinstance(shape, list) and len(shape) == 2 and all(
        type(n) is int and 1 <= n <= MAX_LATENT for n in shape)


def _face(face: object, i: int, version: int, deniable: bool) -> PublicFace:
    what = f"face {i}"
    f = as_dict(face, what)
    box = f.get("box")
    if (not isinstance(box, list) or len(box) != 4
            or not all(type(v) is int and abs(v) <= MAX_SIDE for v in box)):
        raise corrupt(f"{what} box")
    crop = as_int(f, "crop_size", 1, MAX_CROP, what)
    nonce = b64d(f.get("nonce"), f"{what} nonce", 64)
    if len(nonce) != NONCE_BYTES:
        raise corrupt(f"{what} nonce must be {NONCE_BYTES} bytes")
    if version == 1 or deniable:  # geometry in clear
        as_transform(f.get("transform"), what)
        unpack_mask(f.get("mask"), crop, f"{what} mask")
        if not _latent_shape_ok(f.get("latent_mask")):
            raise corrupt(f"{what} latent mask shape")
        residual = f.get("residual") or None
        unpack_residual(residual, crop)
        if f.get("photo_mask") is not None:
            unpack_mask(f["photo_mask"], None, f"{what} photo mask", MAX_SIDE)
        if version == 1:
            window = residual.get("window_sha256") if isinstance(residual, dict) else None
            lossless = f.get("lossless")
            data = (b64d(lossless.get("data"), f"{what} lossless data")
                    if isinstance(lossless, dict) else None)
            return PublicFace(tuple(box), crop, nonce, window, None, data, f)
        return PublicFace(tuple(box), crop, nonce, f.get("window_sha256"), None, None, f)
    sealed = b64d(f.get("sealed"), f"{what} sealed data")
    lossless = b64d(f["lossless"], f"{what} lossless data") if "lossless" in f else None
    sha = f.get("window_sha256")
    if not (isinstance(sha, str) and len(sha) == 64):
        raise corrupt(f"{what} window hash")
    return PublicFace(tuple(box), crop, nonce, sha, sealed, lossless, None)


def check_version(version: object) -> int:
    if version not in READABLE_VERSIONS:
        raise MetadataError(
            f"faceveil metadata version {version!r} is not supported by this faceveil "
            f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); use the "
            "faceveil release that made the file")
    return int(version)


def from_body(body: object, *, stored: bytes, digest: str, mac: bytes | None) -> Record:
    """A :class:`Record` from a parsed body whose digest was checked (:mod:`.auth`).

    Every field read before the key is known is checked here, with limits.
    """
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise MetadataError("this is not faceveil metadata")
    version = check_version(body.get("version"))
    missing = [k for k in _REQUIRED if k not in body]
    if missing:
        raise MetadataError(f"faceveil metadata is incomplete (missing {', '.join(missing)})")
    key = KeyInfo.from_json(body["key"], version)
    deniable = key.check is None
    if deniable != (mac is None):
        raise MetadataError("faceveil metadata was modified (key check and MAC disagree)")
    image = as_dict(body["image"], "image")
    width = as_int(image, "width", 1, MAX_SIDE, "image")
    height = as_int(image, "height", 1, MAX_SIDE, "image")
    sampler = Sampler.from_json(body["sampler"], version)
    model = as_dict(body["model"], "model")
    ref = as_dict(model.get("reference"), "model reference")
    if not ({"preset", "path", "hub"} & set(ref)):
        raise corrupt("model reference")
    for k in ("preset", "path", "hub", "revision"):
        as_str(ref, k, "model reference", optional=True)
    as_str(model, "sha256", "model", optional=True)
    faces = body["faces"]
    if not isinstance(faces, list) or not faces:
        raise MetadataError("faceveil metadata lists no faces")
    if len(faces) > MAX_FACES:
        raise corrupt(f"more than {MAX_FACES} faces")
    if version >= 2 and deniable and any(isinstance(f, dict) and "sealed" in f for f in faces):
        raise MetadataError(
            "faceveil metadata was modified: the key check and MAC of a record with sealed "
            "faces were removed (an attempt to switch off tamper protection)")
    public = tuple(_face(f, i, version, deniable) for i, f in enumerate(faces))
    if len({f.nonce for f in public}) != len(public):
        raise corrupt("two faces share a nonce")
    original = body.get("original_metadata")
    original = None if original is None else b64d(original, "original metadata")
    video = body.get("video")
    if video is not None:
        v = as_dict(video, "video")
        as_int(v, "frame", 0, 1 << 31, "video")
        if type(v.get("pts")) is not int:
            raise corrupt("video.pts")
    created_by = body.get("created_by")
    return Record(version, model, sampler, key, width, height, public, body, stored, digest,
                  mac, original, created_by if isinstance(created_by, str) else None, video)


def face_from_payload(face: PublicFace, i: int, payload: dict, fk: FaceKey | None,
                      lossless: bytes | None) -> FaceData:
    """A face's usable data from its (unsealed or clear) geometry ``payload``."""
    what = f"face {i}"
    crop = face.crop_size
    latent = unpack_mask(payload.get("latent_mask"), None, f"{what} latent mask")
    if latent.shape[0] != latent.shape[1] or not latent.any():
        raise corrupt(f"{what} latent mask")
    radius = payload.get("radius")
    if radius is not None and not (isinstance(radius, (int, float)) and
                                   math.isfinite(radius) and 0 < radius < 1e6):
        raise corrupt(f"{what} radius")
    photo_mask = payload.get("photo_mask")
    return FaceData(
        box=face.box, crop_size=crop, nonce=face.nonce,
        transform=as_transform(payload.get("transform"), what),
        mask=unpack_mask(payload.get("mask"), crop, f"{what} mask"),
        latent_mask=latent,
        source=str(payload.get("source") or "file")[:64],
        residual=unpack_residual(payload.get("residual"), crop),
        radius=None if radius is None else float(radius),
        window_sha256=face.window_sha256, lossless=lossless, key=fk,
        photo_mask=(None if photo_mask is None else
                    unpack_mask(photo_mask, None, f"{what} photo mask", MAX_SIDE)),
    )
