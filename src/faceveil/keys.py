"""Secret keys: key files, passphrases, and everything derived from them.

Layout, in the spirit of ``cryptography``: the high-level recipes are
:func:`generate_key_file`, :func:`read_key_file` (:func:`parse_key_file` for a key
file's contents in memory), :class:`KeySource` and
:class:`SecretKey`; the primitives they rest on (HKDF-SHA256, ChaCha20,
ChaCha20-Poly1305, Argon2id) all come from ``cryptography`` and are used in one
place each.

Derivations from the 256-bit master key ``K`` (a key file's bytes, or Argon2id of a
passphrase with the file's salt). Every derived value names its purpose in the HKDF
``info`` string, so no two uses ever share a key::

    check(salt)   = HKDF(K, salt=salt, info="faceveil/v1/key-check")[:16]
    mac key       = HKDF(K, salt=salt, info="faceveil/v1/metadata-mac")
    sealing key   = HKDF(K, salt=salt, info="faceveil/v1/seal/<label>")

Per face, format version 2 (:class:`FaceKey`; the file salt is bound in, so a nonce
reused in another file gives unrelated material)::

    stream(label) = ChaCha20(HKDF(K, salt=salt || nonce, info="faceveil/v2/<label>"))
    signs         = stream("signs") bits, little-endian within each byte, bit 1 -> -1
    mixing        = 3 x (permutation: argsort of stream("mix/perm/r") as uint64 LE,
                         round signs: stream("mix/signs/r")), flip: stream("mix/flip")
    normal(label) = N(0, 1) draws: Box-Muller on pairs of uniforms (k + 0.5) / 2**53, k
                    the top 53 bits of consecutive uint64 LE words of stream(label)
    face sealing  = ChaCha20-Poly1305 under HKDF(K, salt=salt || nonce,
                                                 info="faceveil/v2/seal/<label>")

Format version 1 (still read): ``signs(nonce) = ChaCha20(HKDF(K, salt=nonce,
info="faceveil/v1/signs"))`` and lossless data sealed under ``salt=nonce``.

Each face gets its own random nonce, so one leaked (original, anonymized) pair only
reveals the material of that face; any other face's is an independent ChaCha20
keystream. The derivation uses no torch or numpy RNG: it is byte-for-byte the same on
every OS, CPU and GPU (pinned by known-answer tests).
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import media
from .errors import KeyMaterialError, KeyWarning, MetadataError, WrongKeyError

if TYPE_CHECKING:  # numpy is imported where signs are made: keygen starts without it
    import numpy as np

KEY_BYTES = 32
NONCE_BYTES = 16
SALT_BYTES = 16
CHECK_BYTES = 16
KEY_FILE_HEADER = "faceveil-key-v1"
MIN_PASSPHRASE = 8
"""Passphrases shorter than this (in characters) are warned about when they make a new
file, not refused: Argon2id slows each guess, but a short passphrase is still few
guesses (SECURITY.md)."""

# Argon2id defaults (RFC 9106 second recommended option: 64 MiB, 3 passes).
DEFAULT_KDF = {"name": "argon2id", "iterations": 3, "lanes": 4, "memory_kib": 65536}
# What a file may ask for: a hostile file must not make recovery allocate gigabytes or
# run for minutes. 1 GiB and 10 passes is several times the default's cost.
KDF_LIMITS = {"iterations": (1, 10), "lanes": (1, 16), "memory_kib": (8, 1 << 20)}


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


def _bits_to_signs(stream: bytes, n: int) -> np.ndarray:
    """The first ``n`` bits of ``stream`` (little-endian within each byte), 1 -> -1."""
    import numpy as np

    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8), bitorder="little")[:n]
    return 1 - 2 * bits.astype(np.int8)


def check_kdf(params: object) -> dict:
    """Argon2id parameters within :data:`KDF_LIMITS`, or :class:`MetadataError`."""
    if not isinstance(params, dict) or params.get("name") != "argon2id":
        raise MetadataError("faceveil metadata names an unsupported key derivation function")
    for name, (lo, hi) in KDF_LIMITS.items():
        value = params.get(name)
        if type(value) is not int or not lo <= value <= hi:
            raise MetadataError(
                f"faceveil metadata asks for Argon2id {name}={value!r}, outside the "
                f"accepted {lo}..{hi}: refusing (a hostile file could exhaust memory or time)"
            )
    if params["memory_kib"] < 8 * params["lanes"]:
        raise MetadataError("faceveil metadata has inconsistent Argon2id parameters")
    return params


def argon2id(passphrase: str, salt: bytes, params: dict) -> bytes:
    """Stretch a passphrase into a 256-bit key with Argon2id and the given parameters
    (refused outside :data:`KDF_LIMITS`)."""
    check_kdf(params)
    if len(salt) != SALT_BYTES:
        raise MetadataError(f"the key salt must be {SALT_BYTES} bytes")
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
    write_private(path, new_key_file(), overwrite=overwrite, what="key")


def write_private(path: str | os.PathLike, data: bytes, *, overwrite: bool = False,
                  what: str = "key") -> None:
    """Write secret ``data`` to ``path`` atomically, mode 0600 from the start (never
    world-readable, even briefly); an existing file is refused unless ``overwrite``."""
    path = Path(path)
    if not path.parent.exists():
        raise KeyMaterialError(f"folder {str(path.parent)!r} does not exist")
    if path.exists() and not overwrite:
        raise KeyMaterialError(f"{str(path)!r} exists; refusing to overwrite a {what} "
                               "(use --force)")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise KeyMaterialError(f"cannot write the {what} file {str(path)!r}: "
                               f"{e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        media.publish_file(tmp, path, replace=overwrite)  # never over a key made meanwhile
    except media.OutputExistsError:
        raise KeyMaterialError(f"{str(path)!r} exists; refusing to overwrite a {what} "
                               "(use --force)") from None
    except OSError as e:
        raise KeyMaterialError(f"cannot write the {what} file {str(path)!r}: "
                               f"{e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)  # gone after a replace; the spare link after a link


_MAX_KEY_FILE = 4096  # a key file is about 82 bytes; anything much larger is not one


def new_key_file() -> bytes:
    """The contents of a new key file: a header line and 256 random bits in hex.

    :func:`generate_key_file` writes it to disk; the web page hands it to the browser
    without writing it anywhere."""
    return f"{KEY_FILE_HEADER}\n{secrets.token_bytes(KEY_BYTES).hex()}\n".encode("ascii")


def read_key_file(path: str | os.PathLike) -> bytes:
    """Read a key file written by :func:`generate_key_file` and return its 32 bytes.

    A copy that an editor saved with a UTF-8 byte-order mark, CRLF line ends or extra
    blank lines is accepted (see :func:`parse_key_file`).
    """
    from .media import reading

    with reading(path, "key file", KeyMaterialError) as f:
        mode = os.fstat(f.fileno()).st_mode
        raw = f.read(_MAX_KEY_FILE + 1)
    key = parse_key_file(raw, repr(str(path)))
    if os.name == "posix" and stat.S_ISREG(mode) and mode & 0o077:
        # As ssh does for a private key, but a warning: the key still works.
        warnings.warn(KeyWarning(
            f"key file {str(path)!r} is accessible by others (mode "
            f"{stat.S_IMODE(mode):04o}): anyone who can read it can recover every file "
            f"made with it; make it private with `chmod 600 {path}`"), stacklevel=2)
    return key


def short_passphrase(source: KeySource) -> str | None:
    """A warning for a passphrase shorter than :data:`MIN_PASSPHRASE` characters (said
    when it makes a new file), or None."""
    if source.kind != "passphrase":
        return None
    length = len(source.secret.decode("utf-8"))
    if length >= MIN_PASSPHRASE:
        return None
    return (f"the passphrase has only {length} character(s): a short passphrase can be "
            f"guessed; use {MIN_PASSPHRASE} or more (or a key file from `faceveil keygen`)")


def parse_key_file(data: bytes, name: str = "the key file") -> bytes:
    """The 32 key bytes of a key file's contents, checked as :func:`read_key_file` checks
    a file on disk (for keys that arrive in memory, e.g. uploaded to the web page).

    ``name`` names the file in error messages, which never quote its contents.
    """
    lines = bytes(data).decode("utf-8-sig", errors="replace").split()
    if len(data) > _MAX_KEY_FILE or len(lines) != 2 or lines[0] != KEY_FILE_HEADER:
        raise KeyMaterialError(
            f"{name} is not a faceveil key file (one starts with the line "
            f"{KEY_FILE_HEADER!r})"
        )
    try:
        key = bytes.fromhex(lines[1])
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(f"key file {name} is malformed (expected 64 hex digits)")
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
    def from_key_file_bytes(cls, data: bytes, name: str = "the key file") -> KeySource:
        """A key file's contents held in memory (see :func:`parse_key_file`)."""
        return cls("file", parse_key_file(data, name))

    @classmethod
    def from_passphrase(cls, passphrase: str) -> KeySource:
        if not passphrase:
            raise KeyMaterialError("the passphrase is empty")
        try:
            return cls("passphrase", passphrase.encode("utf-8"))
        except UnicodeEncodeError:  # bytes that were not UTF-8, decoded with surrogates
            raise KeyMaterialError("the passphrase is not valid UTF-8 text") from None

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
        """The master key for a file with these key parameters (see :meth:`new_params`).

        Raises:
            WrongKeyError: a passphrase for a file made with a key file, or the reverse.
        """
        salt = params["salt"]
        kind = params.get("type", "file")
        if kind != self.kind:
            made_with = "a key file" if kind == "file" else "a passphrase"
            given = "a passphrase" if self.kind == "passphrase" else "a key file"
            raise WrongKeyError(f"wrong key: this file was anonymized with {made_with}, "
                                f"and {given} was given")
        if self.kind == "file":
            return SecretKey(self.secret, salt)
        return SecretKey(argon2id(self.secret.decode("utf-8"), salt, params["kdf"]), salt)

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
        """Format version 1: the +-1 key signs for one face, an int8 array of ``shape``
        (C order). Version 2 derives per-face material with :meth:`face`."""
        import numpy as np

        n = int(np.prod(shape))
        stream = _chacha20_keystream(_hkdf(self._master, nonce, "faceveil/v1/signs"), (n + 7) // 8)
        return _bits_to_signs(stream, n).reshape(shape)

    def face(self, nonce: bytes) -> FaceKey:
        """The key material of one face (format version 2), bound to this file's salt."""
        return FaceKey(self._master, self.salt, nonce)

    def derive(self, label: str) -> bytes:
        """A 256-bit value for one named purpose (format 4: a repeatable file key)."""
        return _hkdf(self._master, self.salt, f"faceveil/v4/{label}")

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


class FaceKey:
    """The key material of one face (format version 2).

    Every value is a ChaCha20 keystream under ``HKDF(K, salt=file salt || nonce,
    info="faceveil/v2/<label>")``: the file salt is bound in, so the same nonce in
    another file gives unrelated signs and mixing.
    """

    def __init__(self, master: bytes, salt: bytes, nonce: bytes) -> None:
        if len(nonce) != NONCE_BYTES:
            raise MetadataError(f"a face nonce must be {NONCE_BYTES} bytes")
        self._master = master
        self._salt = bytes(salt) + bytes(nonce)

    def __repr__(self) -> str:
        return "FaceKey(<hidden>)"

    def _stream(self, label: str, n_bytes: int) -> bytes:
        return _chacha20_keystream(_hkdf(self._master, self._salt, f"faceveil/v2/{label}"),
                                   n_bytes)

    def signs(self, n: int) -> np.ndarray:
        """``n`` key signs (+-1, int8)."""
        return _bits_to_signs(self._stream("signs", (n + 7) // 8), n)

    def normal(self, n: int, label: str) -> np.ndarray:
        """``n`` independent N(0, 1) draws (float64) from this face's keystream ``label``
        (Box-Muller, Box & Muller 1958: ``r = sqrt(-2 ln u1)``, ``theta = 2 pi u2``), the
        same on every platform. Fresh noise for a new face that carries nothing of the
        original."""
        import numpy as np

        pairs = (n + 1) // 2
        words = np.frombuffer(self._stream(label, 16 * pairs), dtype="<u8")
        u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
        r = np.sqrt(-2.0 * np.log(u[0::2]))
        theta = 2.0 * np.pi * u[1::2]
        return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).reshape(-1)[:n]

    def mixing(self, n: int):
        """The keyed orthogonal mixing of ``n`` coordinates (a
        :class:`faceveil.diffusion.mixing.MixingParams`)."""
        import numpy as np

        from .diffusion.mixing import ROUNDS, MixingParams  # torch: only where mixing is used

        perms, round_signs = [], []
        for r in range(ROUNDS):
            keys = np.frombuffer(self._stream(f"mix/perm/{r}", 8 * n), dtype="<u8")
            perms.append(np.argsort(keys, kind="stable"))
            round_signs.append(_bits_to_signs(self._stream(f"mix/signs/{r}", (n + 7) // 8), n))
        flip = _bits_to_signs(self._stream("mix/flip", (n + 7) // 8), n)
        return MixingParams(tuple(perms), tuple(round_signs), flip)

    def _aead(self, label: str) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(_hkdf(self._master, self._salt, f"faceveil/v2/seal/{label}"))

    def seal(self, label: str, plaintext: bytes, associated: bytes = b"") -> bytes:
        """ChaCha20-Poly1305 of ``plaintext`` under this face's key for ``label``;
        ``aead_nonce || ciphertext || tag``."""
        aead_nonce = secrets.token_bytes(12)
        return aead_nonce + self._aead(label).encrypt(aead_nonce, plaintext,
                                                      label.encode() + associated)

    def open(self, label: str, sealed: bytes, associated: bytes = b"") -> bytes | None:
        """Decrypt what :meth:`seal` made; ``None`` when it does not authenticate."""
        try:
            return self._aead(label).decrypt(sealed[:12], sealed[12:],
                                             label.encode() + associated)
        except (InvalidTag, ValueError):
            return None


# ---------------------------------------------------------------------------
# Format 4: a random file key, one secret per face
# ---------------------------------------------------------------------------

FACE_KEY_HEADER = "faceveil-face-key-v1"


class FileKey(SecretKey):
    """Format 4: a random 256-bit key made for one file and wrapped for its holders
    (:mod:`faceveil.format.wrapping`). Each face's material comes from its own secret,
    ``HKDF(F, salt=salt || nonce, info="faceveil/v4/face")``, so one face can be
    disclosed (:class:`FaceShare`) without the others."""

    def __repr__(self) -> str:
        return "FileKey(<hidden>)"

    def file_key(self) -> bytes:
        """The file key itself, to wrap it anew (re-wrap); never stored in clear."""
        return self._master

    def face_secret(self, nonce: bytes) -> bytes:
        """The secret of the face with this nonce (what a face key holds)."""
        return _hkdf(self._master, self.salt + bytes(nonce), "faceveil/v4/face")

    def face(self, nonce: bytes) -> FaceKey:
        return FaceKey(self.face_secret(nonce), self.salt, nonce)


@dataclass(frozen=True)
class FaceShare:
    """The key of one face of one file (format 4): its secret, bound to the file's salt
    and the face's nonce. It opens that face and nothing else."""

    salt: bytes
    nonce: bytes
    index: int
    secret: bytes

    kind = "face"

    def face(self) -> FaceKey:
        return FaceKey(self.secret, self.salt, self.nonce)

    def to_bytes(self) -> bytes:
        """The text of a face key file."""
        return (f"{FACE_KEY_HEADER}\n{self.index} {self.salt.hex()} {self.nonce.hex()} "
                f"{self.secret.hex()}\n").encode("ascii")

    @classmethod
    def parse(cls, data: bytes, name: str = "the face key") -> FaceShare:
        lines = bytes(data).decode("utf-8-sig", errors="replace").splitlines()
        lines = [line.split() for line in lines if line.strip()]
        try:
            if len(data) > _MAX_KEY_FILE or lines[0] != [FACE_KEY_HEADER] or len(lines) != 2:
                raise ValueError
            index, salt, nonce, secret = lines[1]
            share = cls(bytes.fromhex(salt), bytes.fromhex(nonce), int(index),
                        bytes.fromhex(secret))
        except (ValueError, IndexError):
            raise KeyMaterialError(f"{name} is not a faceveil face key (one starts with "
                                   f"the line {FACE_KEY_HEADER!r})") from None
        if (len(share.salt), len(share.nonce), len(share.secret)) != (
                SALT_BYTES, NONCE_BYTES, KEY_BYTES) or share.index < 0:
            raise KeyMaterialError(f"face key {name} is malformed")
        return share

    @classmethod
    def read(cls, path: str | os.PathLike) -> FaceShare:
        from .media import reading

        with reading(path, "face key", KeyMaterialError) as f:
            return cls.parse(f.read(_MAX_KEY_FILE + 1), repr(str(path)))

    def resolve(self, params: dict):
        raise WrongKeyError("a face key opens one face (recover --face-key), not a file")

    def __repr__(self) -> str:
        return f"FaceShare(face={self.index})"
