"""Hostile and careless inputs met with a clear word (issue 27): a missing input, key
files others can read, short passphrases, a folder given as key file."""

import io
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceveil import images
from faceveil.cli import main
from faceveil.errors import InputError


def run(*args, input=None, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env)


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "my.key"
    assert run("keygen", "-o", path).exit_code == 0
    return path


@pytest.mark.parametrize("command", [
    ("anonymize", "nosuchdir/", "-o", "outdir/", "-k", "KEY"),
    ("anonymize", "nosuch.jpg", "-o", "out.png", "-k", "KEY"),
    ("recover", "nosuchdir/", "-o", "back/", "-k", "KEY"),
    ("recover", "nosuch.png", "-o", "back.png", "-k", "KEY"),
    ("detect", "nosuch.jpg", "-o", "preview.png"),
    ("inspect", "nosuch.png"),
])
def test_a_missing_input_is_named(tmp_path, key, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    r = run(*(str(key) if a == "KEY" else a for a in command))
    assert r.exit_code == 1, r.output
    assert f"input {command[1]!r} not found" in r.output
    assert "output" not in r.output.split("error:", 1)[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.key"]  # nothing written


def test_a_folder_as_key_file_is_a_clear_error(tmp_path, face_files):
    img, _, _ = face_files
    for command in ("anonymize", "recover"):
        r = run(command, img, "-o", tmp_path / "o.png", "-k", tmp_path)
        assert r.exit_code == 1, r.output
        assert "is a folder" in r.output and "key file" in r.output


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_key_file_others_can_read_is_warned_about(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    args = (img, "-o", tmp_path / "a.png", "-k", key, "-m", pixel_model, "--aligned",
            "--mask", mask, "--steps", 2, "--force", "-q")
    r = run("anonymize", *args)  # keygen's mode 0600: no word
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    for mode in (0o640, 0o604):
        key.chmod(mode)
        r = run("anonymize", *args)
        assert r.exit_code == 0, r.output  # warned, not refused
        assert f"warning: key file {str(key)!r} is accessible by others (mode " \
               f"{mode:04o})" in r.output
        assert "chmod 600" in r.output


def test_a_short_passphrase_is_warned_about(tmp_path, face_files, pixel_model):
    img, mask, _ = face_files
    out = tmp_path / "a.png"
    args = ("anonymize", img, "-o", out, "-m", pixel_model, "--aligned", "--mask", mask,
            "--steps", 2, "--force", "-q", "--passphrase-stdin")
    r = run(*args, input="x\n")
    assert r.exit_code == 0, r.output
    assert "warning: the passphrase has only 1 character(s)" in r.output
    r = run(*args, input="eight ch\n")
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    # Recovering a file made with a short passphrase is no time to say it again.
    r = run("recover", out, "-o", tmp_path / "b.png", "-q", "--passphrase-stdin",
            input="eight ch\n")
    assert r.exit_code == 0 and "warning" not in r.output, r.output


# --- memory: whole-image steps in bands, text chunks under Pillow's limits --------------


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + ctype + body
            + struct.pack(">I", zlib.crc32(ctype + body)))


def _with_chunk(png_bytes: bytes, chunk: bytes) -> bytes:
    """PNG bytes with ``chunk`` inserted before IEND."""
    return png_bytes[:-12] + chunk + png_bytes[-12:]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_alpha_is_flattened_without_a_float_copy_of_the_image(tmp_path):
    """A semi-transparent photo decodes with temporaries of a few bands, not the
    whole-image float64 arrays (8 bytes a sample) it took before."""
    h, w = 2000, 2000
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[:, :, 3] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]  # every level
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path, compress_level=1)
    tracemalloc.start()
    try:
        loaded = images.load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = h * w * 3  # the decoded RGB pixels, uint8
    assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape == (h, w, 3)
    assert peak < 4 * size, f"peak {peak / size:.1f}x the decoded pixels"
    # Composited onto white exactly, rounded to nearest.
    a = rgba[:, :, 3:].astype(np.float64) / 255
    expect = np.round(rgba[:, :, :3] * a + 255 * (1 - a)).astype(np.uint8)
    assert (loaded.pixels == expect).all()


def test_a_text_chunk_bomb_of_another_keyword_is_not_inflated():
    """A zTXt chunk that inflates to 200 MB is refused within Pillow's own limit."""
    z = zlib.compressobj(9)
    block = bytes(1 << 20)
    body = b"Comment\0\0" + b"".join(z.compress(block) for _ in range(200)) + z.flush()
    bomb = _with_chunk(_png(Image.new("RGB", (8, 8))), _png_chunk(b"zTXt", body))
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="too large|corrupt"):
            images.load_image(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MB inflated"


def test_faceveil_s_own_chunk_is_read_past_pillow_s_limit():
    """The record chunk is read with faceveil's bound (large records still open)."""
    text = "x" * (3 << 20)  # three times Pillow's default text-chunk limit
    body = b"faceveil\0\x01\x00\0\0" + zlib.compress(text.encode())
    data = _with_chunk(_png(Image.new("RGB", (8, 8), (1, 2, 3))), _png_chunk(b"iTXt", body))
    loaded = images.load_image(data)
    assert loaded.text["faceveil"] == text
    assert (loaded.pixels == (1, 2, 3)).all()
    assert images.record_text(data) == text
    # Another keyword of that size keeps Pillow's limit.
    other = _with_chunk(_png(Image.new("RGB", (8, 8))),
                        _png_chunk(b"iTXt", b"Other\0\x01\x00\0\0" + zlib.compress(text.encode())))
    with pytest.raises(InputError):
        images.load_image(other)


def test_short_passphrase_rule():
    from faceveil.keys import MIN_PASSPHRASE, KeySource, new_key_file, short_passphrase

    assert short_passphrase(KeySource.from_passphrase("é" * (MIN_PASSPHRASE - 1)))
    assert short_passphrase(KeySource.from_passphrase("é" * MIN_PASSPHRASE)) is None
    assert short_passphrase(KeySource.from_key_file_bytes(new_key_file())) is None


def test_the_alpha_channel_is_restored_without_a_float_copy_of_the_image():
    """Recovery writes a transparent input back with its alpha (unflattening in bands)."""
    h, w = 2000, 2000
    pixels = np.zeros((h, w, 3), np.uint8)  # compressible: the PNG itself stays small
    pixels[:, :, 0] = np.arange(h, dtype=np.uint8)[:, None]
    pixels[:, :, 2] = 200
    alpha = np.linspace(1, 255, w, dtype=np.uint8)[None, :].repeat(h, axis=0)
    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, "PNG")
    tracemalloc.start()
    try:
        data = images.encode_image(pixels, "PNG", metadata={"alpha": buf.getvalue()})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = h * w * 3
    assert peak < 4 * size, f"peak {peak / size:.1f}x the pixels"
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == "RGBA"
        assert (np.asarray(back)[:, :, 3] == alpha).all()
