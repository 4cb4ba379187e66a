"""The only digest, MAC and AEAD code of the file format: storing, checking and opening.

**Stored bytes.** Format 3 (and video clip records version 2) keep a record's body as
JSON text inside an envelope, and the digest (SHA-256, against corruption) and the MAC
(HMAC-SHA256 under a key derived from the file key, against tampering) cover exactly
those bytes: a reader in any language takes the ``record`` string of the envelope,
encodes it as UTF-8, and checks both, without re-serializing anything::

    {"format": "faceveil", "version": 3, "record": "<body JSON>", "digest": hex,
     "mac": b64 | null}

Formats 1 and 2 stored the body itself, with ``digest`` and ``mac`` computed over its
canonical re-serialization (sorted keys, no spaces); they are still read and verified.

**Faces.** Each face's geometry (crop transform, masks, residual, noise radius) is
sealed with ChaCha20-Poly1305 under the face's key (:meth:`faceveil.keys.FaceKey.seal`),
bound to the file salt and the face's public fields; its original pixels (``lossless``)
likewise. Format 3 binds them as bytes (``salt || nonce || box || crop size``, big-endian
32-bit integers), formats 2 as canonical JSON.

**Opening.** :func:`open` is the one way to a record's faces: it resolves the key,
checks the key check and the MAC, and unseals. A record without key check and MAC
(``--deniable``) is refused there; :func:`open_unauthenticated` is the separate, named
door for such files, and it still verifies any record that can be verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from typing import Protocol

from ..errors import MetadataError, WrongKeyError
from ..keys import FaceKey, SecretKey
from . import records, wrapping
from .fields import MAX_SEALED, as_dict, b64d, b64e, corrupt, inflate, pack_mask, pack_residual
from .records import FaceData, Opened, Record

SEAL_FACE = "face"
SEAL_LOSSLESS = "lossless"
SEAL_METADATA = "original-metadata"
ENVELOPE_VERSIONS = {records.FORMAT: 3, "faceveil-video": 2}  # first enveloped version


class Resolver(Protocol):
    """A key that becomes a :class:`SecretKey` with a file's key parameters."""

    def resolve(self, params: dict) -> SecretKey: ...


# ---------------------------------------------------------------------------
# Stored bytes, digest, MAC
# ---------------------------------------------------------------------------


def canonical_bytes(record: dict) -> bytes:
    """Formats 1 and 2: what the digest and MAC cover, every field but those two as
    canonical JSON."""
    body = {k: v for k, v in record.items() if k not in ("digest", "mac")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def body_text(body: dict) -> str:
    """The JSON text a format-3 body is stored as."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def enveloped(obj: dict) -> bool:
    """Whether a stored record is an envelope (format 3, clip records version 2)."""
    first = ENVELOPE_VERSIONS.get(obj.get("format"))
    return first is not None and type(obj.get("version")) is int and obj["version"] >= first


def unwrap(obj: object) -> tuple[dict, bytes, str, bytes | None]:
    """``(body, stored bytes, digest, mac)`` of a stored record, its digest checked.

    Raises:
        MetadataError: not a record, or corrupt (the digest does not match).
    """
    if not isinstance(obj, dict):
        raise MetadataError("this is not faceveil metadata")
    digest = obj.get("digest")
    if not isinstance(digest, str):
        raise MetadataError("faceveil metadata is incomplete (missing digest)")
    if enveloped(obj):
        text = obj.get("record")
        if not isinstance(text, str):
            raise corrupt("the record text is missing")
        stored = text.encode("utf-8")
        if not hmac.compare_digest(_digest(stored), digest):
            raise MetadataError("faceveil metadata is corrupt or was modified (digest mismatch)")
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise corrupt("the record text is not valid JSON") from None
        if not isinstance(body, dict) or (body.get("format"), body.get("version")) != (
                obj.get("format"), obj.get("version")):
            raise corrupt("the envelope and its record disagree on format or version")
    else:
        stored = canonical_bytes(obj)
        if not hmac.compare_digest(_digest(stored), digest):
            raise MetadataError("faceveil metadata is corrupt or was modified (digest mismatch)")
        body = {k: v for k, v in obj.items() if k not in ("digest", "mac")}
    mac = obj.get("mac")
    return body, stored, digest, None if mac is None else b64d(mac, "MAC", 64)


def load(obj: object) -> Record:
    """A stored photo (or frame) record, digest and shape checked, before the key."""
    if isinstance(obj, dict) and obj.get("format") == records.FORMAT:
        records.check_version(obj.get("version"))
    elif not isinstance(obj, dict) or obj.get("format") != records.FORMAT:
        raise MetadataError("this is not faceveil metadata")
    body, stored, digest, mac = unwrap(obj)
    return records.from_body(body, stored=stored, digest=digest, mac=mac)


def wire(record: Record) -> dict:
    """The stored form of a record (what a PNG chunk, a sidecar or a clip holds)."""
    mac = None if record.mac is None else b64e(record.mac)
    if record.version >= ENVELOPE_VERSIONS[record.body["format"]]:
        return {"format": record.body["format"], "version": record.version,
                "record": record.stored.decode("utf-8"), "digest": record.digest, "mac": mac}
    return {**record.body, "digest": record.digest, "mac": mac}


def dumps(record: Record) -> str:
    """The stored form as JSON text (sidecars, ``inspect --export``, clip packets)."""
    return json.dumps(wire(record), sort_keys=True, separators=(",", ":"))


def stored_body(body: dict, secret: SecretKey | None) -> tuple[bytes, str, bytes | None]:
    """The stored bytes of a new (enveloped) body, their digest and their MAC (None:
    deniable, no MAC)."""
    stored = body_text(body).encode("utf-8")
    return stored, _digest(stored), None if secret is None else secret.mac(stored)


def seal(body: dict, secret: SecretKey | None) -> Record:
    """A new format-3 photo record from its body; ``secret`` None: deniable (no MAC)."""
    stored, digest, mac = stored_body(body, secret)
    return records.from_body(body, stored=stored, digest=digest, mac=mac)


def verify(record_key: dict | records.KeyInfo, stored: bytes, mac: bytes | None,
           secret: SecretKey, what: str = "this file") -> None:
    """Check the key check and the MAC of a stored record.

    Raises:
        WrongKeyError: the key is not the one the record was made with.
        MetadataError: no key check or MAC, or the MAC does not match (modified).
    """
    check = record_key.check if isinstance(record_key, records.KeyInfo) else record_key
    if check is None or mac is None:
        raise MetadataError(f"{what} carries no key check or MAC; refusing it")
    if not secret.matches(check):
        raise WrongKeyError(f"wrong key: {what} was anonymized with a different key")
    if not hmac.compare_digest(mac, secret.mac(stored)):
        raise MetadataError("faceveil metadata was modified after anonymization "
                            "(MAC mismatch)")


# ---------------------------------------------------------------------------
# Faces and metadata: sealing
# ---------------------------------------------------------------------------


def _associated(record_version: int, salt: bytes, face: records.PublicFace | dict) -> bytes:
    """What a face's sealed data is bound to: the file salt and its public fields."""
    if isinstance(face, dict):
        face = records.PublicFace(tuple(face["box"]), face["crop_size"], b64d(face["nonce"]))
    if record_version >= 3:
        return (b"faceveil/v3/face" + salt + face.nonce
                + struct.pack(">4iI", *face.box, face.crop_size))
    return salt + json.dumps(face.public, sort_keys=True, separators=(",", ":")).encode()


def geometry(f: FaceData, residual: dict | None) -> dict:
    """A face's geometry as JSON (sealed, or in clear in deniable records)."""
    out = {"transform": [[round(float(v), 10) for v in row] for row in f.transform],
           "source": f.source, "mask": pack_mask(f.mask),
           "latent_mask": pack_mask(f.latent_mask), "residual": residual}
    if f.photo_mask is not None:
        out["photo_mask"] = pack_mask(f.photo_mask)
    return out


def face_entry(f: FaceData, secret: SecretKey, deniable: bool) -> dict:
    """The format-3 record entry of one face. ``f.residual`` must be the quantized
    residual (int16 steps of 1/RESIDUAL_SCALE); in deniable mode it must already be
    cleared wherever it could reveal original pixels."""
    entry: dict = {"box": [int(v) for v in f.box], "crop_size": int(f.crop_size),
                   "nonce": b64e(f.nonce), "window_sha256": f.window_sha256}
    residual = None if f.residual is None else pack_residual(f.residual)
    if deniable:
        if f.lossless is not None or f.radius is not None:
            raise ValueError("deniable records hold nothing that authenticates")
        entry.update(geometry(f, residual))
        return entry
    fk = secret.face(f.nonce)
    associated = _associated(records.VERSION, secret.salt, entry)
    plain = zlib.compress(json.dumps({**geometry(f, residual), "radius": f.radius},
                                     separators=(",", ":")).encode(), 9)
    entry["sealed"] = b64e(fk.seal(SEAL_FACE, plain, associated))
    if f.lossless is not None:
        entry["lossless"] = b64e(fk.seal(SEAL_LOSSLESS, f.lossless, associated))
    return entry


def seal_metadata(secret: SecretKey, metadata: dict[str, bytes]) -> str | None:
    """The input's own metadata (EXIF, XMP, ...), sealed under the file key."""
    if not metadata:
        return None
    blob = json.dumps({k: b64e(v) for k, v in metadata.items()}).encode()
    return b64e(secret.seal(SEAL_METADATA, blob))


def open_metadata(secret: SecretKey, sealed: bytes | None) -> dict[str, bytes]:
    """What :func:`seal_metadata` sealed ({} for None)."""
    if not sealed:
        return {}
    blob = secret.open(SEAL_METADATA, sealed)
    if blob is None:
        raise MetadataError("the encrypted original metadata does not authenticate")
    try:
        return {str(k): b64d(v, "original metadata")
                for k, v in as_dict(json.loads(blob), "original metadata").items()}
    except ValueError:
        raise corrupt("original metadata") from None


# ---------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------


def _open_face(record: Record, i: int, secret: SecretKey) -> FaceData:
    face = record.faces[i]
    if record.version == 1:
        lossless = None
        if face.lossless is not None:
            lossless = secret.open(SEAL_LOSSLESS, face.lossless, nonce=face.nonce)
            if lossless is None:
                raise MetadataError(f"face {i}: the lossless data does not authenticate")
        return records.face_from_payload(face, i, face.clear, None, lossless)
    data = open_face_with(record, i, secret.face(face.nonce))
    if data is None:
        raise MetadataError(f"face {i}: its sealed data does not authenticate (tampered)")
    return data


def open_face_with(record: Record, i: int, fk: FaceKey) -> FaceData | None:
    """Face ``i`` of a record of format 2 or later unsealed with its key material (None:
    its sealed data does not authenticate under it)."""
    face = record.faces[i]
    associated = _associated(record.version, record.key.salt, face)
    plain = fk.open(SEAL_FACE, face.sealed, associated)
    if plain is None:
        return None
    try:
        payload = json.loads(inflate(plain, MAX_SEALED, f"face {i} sealed data"))
    except ValueError:
        raise corrupt(f"face {i} sealed data") from None
    lossless = None
    if face.lossless is not None:
        lossless = fk.open(SEAL_LOSSLESS, face.lossless, associated)
        if lossless is None:
            raise MetadataError(f"face {i}: the lossless data does not authenticate")
    return records.face_from_payload(face, i, as_dict(payload, f"face {i} sealed data"), fk,
                                     lossless)


def open(record: Record, key: Resolver) -> Opened:  # noqa: A001 - the format's own verb
    """Open a record with its key: resolve the key, verify the key check and the MAC,
    unseal every face and the original metadata.

    Raises:
        WrongKeyError: the key is not the file's (or not the kind of key it needs).
        MetadataError: corrupt or tampered record, or one without key check and MAC
            (made with ``--deniable``, or stripped by someone who edited the file: see
            :func:`open_unauthenticated`).
    """
    if not record.authenticated:
        raise MetadataError(
            "this file carries no key check and no MAC: it was made with --deniable, or "
            "someone removed them to switch off tamper protection. Its metadata cannot be "
            "authenticated; recover it only if you expect a deniable file "
            "(`recover --deniable`)")
    secret = wrapping.open_file_key(record.key, key)
    verify(record.key, record.stored, record.mac, secret)
    faces = [_open_face(record, i, secret) for i in range(len(record.faces))]
    return Opened(record, secret, faces, True,
                  open_metadata(secret, record.original_metadata))


def open_unauthenticated(record: Record, key: Resolver) -> Opened:
    """The named door for deniable records (no key check, no MAC): nothing in them is
    authenticated, and a wrong key silently yields other faces. A record that can be
    verified is verified (:func:`open`)."""
    if record.authenticated:
        return open(record, key)
    secret = wrapping.open_file_key(record.key, key)
    faces = []
    for i, face in enumerate(record.faces):
        fk = secret.face(face.nonce) if record.version >= 2 else None
        faces.append(records.face_from_payload(face, i, face.clear, fk, None))
    return Opened(record, secret, faces, False, {})
