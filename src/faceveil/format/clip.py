"""A video's records: one photo record per frame with faces, then one clip record.

Each frame record is an ordinary photo record (:mod:`.records`) with one more field,
covered by its MAC::

    "video": {"frame": N, "pts": P}     # frame number (0-based, decode order) and time

After the last frame comes the clip record (versions 2 and 3 are stored in an envelope,
as a format-3 photo record: the digest and MAC cover its stored text)::

    {"format": "faceveil-video", "version": 3, "created_by": ...,
     "key":  {"type", "salt", "kdf", "check", "wrapped", "recipients"},  # as in the frames
     "clip": {"frames": N, "records": R, "faces": F, "tracks": T, "width": W,
              "height": H, "rotation": 0|90|180|270, "codec": "ffv1"|"h264",
              "time_base": [num, den]},
     "chain": hex,    # SHA-256 chain over (frame number, digest) of every frame record
     "original_metadata": b64 | null}   # the input's container and stream tags, sealed

The chain, covered by the clip record's MAC, ties the frame records to their frames and
to each other: a record dropped, added, reordered or taken from another clip is refused,
as is a record without key check and MAC (video is never deniable). So checking the clip
record's MAC and the chain authenticates every frame record before any frame is decoded
(:func:`scan`, :func:`verify_clip`); each frame record's own MAC is then checked once,
when it is opened (:func:`open_frames`).

Where the records live in a container (a subtitle or data stream of the clip, or a
sidecar) is :mod:`faceveil.video.io`'s business; this module sees only their bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .. import __version__
from ..errors import InputError, MetadataError
from ..keys import KeySource, SecretKey
from . import auth, wrapping
from .fields import MAX_CHUNK, MAX_FACES, MAX_SIDE, as_int, b64d, b64e
from .records import KeyInfo, Opened, Record

CLIP_FORMAT = "faceveil-video"
CLIP_VERSION = 3
READABLE_CLIP_VERSIONS = (1, 2, 3)
CODECS = ("ffv1", "h264")
MAX_FRAMES = 1 << 31


def _corrupt(what: str) -> MetadataError:
    return MetadataError(f"the clip's faceveil records are corrupt ({what})")


@dataclass(frozen=True)
class ClipRecord:
    """The clip record, parsed and shape-checked (its digest checked)."""

    version: int
    key: KeyInfo
    clip: dict
    chain: str
    original_metadata: bytes | None
    body: dict
    stored: bytes
    digest: str
    mac: bytes | None

    def public(self) -> dict:
        return {**self.body, "digest": self.digest,
                "mac": None if self.mac is None else b64e(self.mac)}


def chain_start(salt: bytes) -> bytes:
    return hashlib.sha256(b"faceveil-video/v1/chain" + salt).digest()


def chain_next(chain: bytes, record: Record) -> bytes:
    frame = int(record.video["frame"])
    return hashlib.sha256(chain + frame.to_bytes(8, "big") + bytes.fromhex(record.digest)).digest()


def clip_record(key: KeyInfo, secret: SecretKey, clip: dict, chain: bytes,
                metadata: dict[str, bytes]) -> ClipRecord:
    """A new clip record (version 3: its key information as format 4's, the file key
    wrapped), with its MAC."""
    body = {"format": CLIP_FORMAT, "version": CLIP_VERSION,
            "created_by": f"faceveil {__version__}", "key": key.to_json(), "clip": clip,
            "chain": chain.hex(), "original_metadata": auth.seal_metadata(secret, metadata)}
    stored, digest, mac = auth.stored_body(body, secret)
    return _clip_from_body(body, stored, digest, mac)


def _clip_from_body(body: dict, stored: bytes, digest: str, mac: bytes | None) -> ClipRecord:
    version = body.get("version")
    if version not in READABLE_CLIP_VERSIONS:
        raise MetadataError(f"faceveil video records version {version!r} are not supported "
                            "by this faceveil; use the release that made them")
    for k in ("key", "clip", "chain"):
        if k not in body:
            raise _corrupt(f"the clip record lacks {k}")
    clip = body["clip"]
    if not isinstance(clip, dict):
        raise _corrupt("clip")
    for k in ("frames", "records", "faces", "tracks"):
        as_int(clip, k, 0, MAX_FRAMES * MAX_FACES, "clip")
    as_int(clip, "width", 1, MAX_SIDE, "clip")
    as_int(clip, "height", 1, MAX_SIDE, "clip")
    if clip.get("rotation") not in (0, 90, 180, 270) or clip.get("codec") not in CODECS:
        raise _corrupt("clip rotation or codec")
    if not isinstance(body["chain"], str) or len(body["chain"]) != 64:
        raise _corrupt("chain")
    key = KeyInfo.from_json(body["key"], 4 if version >= 3 else 3)
    if key.check is None or mac is None:
        raise MetadataError("the clip's faceveil records carry no key check or MAC "
                            "(removed to switch off tamper protection?); refusing them")
    original = body.get("original_metadata")
    return ClipRecord(int(version), key, clip, body["chain"],
                      None if original is None else b64d(original, "original metadata"),
                      body, stored, digest, mac)


def parse(data: bytes | str) -> Record | ClipRecord:
    """One stored record of a clip, digest and shape checked (frame or clip record)."""
    if len(data) > MAX_CHUNK:
        raise _corrupt("a record is too large")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _corrupt("a record is not valid JSON") from None
    if isinstance(obj, dict) and obj.get("format") == CLIP_FORMAT:
        return _clip_from_body(*auth.unwrap(obj))
    record = auth.load(obj)
    if record.video is None:
        raise _corrupt("a frame record has no video field")
    if record.key.check is None:
        raise MetadataError("a frame record of the clip carries no key check or MAC "
                            "(video records are never deniable); refusing it")
    return record


class ClipKey:
    """A clip's key opened once (a passphrase stretched, a file key unwrapped once, not
    once per frame) for its key information; refuses the frame records of another
    clip."""

    def __init__(self, key, info: KeyInfo) -> None:
        self.info = info
        self.secret = wrapping.open_file_key(info, key)

    def open_file_key(self, info: KeyInfo) -> SecretKey:
        """The clip's key, for a frame record whose key information is the clip's."""
        mine = self.info
        if (info.type, info.salt, info.kdf, info.wrapped) != (
                mine.type, mine.salt, mine.kdf, mine.wrapped):
            raise MetadataError("the clip's faceveil records mix several clips (their key "
                                "salts differ)")
        return self.secret


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found: the clip record and, in order, every frame record's
    public part (frame, pts, boxes and nonces)."""

    clip: ClipRecord
    frames: list[dict]


def _walk(raw: Iterable[bytes | str]) -> Iterator[Record | ClipRecord]:
    """Every record in order, checking order, the one salt and the chain."""
    chain = salt = clip = None
    last, count = -1, 0
    for data in raw:
        if clip is not None:
            raise _corrupt("records follow the clip record")
        record = parse(data)
        if salt is None:
            salt = record.key.salt
            chain = chain_start(salt)
        elif record.key.salt != salt:
            raise MetadataError("the clip's faceveil records mix several clips")
        if isinstance(record, ClipRecord):
            if record.chain != chain.hex() or record.clip["records"] != count:
                raise MetadataError("the clip's faceveil records were modified: a frame "
                                    "record was removed, added or reordered (chain "
                                    "mismatch)")
            clip = record
            yield record
            continue
        frame = record.video["frame"]
        if frame <= last:
            raise MetadataError("the clip's faceveil records are out of order (modified?)")
        last, count = frame, count + 1
        chain = chain_next(chain, record)
        yield record
    if clip is None:
        raise MetadataError("the clip's faceveil records are incomplete (the clip record "
                            "at their end is missing: was the file cut short?)")


def scan(raw: Iterable[bytes | str]) -> Scan:
    """Check every record of a clip without the key (digests, order, one salt, chain)
    and return the clip record with the public part of each frame record."""
    frames = []
    clip = None
    for record in _walk(raw):
        if isinstance(record, ClipRecord):
            clip = record
        else:
            frames.append({"frame": record.video["frame"], "pts": record.video["pts"],
                           "faces": [{"box": list(f.box), "nonce": b64e(f.nonce)}
                                     for f in record.faces]})
    return Scan(clip, frames)


def verify_clip(clip: ClipRecord, key: KeySource) -> ClipKey:
    """Resolve the key once for the clip and check the clip record's key check and MAC,
    which (with the chain :func:`scan` checked) authenticates every frame record.

    Raises:
        WrongKeyError: the key is not the clip's.
        MetadataError: the clip record was modified.
    """
    ck = ClipKey(key, clip.key)
    auth.verify(clip.key, clip.stored, clip.mac, ck.secret, "this clip")
    return ck


def open_frames(raw: Iterable[bytes | str], key: ClipKey) -> Iterator[Opened | ClipRecord]:
    """The clip's records in order, each frame record opened with the clip's key (its
    key check and MAC checked once, its faces unsealed), then the clip record."""
    for record in _walk(raw):
        yield record if isinstance(record, ClipRecord) else auth.open(record, key)


def rewrap(raw: Iterable[bytes | str], key, new_key: Callable[[KeyInfo, SecretKey], KeyInfo]
           ) -> list[bytes]:
    """A clip's records with its file key wrapped anew: every record verified with
    ``key`` first, then each frame record and the clip record stored again with the key
    information ``new_key(info, secret)`` gives, their MACs made again under the same
    file key and the chain recomputed. Frames and faces do not change.

    Raises:
        InputError: a clip older than record version 3 (its frames use the key itself).
    """
    raw = list(raw)
    scanned = scan(raw)
    if scanned.clip.version < 3:
        raise InputError(f"this clip's records are version {scanned.clip.version}: only "
                         "version 3 clips can be re-wrapped (recover it and anonymize it "
                         "again)")
    ck = verify_clip(scanned.clip, key)
    info = new_key(scanned.clip.key, ck.secret).to_json()
    out, chain = [], chain_start(scanned.clip.key.salt)
    for opened in open_frames(raw, ck):  # each frame record's MAC and faces verified
        if isinstance(opened, ClipRecord):
            body = {**opened.body, "key": info, "chain": chain.hex()}
            stored, digest, mac = auth.stored_body(body, ck.secret)
            out.append(auth.dumps(_clip_from_body(body, stored, digest, mac)).encode())
        else:
            record = auth.seal({**opened.record.body, "key": info}, ck.secret)
            chain = chain_next(chain, record)
            out.append(auth.dumps(record).encode())
    return out
