"""Who holds a format 4 file: disclosing one face (a face key) and re-wrapping the file
key for other holders, both after the whole record was verified with the file's key."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import InputError, WrongKeyError
from ..keys import DEFAULT_KDF, FaceShare, FileKey, KeySource
from ..recipients import Recipients, parse_recipient
from . import auth
from .label import xmp_packet
from .records import KeyInfo, Opened, Record
from .wrapping import WRAP_LABEL


def share_face(record: Record, key, index: int) -> FaceShare:
    """The key of face ``index`` alone (format 4), after checking ``key`` opens the
    whole record (key check, MAC and every face).

    Raises:
        InputError: no such face, or a record older than format 4.
    """
    if record.version < 4:
        raise InputError(f"this file is format {record.version}: only format 4 files "
                         "(faceveil 0.x with per-face keys) can disclose one face")
    if not 0 <= index < len(record.faces):
        raise InputError(f"face {index} is out of range: this file has "
                         f"{len(record.faces)} face(s), numbered from 0")
    opened = auth.open(record, key)
    nonce = record.faces[index].nonce
    return FaceShare(record.key.salt, nonce, index, opened.secret.face_secret(nonce))


def rewrap(record: Record, key, new_key: Callable[[KeyInfo, FileKey], KeyInfo]) -> Record:
    """The same record with its file key wrapped anew, with the key information
    ``new_key(info, file key)`` gives (:func:`new_key_info`). Faces, pixels and
    everything else stay as they are; the MAC is made again under the same file key.

    Raises:
        WrongKeyError: ``key`` does not open the file (exit 3).
        InputError: a record older than format 4, or a change that leaves no holder.
    """
    if record.version < 4:
        raise InputError(f"this file is format {record.version}: only format 4 files can "
                         "be re-wrapped (recover it and anonymize it again)")
    opened = auth.open(record, key)  # the key check, the MAC and every face verified
    new = new_key(record.key, opened.secret)
    return auth.seal({**record.body, "key": new.to_json()}, opened.secret)


def new_key_info(info: KeyInfo, secret: FileKey, *, add: Recipients | None = None,
                 remove: Iterable[str] = (), to_key: KeySource | None = None) -> KeyInfo:
    """The key information of a re-wrapped file (or clip): the same salt, check and file
    key, wrapped to ``to_key``, or to the recipients of ``info`` plus ``add`` minus
    ``remove``."""
    removed = [parse_recipient(r, "--remove-recipient")[1] for r in remove]
    if to_key is not None:
        if add is not None or removed:
            raise InputError("--to-key replaces every recipient: give it without -r, -R or "
                             "--remove-recipient")
        params = {**to_key.new_params(DEFAULT_KDF), "salt": info.salt}
        wrapped = to_key.resolve(params).seal(WRAP_LABEL, secret.file_key())
        return KeyInfo(to_key.kind, info.salt, params.get("kdf"), info.check, wrapped)
    current = list(info.recipients) if info.type == "age" else []
    missing = [r for r in removed if r not in current]
    if missing:
        raise InputError(f"{missing[0][:80]!r} is not a recipient of this file")
    texts = [t for t in current if t not in removed] + (list(add.texts) if add else [])
    if not texts:
        raise InputError("no recipient would be left: give -r, or --to-key")
    target = Recipients(tuple(dict.fromkeys(texts)))
    return KeyInfo("age", info.salt, None, info.check, target.wrap(secret.file_key()),
                   target.texts)


def open_face(record: Record, share: FaceShare) -> Opened:
    """The one face a face key opens, as an :class:`Opened` holding that face alone
    (nothing else of the record is authenticated or decrypted: its MAC and the
    original metadata need the file key).

    Raises:
        WrongKeyError: the face key belongs to another file or face, or was altered.
    """
    if record.version < 4:
        raise WrongKeyError(f"a face key opens a face of a format 4 file; this file is "
                            f"format {record.version}")
    if share.salt != record.key.salt:
        raise WrongKeyError("this face key belongs to another file")
    index = next((i for i, f in enumerate(record.faces) if f.nonce == share.nonce), None)
    if index is None:
        raise WrongKeyError("this face key belongs to another face or file")
    face = auth.open_face_with(record, index, share.face())
    if face is None:
        raise WrongKeyError(f"this face key does not open face {index} of this file "
                            "(altered, or made for another file)")
    # The other faces stay synthetic: the output keeps saying so.
    label = {"xmp": xmp_packet(record).encode()} if len(record.faces) > 1 else {}
    return Opened(record, None, [face], False, label)
