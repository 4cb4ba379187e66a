"""Keys: key files, passphrases, sign derivation (known answers), checks, sealing."""

import hashlib
import hmac
import os
import stat

import numpy as np
import pytest

from faceveil import keys
from faceveil.errors import KeyMaterialError, WrongKeyError

FAST_KDF = {"name": "argon2id", "iterations": 1, "lanes": 1, "memory_kib": 64}


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869, written out independently of `cryptography`."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def test_keygen_writes_owner_only_file(tmp_path):
    path = tmp_path / "my.key"
    keys.generate_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = keys.read_key_file(path)
    assert len(key) == 32
    keys.generate_key_file(tmp_path / "other.key")
    assert keys.read_key_file(tmp_path / "other.key") != key


def test_keygen_refuses_to_overwrite(tmp_path):
    path = tmp_path / "my.key"
    keys.generate_key_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyMaterialError, match="exists"):
        keys.generate_key_file(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content", [b"", b"hello", b"faceveil-key-v1\nzz\n", b"faceveil-key-v1\n" + b"ab" * 31 + b"\n",
                b"\xff\xfe\x00garbage"],
)
def test_malformed_key_files_are_rejected(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyMaterialError):
        keys.read_key_file(path)


def test_key_files_in_memory_are_checked_like_files_on_disk(tmp_path):
    data = keys.new_key_file()
    (tmp_path / "k.key").write_bytes(data)
    assert keys.parse_key_file(data) == keys.read_key_file(tmp_path / "k.key")
    assert keys.KeySource.from_key_file_bytes(data) == keys.KeySource.from_key_file(
        tmp_path / "k.key")
    edited = b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n") + b"\r\n"
    assert keys.parse_key_file(edited) == keys.parse_key_file(data)
    secret = data.split()[1].decode()
    for bad in (b"", data[:-10], data + data, b"x" * 5000, data.replace(b"v1", b"v2")):
        with pytest.raises(KeyMaterialError) as e:
            keys.parse_key_file(bad, "the upload")
        assert "the upload" in str(e.value) and secret[:16] not in str(e.value)


def test_missing_key_file(tmp_path):
    with pytest.raises(KeyMaterialError, match="not found"):
        keys.read_key_file(tmp_path / "nope.key")


def test_chacha20_primitive_matches_rfc8439_vector():
    # RFC 8439 appendix A.1, test vector 1: all-zero key, nonce and counter.
    expected = bytes.fromhex("76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7")
    assert keys._chacha20_keystream(bytes(32), 32) == expected


def test_hkdf_matches_independent_rfc5869_implementation():
    master, salt = bytes(range(32)), bytes(range(16))
    assert keys._hkdf(master, salt, "faceveil/v1/signs") == _hkdf_sha256(
        master, salt, b"faceveil/v1/signs", 32
    )


def test_sign_derivation_known_answer():
    secret = keys.SecretKey(bytes(range(32)), bytes(16))
    signs = secret.signs(bytes(16), (2, 4, 4))
    assert signs.dtype == np.int8
    # Pinned: any change here breaks recovery of every existing file.
    expected = [-1, -1, -1, -1, 1, -1, 1, 1, 1, -1, 1, -1, 1, -1, 1, -1,
                1, -1, 1, 1, 1, 1, 1, -1, -1, -1, 1, -1, -1, -1, -1, -1]
    assert signs.ravel().tolist() == expected
    # ... and the same by an independent route: HKDF -> ChaCha20 -> little-endian bits.
    stream = keys._chacha20_keystream(
        _hkdf_sha256(bytes(range(32)), bytes(16), b"faceveil/v1/signs", 32), 4
    )
    bits = [(byte >> i) & 1 for byte in stream for i in range(8)]
    assert [1 - 2 * b for b in bits] == expected
    assert secret.check_value().hex() == "fce8773589cf9aed8944842b81b51a62"


def test_signs_are_balanced_and_nonce_dependent():
    secret = keys.SecretKey(os.urandom(32), os.urandom(16))
    a = secret.signs(b"a" * 16, (4, 32, 32))
    b = secret.signs(b"b" * 16, (4, 32, 32))
    assert set(np.unique(a)) == {-1, 1}
    assert abs(a.mean()) < 0.05
    assert (a == secret.signs(b"a" * 16, (4, 32, 32))).all()
    assert 0.4 < (a != b).mean() < 0.6


def test_argon2id_known_answer():
    out = keys.argon2id("correct horse", bytes(range(16)), FAST_KDF)
    assert out.hex() == "25ce5233cc1e4d37e9bca31bfef41710e40446cd1cb575932791c5fd3780bd3c"


def test_passphrase_resolution_uses_salt_and_kdf():
    src = keys.KeySource.from_passphrase("correct horse")
    p1, p2 = src.new_params(FAST_KDF), src.new_params(FAST_KDF)
    assert p1["salt"] != p2["salt"] and p1["kdf"] == FAST_KDF
    k1 = src.resolve(p1)
    assert k1.check_value() == src.resolve(p1).check_value()
    assert k1.check_value() != src.resolve(p2).check_value()
    other = keys.KeySource.from_passphrase("correct horsf").resolve(p1)
    assert not k1.matches(other.check_value())


def test_wrong_kind_of_key_is_a_wrong_key_both_ways():
    # The same mistake in both directions gives the same error (exit 3).
    params = keys.KeySource.from_bytes(os.urandom(32)).new_params()
    with pytest.raises(WrongKeyError, match="key file"):
        keys.KeySource.from_passphrase("pw").resolve(params)
    params = keys.KeySource.from_passphrase("pw").new_params(FAST_KDF)
    with pytest.raises(WrongKeyError, match="passphrase"):
        keys.KeySource.from_bytes(os.urandom(32)).resolve(params)


def test_empty_passphrase_rejected():
    with pytest.raises(KeyMaterialError):
        keys.KeySource.from_passphrase("")


def test_seal_and_open_authenticate():
    secret = keys.SecretKey(os.urandom(32), os.urandom(16))
    sealed = secret.seal("original-metadata", b"exif bytes")
    assert b"exif bytes" not in sealed
    assert secret.open("original-metadata", sealed) == b"exif bytes"
    assert secret.open("other-label", sealed) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert secret.open("original-metadata", tampered) is None
    wrong = keys.SecretKey(os.urandom(32), secret.salt)
    assert wrong.open("original-metadata", sealed) is None


def test_secrets_never_in_repr():
    src = keys.KeySource.from_passphrase("hunter2")
    assert "hunter2" not in repr(src)
    assert "hidden" in repr(src.resolve(src.new_params(FAST_KDF)))
