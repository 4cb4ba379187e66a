"""Secret keys: key files, passphrases, and everything derived from them.

Layout, in the spirit of ``cryptography``: the high-level recipes are
:func:`generate_key_file`, :func:`read_key_file`, :class:`KeySource` and
:class:`SecretKey`; the primitives they rest on (HKDF-SHA256, ChaCha20,
ChaCha20-Poly1305, Argon2id) all come from ``cryptography`` and are used in one
place each.

Derivations from the 256-bit master key ``K`` (a key file's bytes, or Argon2id of a
passphrase with the file's salt). Every derived value names its purpose in the HKDF
``info`` string, so no two uses ever share a key::

    signs(nonce)  = ChaCha20(HKDF(K, salt=nonce, info="faceveil/v1/signs"), counter=0)
                    keystream bits, little-endian within each byte, bit 1 -> -1
    check(salt)   = HKDF(K, salt=salt, info="faceveil/v1/key-check")[:16]
    mac key       = HKDF(K, salt=salt, info="faceveil/v1/metadata-mac")
    sealing key   = HKDF(K, salt=salt or nonce, info="faceveil/v1/seal/<label>")

Each face gets its own random nonce, so one leaked (original, anonymized) pair only
reveals the signs of that face; the signs of any other face are an independent
ChaCha20 keystream. The derivation uses no torch or numpy RNG: it is byte-for-byte the
same on every OS, CPU and GPU (pinned by known-answer tests).
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import KeyMaterialError

if TYPE_CHECKING:  # numpy is imported where signs are made: keygen starts without it
    import numpy as np

KEY_BYTES = 32
NONCE_BYTES = 16
SALT_BYTES = 16
CHECK_BYTES = 16
KEY_FILE_HEADER = "faceveil-key-v1"

# Argon2id defaults (RFC 9106 second recommended option: 64 MiB, 3 passes).
DEFAULT_KDF = {"name": "argon2id", "iterations": 3, "lanes": 4, "memory_kib": 65536}


# ---------------------------------------------------------------------------
# Primitives
# ---------------------------------------------------------------------------


def _hkdf(master: bytes, salt: bytes, info: str, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info.encode()).derive(
        master
    )


def _chacha20_keystream(key: bytes, n_bytes: int) -> bytes:
    # Counter and nonce zero: each key is used for exactly one stream.
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return encryptor.update(bytes(n_bytes))


def argon2id(passphrase: str, salt: bytes, params: dict) -> bytes:
    """Stretch a passphrase into a 256-bit key with Argon2id and the given parameters."""
    if params.get("name") != "argon2id":
        raise KeyMaterialError(f"unsupported key derivation function {params.get('name')!r}")
    return Argon2id(
        salt=salt,
        length=KEY_BYTES,
        iterations=int(params["iterations"]),
        lanes=int(params["lanes"]),
        memory_cost=int(params["memory_kib"]),
    ).derive(passphrase.encode("utf-8"))


# ---------------------------------------------------------------------------
# Key files
# ---------------------------------------------------------------------------


def generate_key_file(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write a new random 256-bit key to ``path``, readable by its owner only.

    The file is created with mode 0600 from the start (never world-readable, even
    briefly) and an existing file is refused unless ``overwrite``.
    """
    path = Path(path)
    if not path.parent.exists():
        raise KeyMaterialError(f"folder {str(path.parent)!r} does not exist")
    if path.exists() and not overwrite:
        raise KeyMaterialError(f"{str(path)!r} exists; refusing to overwrite a key (use --force)")
    text = f"{KEY_FILE_HEADER}\n{secrets.token_bytes(KEY_BYTES).hex()}\n"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_key_file(path: str | os.PathLike) -> bytes:
    """Read a key file written by :func:`generate_key_file` and return its 32 bytes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(f"key file {str(path)!r} not found") from None
    except OSError as e:
        raise KeyMaterialError(f"cannot read key file {str(path)!r}: {e.strerror}") from None
    lines = raw.decode("ascii", errors="replace").split()
    if len(lines) != 2 or lines[0] != KEY_FILE_HEADER:
        raise KeyMaterialError(
            f"{str(path)!r} is not a faceveil key file (make one with `faceveil keygen -o KEY`)"
        )
    try:
        key = bytes.fromhex(lines[1])
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(f"key file {str(path)!r} is malformed (expected 64 hex digits)")
    return key


# ---------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySource:
    """Where the secret comes from: a key file's bytes or a passphrase.

    A passphrase only becomes a key together with a file's salt and KDF
    parameters, so the source is resolved per file with :meth:`resolve`.
    """

    kind: str  # "file" | "passphrase"
    secret: bytes

    @classmethod
    def from_key_file(cls, path: str | os.PathLike) -> KeySource:
        return cls("file", read_key_file(path))

    @classmethod
    def from_passphrase(cls, passphrase: str) -> KeySource:
        if not passphrase:
            raise KeyMaterialError("the passphrase is empty")
        return cls("passphrase", passphrase.encode("utf-8"))

    @classmethod
    def from_bytes(cls, key: bytes) -> KeySource:
        if len(key) != KEY_BYTES:
            raise KeyMaterialError(f"a raw key must be {KEY_BYTES} bytes")
        return cls("file", bytes(key))

    def new_params(self, kdf: dict | None = None) -> dict:
        """Fresh per-file key parameters: a random salt and, for passphrases, the KDF."""
        params: dict = {"type": self.kind, "salt": secrets.token_bytes(SALT_BYTES)}
        if self.kind == "passphrase":
            params["kdf"] = dict(kdf or DEFAULT_KDF)
        return params

    def resolve(self, params: dict) -> SecretKey:
        """The master key for a file with these key parameters (see :meth:`new_params`)."""
        salt = params["salt"]
        if self.kind == "file":
            return SecretKey(self.secret, salt)
        kdf = params.get("kdf")
        if kdf is None:
            # The file was made with a key file: no passphrase can match.
            raise KeyMaterialError("this file was anonymized with a key file, not a passphrase")
        return SecretKey(argon2id(self.secret.decode("utf-8"), salt, kdf), salt)

    def __repr__(self) -> str:  # never print the secret
        return f"KeySource(kind={self.kind!r})"


class SecretKey:
    """A resolved 256-bit master key bound to one file's salt."""

    def __init__(self, master: bytes, salt: bytes) -> None:
        if len(master) != KEY_BYTES:
            raise KeyMaterialError("internal: master key must be 32 bytes")
        self._master = master
        self.salt = salt

    def __repr__(self) -> str:
        return "SecretKey(<hidden>)"

    def signs(self, nonce: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """The +-1 key signs for one face, as an int8 array of ``shape`` (C order)."""
        import numpy as np

        n = int(np.prod(shape))
        stream = _chacha20_keystream(_hkdf(self._master, nonce, "faceveil/v1/signs"), (n + 7) // 8)
        bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8), bitorder="little")[:n]
        return (1 - 2 * bits.astype(np.int8)).reshape(shape)

    def check_value(self) -> bytes:
        """A value that identifies the key for this file without revealing it."""
        return _hkdf(self._master, self.salt, "faceveil/v1/key-check", CHECK_BYTES)

    def matches(self, check: bytes) -> bool:
        return hmac.compare_digest(self.check_value(), check)

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under a key derived for metadata authentication."""
        key = _hkdf(self._master, self.salt, "faceveil/v1/metadata-mac")
        return hmac.new(key, data, "sha256").digest()

    def _aead(self, label: str, nonce: bytes | None) -> ChaCha20Poly1305:
        info = f"faceveil/v1/seal/{label}"
        return ChaCha20Poly1305(_hkdf(self._master, nonce or self.salt, info))

    def seal(self, label: str, plaintext: bytes, *, nonce: bytes | None = None) -> bytes:
        """Authenticated encryption (ChaCha20-Poly1305) of ``plaintext`` for one purpose.

        The key is derived from the master key, the file salt (or a face ``nonce``) and
        ``label``; the output is ``aead_nonce || ciphertext || tag``.
        """
        aead = self._aead(label, nonce)
        aead_nonce = secrets.token_bytes(12)
        return aead_nonce + aead.encrypt(aead_nonce, plaintext, label.encode())

    def open(self, label: str, sealed: bytes, *, nonce: bytes | None = None) -> bytes | None:
        """Decrypt what :meth:`seal` made; ``None`` when the key or data do not authenticate."""
        aead = self._aead(label, nonce)
        try:
            return aead.decrypt(sealed[:12], sealed[12:], label.encode())
        except (InvalidTag, ValueError):
            return None
