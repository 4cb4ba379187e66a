"""Format 4's key information, built and opened in this one place: a random 256-bit
file key ``F`` per file, wrapped for whoever may open the file, and re-wrapped without
touching the pixels.

Wrapping (the record's ``key.wrapped``)::

    key file or passphrase:  ChaCha20-Poly1305 of F under HKDF(K, salt=file salt,
                             info="faceveil/v1/seal/file-key/v4"), K the key file's
                             bytes or Argon2id(passphrase, file salt)
    recipients ("age"):      an age file whose plaintext is F, to every recipient
                             (``age -d -i id.txt`` opens it); ``key.recipients`` lists
                             their public keys, so that a re-wrap can keep them

Everything else derives from ``F`` as formats 2 and 3 derive from the key, through
:class:`faceveil.keys.FileKey`: each face from its own secret, which
:func:`faceveil.format.holders.share_face` hands out.
"""

from __future__ import annotations

import secrets

from ..errors import MetadataError, WrongKeyError
from ..keys import KEY_BYTES, FileKey, KeySource, SecretKey
from ..recipients import Identities, Recipients
from .records import KeyInfo

WRAP_LABEL = "file-key/v4"


def new_file_key(key: KeySource | Recipients, params: dict, *, file_key: bytes | None = None,
                 repeatable: bool = False) -> tuple[FileKey, dict]:
    """A new file key for ``params`` (a salt, and a KDF for a passphrase) and the key
    parameters of its record (``wrapped``, and for recipients their list).

    ``file_key`` fixes it; ``repeatable`` (a fixed salt) derives it from a key file or
    passphrase and the salt, so that a test run repeats."""
    salt = bytes(params["salt"])
    if isinstance(key, Recipients):
        fk = file_key or secrets.token_bytes(KEY_BYTES)
        out = {**params, "type": "age", "kdf": None, "wrapped": key.wrap(fk),
               "recipients": list(key.texts)}
        return FileKey(fk, salt), out
    wrap = key.resolve(params)
    fk = file_key or (wrap.derive("repeatable-file-key") if repeatable
                      else secrets.token_bytes(KEY_BYTES))
    return FileKey(fk, salt), {**params, "wrapped": wrap.seal(WRAP_LABEL, fk)}


def open_file_key(info: KeyInfo, key) -> SecretKey:
    """The key a record's faces derive from: its unwrapped file key (format 4), or the
    key itself resolved with the file's parameters (formats 1 to 3).

    Raises:
        WrongKeyError: not a key, passphrase or identity this file was made for (exit 3).
        MetadataError: the wrapped key is corrupt (exit 4).
    """
    if hasattr(key, "open_file_key"):  # a clip's key, opened once for all its frames
        return key.open_file_key(info)
    if info.wrapped is None:
        return key.resolve(info.params())
    if info.type == "age":
        if not isinstance(key, Identities):
            raise WrongKeyError("this file was anonymized to public-key recipients: give "
                                "an identity (-i ID) of one of them")
        return FileKey(key.unwrap(info.wrapped), info.salt)
    fk = key.resolve(info.params()).open(WRAP_LABEL, info.wrapped)
    if fk is None:
        raise WrongKeyError("wrong key: this file was anonymized with a different key")
    if len(fk) != KEY_BYTES:
        raise MetadataError("faceveil metadata is corrupt (the wrapped file key)")
    return FileKey(fk, info.salt)
