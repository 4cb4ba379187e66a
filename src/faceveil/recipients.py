"""Public-key recipients and their identities, in age's format (``pyrage``: bindings to
rage, the Rust implementation of age). No public-key cryptography is written here: this
module parses recipients and identities, and wraps or unwraps a file key with them.

- :class:`Recipients`: who can open a file (``age1…`` X25519 keys, ``ssh-ed25519`` and
  ``ssh-rsa`` public keys). The anonymizing side holds only these: nothing it keeps can
  recover a face.
- :class:`Identities`: the private side (age identity files as ``age-keygen`` writes
  them, OpenSSH private keys; a passphrase-protected SSH key is decrypted in memory with
  ``cryptography``).
- :func:`new_identity`: a new X25519 identity in ``age-keygen``'s text format.

A wrapped file key is an ordinary age file whose plaintext is the 32-byte key, so
``age -d -i id.txt`` opens it too.
"""

from __future__ import annotations

import datetime
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyrage
from pyrage import ssh, x25519

from .errors import KeyMaterialError, MetadataError, RecipientError, WrongKeyError
from .keys import SALT_BYTES

AGE_MAGIC = b"age-encryption.org/v1\n"
SSH_TYPES = ("ssh-ed25519", "ssh-rsa")
_MAX_FILE = 1 << 20  # a recipients or identity file is a few KB at most
NO_MATCH = "none of the given identities is a recipient of this file"


def parse_recipient(text: str, where: str = "recipient"):
    """A pyrage recipient for one line, and its canonical text (an SSH key's comment,
    which often names a person or a machine, is dropped)."""
    text = text.strip()
    if text.startswith("age1"):
        try:
            return x25519.Recipient.from_str(text), text
        except pyrage.RecipientError as e:
            raise RecipientError(f"{where}: {text[:80]!r} is not a valid age recipient "
                                 f"({e})") from None
    if text.startswith(("ssh-", "ecdsa-", "sk-")):
        parts = text.split()
        if parts[0] not in SSH_TYPES:
            raise RecipientError(f"{where}: SSH key type {parts[0]!r} is not supported by "
                                 f"age; use one of {', '.join(SSH_TYPES)}, or an age1… key")
        canonical = " ".join(parts[:2])
        try:
            return ssh.Recipient.from_str(canonical), canonical
        except pyrage.RecipientError as e:
            raise RecipientError(f"{where}: {canonical[:80]!r} is not a valid SSH public "
                                 f"key ({e})") from None
    raise RecipientError(f"{where}: {text[:80]!r} is not a recipient (an age1… public key, "
                         f"or an SSH public key of type {' or '.join(SSH_TYPES)})")


def _read_text(path: str | os.PathLike, what: str, error: type) -> bytes:
    from .media import reading

    with reading(path, what, error) as f:
        data = f.read(_MAX_FILE + 1)
    if len(data) > _MAX_FILE:
        raise error(f"{what} {str(path)!r} is too large to be one")
    return data


@dataclass(frozen=True)
class Recipients:
    """The public keys a file key is wrapped to (in the order given, without repeats)."""

    texts: tuple[str, ...]

    kind = "age"

    @classmethod
    def parse(cls, strings: Iterable[str] = (), files: Iterable[str | os.PathLike] = ()
              ) -> Recipients:
        """Recipients from ``-r`` strings and ``-R`` files (one per line; ``#`` comments
        and blank lines skipped).

        Raises:
            RecipientError: a malformed recipient or file, named (exit 2).
        """
        texts: list[str] = []
        for s in strings:
            texts.append(parse_recipient(s, "recipient")[1])
        for path in files:
            data = _read_text(path, "recipients file", RecipientError)
            lines = data.decode("utf-8-sig", errors="replace").splitlines()
            found = 0
            for n, line in enumerate(lines, 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    texts.append(parse_recipient(line, f"{str(path)!r} line {n}")[1])
                    found += 1
            if not found:
                raise RecipientError(f"recipients file {str(path)!r} lists no recipient")
        if not texts:
            raise RecipientError("no recipient given")
        return cls(tuple(dict.fromkeys(texts)))

    def wrap(self, file_key: bytes) -> bytes:
        """``file_key`` as an age file to every recipient."""
        return pyrage.encrypt(bytes(file_key), [parse_recipient(t, "recipient")[0]
                                                for t in self.texts])

    def new_params(self, kdf: dict | None = None) -> dict:
        """Fresh per-file key parameters (a random salt; no KDF)."""
        return {"type": "age", "salt": secrets.token_bytes(SALT_BYTES)}

    def resolve(self, params: dict):
        raise KeyMaterialError("public-key recipients (-r, -R) cannot make a --deniable "
                               "file: it needs a key file or a passphrase")

    def __repr__(self) -> str:
        return f"Recipients({len(self.texts)})"


def _ssh_identity(data: bytes, name: str, passphrase: Callable[[str], str] | None):
    """A pyrage SSH identity from an OpenSSH private key, decrypting it in memory first
    when it has a passphrase."""
    try:
        return ssh.Identity.from_buffer(data)
    except pyrage.IdentityError as e:
        if "decrypted" not in str(e):
            raise KeyMaterialError(f"{name} is not a usable SSH private key ({e}); age "
                                   f"supports {', '.join(SSH_TYPES)}") from None
    if passphrase is None:
        raise KeyMaterialError(f"{name} is protected by a passphrase, and none can be asked "
                               "for here (run on a terminal)")
    from cryptography.hazmat.primitives import serialization as ser

    try:
        key = ser.load_ssh_private_key(data, passphrase(name).encode("utf-8"))
    except ValueError:
        raise KeyMaterialError(f"wrong passphrase for {name}") from None
    plain = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH,
                              ser.NoEncryption())
    return ssh.Identity.from_buffer(plain)


@dataclass(frozen=True)
class Identities:
    """Private keys that may open a file key wrapped to :class:`Recipients`."""

    items: tuple
    kind = "age"

    @classmethod
    def read(cls, paths: Iterable[str | os.PathLike],
             passphrase: Callable[[str], str] | None = None) -> Identities:
        """Identities from files: age identity files (``AGE-SECRET-KEY-1…`` lines, as
        ``age-keygen`` and ``faceveil keygen --identity`` write them) or OpenSSH private
        keys (``passphrase(name)`` is asked for an encrypted one)."""
        items = []
        for path in paths:
            name = repr(str(path))
            data = _read_text(path, "identity file", KeyMaterialError)
            items += cls.parse(data, name, passphrase).items
        if not items:
            raise KeyMaterialError("no identity given")
        return cls(tuple(items))

    @classmethod
    def parse(cls, data: bytes, name: str = "the identity file",
              passphrase: Callable[[str], str] | None = None) -> Identities:
        """Identities from one file's contents (e.g. uploaded to the web page)."""
        if b"PRIVATE KEY-----" in data:
            return cls((_ssh_identity(bytes(data), name, passphrase),))
        found = []
        for line in bytes(data).decode("utf-8-sig", errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                found.append(x25519.Identity.from_str(line))
            except pyrage.IdentityError:
                raise KeyMaterialError(f"{name} is not an age identity file or an SSH "
                                       "private key") from None
        if not found:
            raise KeyMaterialError(f"{name} holds no identity")
        return cls(tuple(found))

    def unwrap(self, wrapped: bytes) -> bytes:
        """The file key inside an age file made by :meth:`Recipients.wrap`.

        Raises:
            WrongKeyError: no identity is a recipient (exit 3).
            MetadataError: the age file is corrupt or truncated (exit 4).
        """
        if not bytes(wrapped).startswith(AGE_MAGIC):
            raise MetadataError("faceveil metadata is corrupt (the wrapped file key is not "
                                "an age file)")
        try:
            key = pyrage.decrypt(bytes(wrapped), list(self.items))
        except pyrage.DecryptError as e:
            if "No matching keys" in str(e):
                raise WrongKeyError(NO_MATCH) from None
            raise MetadataError(f"faceveil metadata is corrupt (its age header: {e})") from None
        if len(key) != 32:
            raise MetadataError("faceveil metadata is corrupt (the wrapped file key)")
        return key

    def resolve(self, params: dict):
        raise WrongKeyError("this file was anonymized with a key file or a passphrase, not "
                            "to public-key recipients: give -k or a passphrase, not -i")

    def __repr__(self) -> str:
        return f"Identities({len(self.items)})"


def new_identity() -> tuple[str, str]:
    """A new X25519 identity: its file text (as ``age-keygen`` writes it) and its
    public recipient ``age1…``."""
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    text = (f"# created: {created.isoformat().replace('+00:00', 'Z')}\n"
            f"# public key: {public}\n{identity}\n")
    return text, public
