"""Every awkward input through the command line: success or a clear, documented error.

The corpus (:mod:`tests.corpus`) is made at test time. Each file goes through
``anonymize`` (aligned, tiny model, one step), ``detect``, ``inspect`` and, for what was
anonymized, ``recover``, one by one and as a folder. Whatever happens: no exit 70, no
traceback, inputs byte-identical, no temporary file left, no frame or alpha lost
without a note, nothing secret in an anonymized file.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceveil import images, keys
from faceveil.cli import main

from .corpus import HIDDEN, build

DOCUMENTED = {0, 1, 2, 3, 4, 5, 6}
EXITS: collections.Counter = collections.Counter()  # (command, status) over the corpus


def run(*args, input=None):
    r = CliRunner().invoke(main, [str(a) for a in args], input=input)
    EXITS[(str(args[0]), r.exit_code)] += 1
    assert r.exit_code in DOCUMENTED, (args, r.exit_code, r.output)
    assert "Traceback" not in r.output and "site-packages" not in r.output, r.output
    assert "\x1b[" not in r.output and "\r" not in r.output, r.output  # no bars in logs
    return r


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's convolutions are microseconds of work: one thread avoids the
    cost of waking a second one (16x slower on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "in"
    cases = build(folder)
    before = digest(folder)
    yield folder, cases
    assert digest(folder) == before  # every input byte-identical, nothing added
    print("\ncorpus exits (command, status): count", dict(sorted(EXITS.items())))


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "k.key"
    keys.generate_key_file(path)
    return path


def no_temporaries(*folders: Path) -> None:
    for folder in folders:
        assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_each_file(corpus, key, pixel_model, tmp_path):
    folder, cases = corpus
    base = ["-k", key, "-m", pixel_model, "--aligned", "--steps", 1]
    for i, case in enumerate(cases):
        src, out = folder / case.name, tmp_path / f"{i}.png"
        r = run("anonymize", src, "-o", out, *base)
        assert r.exit_code == case.anonymize, (case.name, r.output)
        assert case.says in r.output, (case.name, r.output)
        detect = run("detect", src, "-o", tmp_path / f"{i}.preview.png", "-m", pixel_model)
        assert detect.exit_code == case.anonymize, (case.name, detect.output)
        inspect = run("inspect", src)
        assert inspect.exit_code == (4 if case.anonymize == 0 else case.anonymize), case.name
        if case.anonymize:
            assert not out.exists()
            continue
        data = out.read_bytes()
        assert b"Secret" not in data and "Sécret".encode() not in data, case.name
        with Image.open(out) as im:
            assert im.size == case.upright, case.name
            assert (im.mode == "L") == case.gray, (case.name, im.mode)
            assert "A" not in im.mode  # transparency is flattened, never published
            if "hidden" in case.tags:
                assert not (np.asarray(im.convert("RGB")) == HIDDEN).all(axis=2).any()
        assert run("inspect", out).exit_code == 0
        back = tmp_path / f"{i}.back.png"
        r = run("recover", out, "-o", back, "-k", key, "-q")
        assert r.exit_code == 0, (case.name, r.output)
        check_recovered(case, src, back, tmp_path / f"{i}.back.jpg", out, key)
    no_temporaries(tmp_path, folder)


def check_recovered(case, src: Path, back: Path, back_jpg: Path, anon: Path, key) -> None:
    """What recovery restores: upright pixels (never turned twice), the metadata, alpha."""
    restored = images.load_image(back)
    assert restored.pixels.shape[1::-1] == case.upright, case.name
    if "xmp6" in case.tags:
        xmp = restored.metadata["xmp"]
        assert b"Secret Person" in xmp and b"Orientation" not in xmp
    with warnings.catch_warnings():  # Pillow warns about the broken EXIF restored as it was
        warnings.simplefilter("ignore")
        check_restored_metadata(case, src, back)
    if "photoshop" in case.tags:  # only JPEG holds it: recover to .jpg
        r = run("recover", anon, "-o", back_jpg, "-k", key)
        assert r.exit_code == 0, r.output
        with Image.open(back_jpg) as im:
            assert b"Secret caption" in im.info["photoshop"][0x0404]
        r = run("recover", anon, "-o", back.with_suffix(".bmp"), "-k", key)
        assert "Photoshop/IPTC block" in r.output and ".jpg" in r.output  # said, not silent


def check_restored_metadata(case, src: Path, back: Path) -> None:
    with Image.open(back) as im, Image.open(src) as original:
        if "alpha" in case.tags:
            a = np.asarray(im.getchannel("A"))
            assert np.array_equal(a, np.asarray(original.convert("RGBA").getchannel("A")))
        if "exif" in case.tags:
            exif = im.getexif()
            assert exif.get(0x010F) == "SecretCam" and exif.get(0x0112, 1) == 1
        if "text" in case.tags:
            assert im.text["Author"] == "Secret Author" and im.text["Title"] == "Sécret títle"
        if "spoofed" in case.tags:  # the chunk comes back as it was (it is no record)
            assert im.text["faceveil"] == original.text["faceveil"]
        if "icc" in case.tags:
            assert im.info["icc_profile"] == original.info["icc_profile"]
        if "tiff" in case.tags:
            assert im.getexif().get(315) == "Secret Artist"


def test_folder(corpus, key, pixel_model, tmp_path):
    folder, cases = corpus
    out = tmp_path / "out"
    r = run("anonymize", folder, "-o", out, "-k", key, "-m", pixel_model, "--aligned",
            "--steps", 1)
    assert r.exit_code == 1, r.output  # some files fail: the batch goes on and says so
    assert "same.jpg -> same_jpg.png" in r.output and "same.png -> same_png.png" in r.output
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == len([c for c in cases if c.anonymize == 0])
    assert "same_jpg.png" in written and "same_png.png" in written
    assert "folder.png" not in written  # the folder named folder.jpg is no image
    for case in cases:
        line = next(ln for ln in r.output.splitlines() if f"] {case.name}:" in ln)
        assert ("FAILED" in line) == (case.anonymize != 0), line
        assert case.says in line, line
    back = tmp_path / "back"
    r = run("recover", out, "-o", back, "-k", key, "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in back.iterdir()) == written
    no_temporaries(tmp_path, folder)


def test_folder_into_itself_never_overwrites_an_input(tmp_path, key, pixel_model):
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(folder / "x.jpg")
    Image.fromarray(np.full((32, 32, 3), 160, np.uint8)).save(folder / "x.png")
    before = digest(folder)
    r = run("anonymize", folder, "-o", folder, "--force", "-k", key, "-m", pixel_model,
            "--aligned", "--steps", 1)
    assert r.exit_code == 0, r.output
    after = digest(folder)
    assert {k: after[k] for k in before} == before  # inputs untouched, even with --force
    assert sorted(after) == ["x.jpg", "x.png", "x_jpg.png", "x_png.png"]
    # Existing outputs are refused up front, before any work, without --force.
    out = tmp_path / "out"
    base = ["-k", key, "-m", pixel_model, "--aligned", "--steps", 1]
    assert run("anonymize", folder, "-o", out, *base).exit_code == 0
    r = run("anonymize", folder, "-o", out, *base)
    assert r.exit_code == 1 and "4 output(s) exist" in r.output and "use --force" in r.output


def test_folder_named_like_an_image(tmp_path, key, pixel_model):
    (tmp_path / "x.jpg").mkdir()
    r = run("anonymize", tmp_path / "x.jpg", "-o", tmp_path / "out", "-k", key)
    assert r.exit_code == 1 and "no images" in r.output
    assert not (tmp_path / "out").exists()  # no empty output folder left behind
    r = run("anonymize", tmp_path / "x.jpg", "-o", tmp_path / "o.png", "-k", key)
    assert r.exit_code == 1 and "folder" in r.output and not (tmp_path / "o.png").exists()
    # Every image failing leaves no empty output folder either.
    (tmp_path / "x.jpg" / "bad.png").write_bytes(b"junk")
    r = run("anonymize", tmp_path / "x.jpg", "-o", tmp_path / "out", "-k", key,
            "-m", pixel_model)
    assert r.exit_code == 1 and "FAILED" in r.output and not (tmp_path / "out").exists()


def test_an_unexpected_error_on_one_file_does_not_stop_the_batch(tmp_path, key, pixel_model,
                                                                  monkeypatch):
    from faceveil.pipeline import anonymize

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(folder / name)
    real = anonymize.prepare  # folder images are prepared one by one, then batched

    def flaky(image, *args, **kwargs):
        if image.pixels[0, 0, 0] == 100 and not flaky.done:
            flaky.done = True
            raise RuntimeError("boom")
        return real(image, *args, **kwargs)

    flaky.done = False
    monkeypatch.setattr(anonymize, "prepare", flaky)
    r = run("anonymize", folder, "-o", tmp_path / "out", "-k", key, "-m", pixel_model,
            "--aligned", "--steps", 1)
    assert r.exit_code == 1
    assert "a.png: FAILED: unexpected RuntimeError: boom" in r.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.png"]


def test_write_errors_are_found_before_any_work(tmp_path, key, pixel_model):
    """/sys refuses new files even to root: every command says so cleanly, exit 1."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys here")
    img = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(img)
    r = run("anonymize", img, "-o", "/sys/kernel/x.png", "-k", key, "-m", pixel_model,
            "--aligned")
    assert r.exit_code == 1 and "cannot write" in r.output
    r = run("keygen", "-o", "/sys/kernel/x.key")
    assert r.exit_code == 1 and "cannot write" in r.output
    anon = tmp_path / "a.png"
    assert run("anonymize", img, "-o", anon, "-k", key, "-m", pixel_model, "--aligned",
               "--steps", 1).exit_code == 0
    r = run("recover", anon, "-o", "/sys/kernel/b.png", "-k", key)
    assert r.exit_code == 1 and "cannot write" in r.output
    r = run("inspect", anon, "--export", "/sys/kernel/m.json")
    assert r.exit_code == 1 and "cannot write" in r.output
    r = run("anonymize", tmp_path, "-o", "/sys/kernel/out", "-k", key, "-m", pixel_model)
    assert r.exit_code == 1 and "cannot write" in r.output


NON_ROOT = """
import os, sys
from click.testing import CliRunner
from faceveil import api, images, keys
from faceveil.cli import main
from faceveil.format import png
import difflib, encodings.utf_8_sig, json, tempfile, tqdm  # noqa: E401 (loaded lazily later)
try:  # after the imports: the interpreter may live in /root
    os.setgid(65534); os.setuid(65534)
except PermissionError:
    print("cannot become nobody"); sys.exit(0)
d = sys.argv[1]
for args in (["keygen", "-o", d + "/ro/k.key"],
             ["anonymize", d + "/in.png", "-o", d + "/ro/a.png", "-k", d + "/k.key"],
             ["anonymize", d + "/in", "-o", d + "/ro", "-k", d + "/k.key"],
             ["inspect", d + "/in.png", "--export", d + "/ro/m.json"]):
    r = CliRunner().invoke(main, args)
    print(r.exit_code, r.output.strip().replace("\\n", " | "))
"""


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="needs POSIX users")
def test_read_only_output_folder_as_a_normal_user(key):
    """Run as user `nobody` (CI runs as root, which may write anywhere): a read-only
    output folder is refused before any work, with exit 1 and no traceback. Without root
    the folder is simply read-only for the current user."""
    root = Path(tempfile.mkdtemp(prefix="faceveil-ro-"))
    try:
        os.chmod(root, 0o755)
        (root / "ro").mkdir(mode=0o555)
        (root / "in").mkdir()
        Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(root / "in.png")
        shutil.copy(root / "in.png", root / "in" / "in.png")
        shutil.copy(key, root / "k.key")
        os.chmod(root / "k.key", 0o644)
        os.chmod(root / "ro", 0o555)
        script = NON_ROOT if os.geteuid() == 0 else NON_ROOT.replace(
            "    os.setgid(65534); os.setuid(65534)", "    pass")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        r = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True,
                           text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        if r.stdout.startswith("cannot become nobody"):
            pytest.skip("this root cannot switch users")
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 4, r.stdout
        for line in lines:
            assert line.startswith("1 ") and "cannot write" in line, line
        assert "Traceback" not in r.stdout + r.stderr
        assert list((root / "ro").iterdir()) == []
    finally:
        os.chmod(root / "ro", 0o755)
        shutil.rmtree(root)


def test_two_layers_recover_one_at_a_time(tmp_path, pixel_model):
    """Anonymizing an anonymized PNG keeps the inner record, sealed: recovering the outer
    layer gives back the inner anonymized file, which its own key recovers."""
    from .conftest import centre_mask, psnr, smooth_image

    inner_key, outer_key = tmp_path / "inner.key", tmp_path / "outer.key"
    keys.generate_key_file(inner_key)
    keys.generate_key_file(outer_key)
    src = tmp_path / "face.png"
    Image.fromarray(smooth_image()).save(src)
    mask = tmp_path / "mask.png"
    Image.fromarray(centre_mask().astype(np.uint8) * 255).save(mask)
    inner, outer = tmp_path / "inner.png", tmp_path / "outer.png"
    base = ["-m", pixel_model, "--mask", mask, "--steps", 10, "-q"]
    assert run("anonymize", src, "-o", inner, "-k", inner_key, *base).exit_code == 0
    assert run("anonymize", inner, "-o", outer, "-k", outer_key, "--lossless",
               *base).exit_code == 0
    assert b"faceveil" in outer.read_bytes()
    record = json.loads(run("inspect", outer).stdout)
    inner_record = json.loads(run("inspect", inner).stdout)
    assert record["faces"][0]["nonce"] != inner_record["faces"][0]["nonce"]
    middle = tmp_path / "middle.png"
    assert run("recover", outer, "-o", middle, "-k", outer_key, "-q").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(middle)), np.asarray(Image.open(inner)))
    assert json.loads(run("inspect", middle).stdout) == inner_record
    back = tmp_path / "back.png"
    assert run("recover", middle, "-o", back, "-k", inner_key, "-q").exit_code == 0
    m = centre_mask()
    assert psnr(np.asarray(Image.open(back))[m], smooth_image()[m]) > 35


@pytest.mark.parametrize("shape", ["stroke", "spot", "corner"])
@pytest.mark.parametrize("method", ["exact-steps", "plain"])
def test_mask_never_fails_open(tmp_path, key, pixel_model, shape, method):
    """Every white pixel of the mask is replaced, however thin: a 1 px stroke on a 128 px
    image (4x larger than the 32 px model), a single pixel on an 8 px one (4x smaller),
    a 2x2 corner spot; black stays byte-identical."""
    from .corpus import pixels

    size = 8 if shape == "spot" else 128
    img = pixels(size, size, seed=7)
    m = np.zeros((size, size), bool)
    if shape == "stroke":
        m[10:120, 77] = True
    elif shape == "spot":
        m[5, 2] = True
    else:
        m[-2:, -2:] = True
    src, mask, out = tmp_path / "in.png", tmp_path / "m.png", tmp_path / "o.png"
    Image.fromarray(img).save(src)
    Image.fromarray(m.astype(np.uint8) * 255).save(mask)
    r = run("anonymize", src, "-o", out, "-k", key, "-m", pixel_model, "--mask", mask,
            "--method", method, "--steps", 3, "-q")
    assert r.exit_code == 0, r.output
    changed = (np.asarray(Image.open(out)) != img).any(axis=2)
    assert changed[m].all()  # every white pixel replaced
    assert not changed[~m].any()  # nothing else
    back = tmp_path / "b.png"
    assert run("recover", out, "-o", back, "-k", key, "-q").exit_code == 0
    assert (np.asarray(Image.open(back))[~m] == img[~m]).all()  # recovery: same pixels


def test_empty_masks_are_clear_errors(tmp_path, key, pixel_model):
    from faceveil import api
    from faceveil.options import Options

    src, mask = tmp_path / "in.png", tmp_path / "m.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(src)
    Image.new("L", (32, 32), 0).save(mask)
    r = run("anonymize", src, "-o", tmp_path / "o.png", "-k", key, "--mask", mask)
    assert r.exit_code == 1 and "no white pixel" in r.output
    Image.new("L", (32, 32), 127).save(mask)  # gray under half: black
    r = run("anonymize", src, "-o", tmp_path / "o.png", "-k", key, "--mask", mask)
    assert r.exit_code == 1 and "no white pixel" in r.output
    with pytest.raises(images.InputError, match="no white pixel"):
        api.anonymize(np.full((32, 32, 3), 90, np.uint8), keys.KeySource.from_bytes(bytes(32)),
                      model=str(pixel_model), mask=np.zeros((32, 32), bool),
                      options=Options.of(steps=1))


def test_key_files_from_editors_and_key_errors(tmp_path, key, pixel_model):
    text = key.read_text()
    bom = tmp_path / "bom.key"
    bom.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode() + b"\r\n")
    assert keys.read_key_file(bom) == keys.read_key_file(key)
    src = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(src)
    anon = tmp_path / "a.png"
    assert run("anonymize", src, "-o", anon, "-k", bom, "-m", pixel_model, "--aligned",
               "--steps", 1).exit_code == 0
    assert run("recover", anon, "-o", tmp_path / "b.png", "-k", key).exit_code == 0
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    for args in (["-k", junk], ["-k", tmp_path / "none.key"], []):
        r = run("recover", anon, "-o", tmp_path / "c.png", *args)
        assert r.exit_code == 1 and "keygen" not in r.output, r.output


def test_passphrase_that_is_not_utf8(tmp_path, pixel_model):
    src = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(src)
    r = run("anonymize", src, "-o", tmp_path / "a.png", "--passphrase-stdin",
            "-m", pixel_model, "--aligned", input=b"caf\xe9 latin-1\n")
    assert r.exit_code == 1 and "UTF-8" in r.output
    assert not (tmp_path / "a.png").exists()


def test_detect_preview_format_follows_the_extension(tmp_path, pixel_model):
    src = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(src)
    r = run("detect", src, "-o", tmp_path / "preview.jpg", "-m", pixel_model)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "preview.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    r = run("detect", src, "-o", tmp_path / "preview.xyz", "-m", pixel_model)
    assert r.exit_code == 1 and "output format" in r.output


def test_pillow_warnings_are_notes_without_paths(corpus, key, pixel_model, tmp_path):
    folder, _ = corpus
    r = run("anonymize", folder / "broken_exif.jpg", "-o", tmp_path / "o.png", "-k", key,
            "-m", pixel_model, "--aligned", "--steps", 1)
    assert r.exit_code == 0 and "Corrupt EXIF" in r.output
    assert ".py" not in r.output and "Warning" not in r.output


def test_grayscale_photo_stays_gray_after_recovery(tmp_path, key, pixel_model):
    from .corpus import pixels

    gray = np.asarray(Image.fromarray(pixels(32, 32)).convert("L"))
    src, anon, back = tmp_path / "g.png", tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(gray).save(src)
    assert run("anonymize", src, "-o", anon, "-k", key, "-m", pixel_model, "--aligned",
               "--steps", 5, "--lossless").exit_code == 0
    assert Image.open(anon).mode == "L"
    assert run("recover", anon, "-o", back, "-k", key).exit_code == 0
    with Image.open(back) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), gray)


def test_metadata_values_of_every_type_are_carried_or_noted():
    """Values Pillow returns as dict, int, tuple, Exif or str never reach bytes()."""
    img = Image.new("RGB", (8, 8))
    img.info.update({"photoshop": {1028: b"\x1c\x02x\x00\x03abc"}, "xmp": 5,
                     "exif": Image.Exif(), "comment": "text", "dpi": (72, 72),
                     "mystery": {"a": 1}})
    loaded = images.load_image(img)
    assert loaded.metadata["photoshop"].startswith(b"8BIM\x04\x04")
    assert loaded.metadata["comment"] == b"text"
    assert "xmp" not in loaded.metadata and "exif" not in loaded.metadata
    assert any("XMP of unexpected type" in n for n in loaded.notes)
    assert any("mystery" in n for n in loaded.notes)
    assert not any("dpi" in n for n in loaded.notes)
    back = images.encode_image(loaded.pixels, "JPEG", metadata=loaded.metadata)
    with Image.open(io.BytesIO(back)) as im:
        assert im.info["photoshop"] == {1028: b"\x1c\x02x\x00\x03abc"}
