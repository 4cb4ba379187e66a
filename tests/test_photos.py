"""Real photos end to end through the CLI: detection, in-place anonymize and recover."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceveil import api, faces, identity, images, keys
from faceveil.cli import main
from faceveil.format import fields, png

from .records import rewrite
from .tinymodels import make_pixel_model

DATA = Path(__file__).parent / "data"
TRUTH = json.loads((DATA / "faces.json").read_text())


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def expected_faces(name: str) -> int:
    f = TRUTH[name]["faces"]
    return f if isinstance(f, int) else len(f)


@pytest.fixture(scope="session")
def model64(tmp_path_factory):
    """A tiny 64 px pixel model folded like the built-in one (FFHQ framing by default)."""
    return make_pixel_model(tmp_path_factory.mktemp("m") / "tiny64", size=64, patch=4)


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "k.key"
    assert run("keygen", "-o", path).exit_code == 0
    return path


def union_footprint(path, key, shape, deniable: bool = False) -> np.ndarray:
    """Photo pixels any face's stored hard mask can touch (the record opened with the key:
    the geometry is sealed)."""
    opened = api.open_record(path, keys.KeySource.from_key_file(key), deniable=deniable)
    union = np.zeros(shape[:2], dtype=bool)
    for face in opened.faces:
        warped, window = faces.footprint(face.mask.astype(np.float64), face.transform, shape)
        union[window] |= warped > 0
    return union


@pytest.mark.parametrize("name", ["group.jpg", "obama.jpg"])
def test_photo_anonymize_and_recover_in_place(tmp_path, model64, key, name):
    src = DATA / name
    anon, back = tmp_path / "anon.png", tmp_path / "back.png"
    r = run("anonymize", src, "-o", anon, "-k", key, "-m", model64, "--steps", 10, "-q")
    assert r.exit_code == 0, r.output
    record = json.loads(run("inspect", anon).stdout)
    assert len(record["faces"]) == expected_faces(name)
    for face in record["faces"]:
        assert len(face["box"]) == 4 and face["crop_size"] == 64
    original = images.load_image(src).pixels
    a = np.asarray(Image.open(anon))
    union = union_footprint(anon, key, original.shape)
    assert (a[~union] == original[~union]).all()  # outside the masks: byte-identical
    assert (a[union] != original[union]).mean() > 0.5  # inside: the faces changed
    r = run("recover", anon, "-o", back, "-k", key, "-q")
    assert r.exit_code == 0, r.output
    b = np.asarray(Image.open(back))
    assert (b[~union] == a[~union]).all()  # recovery touches only the masks too
    # Every recovered face is the same person for dlib, and closer than the anonymized one.
    for face in record["faces"]:
        x, y, w, h = face["box"]
        pad = w // 2
        crop = (slice(max(0, y - pad), y + h + pad), slice(max(0, x - pad), x + w + pad))
        e0, ea, eb = (identity.embed(np.ascontiguousarray(im[crop]))
                      for im in (original, a, b))
        assert e0 is not None and eb is not None
        assert identity.distance(e0, eb) < 0.6
        if ea is not None:
            assert identity.distance(e0, eb) < identity.distance(e0, ea)


def test_detect_preview_and_json(tmp_path, model64):
    out = tmp_path / "preview.png"
    r = run("detect", DATA / "group.jpg", "-o", out, "-m", model64)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert len(report["faces"]) == expected_faces("group.jpg")
    assert Image.open(out).size == Image.open(DATA / "group.jpg").size
    assert any("soft" in n for n in report["notes"])  # the 130 px face vs a 64 px model


def test_exclude_and_box_change_what_is_anonymized(tmp_path, model64, key):
    r = run("detect", DATA / "group.jpg", "-o", tmp_path / "p.png", "-m", model64,
            "--exclude", 0)
    report = json.loads(r.stdout)
    assert len(report["faces"]) == expected_faces("group.jpg") - 1
    assert report["skipped"][0]["reason"] == "excluded"
    plain = run("detect", DATA / "obama.jpg", "-o", tmp_path / "q.png", "-m", model64)
    r = run("detect", DATA / "obama.jpg", "-o", tmp_path / "r.png", "-m", model64,
            "--box", "10,10,120,120")
    boxes = json.loads(r.stdout)["faces"]
    assert len(boxes) == len(json.loads(plain.stdout)["faces"]) + 1
    assert boxes[-1]["box"] == [10, 10, 120, 120] and boxes[-1]["source"] == "box"


def test_no_face_policy(tmp_path, model64, key):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 150), (120, 140, 160)).save(blank)
    out = tmp_path / "o.png"
    base = ["-k", key, "-m", model64, "--steps", 2]
    r = run("anonymize", blank, "-o", out, *base)
    assert r.exit_code == 0 and "no face" in r.output and not out.exists()
    r = run("anonymize", blank, "-o", out, *base, "--no-face", "error")
    assert r.exit_code == 6 and not out.exists()
    r = run("anonymize", blank, "-o", out, *base, "--no-face", "copy")
    assert r.exit_code == 0 and out.exists()
    with Image.open(out) as im:
        assert "faceveil" not in im.info


def test_small_faces_are_skipped_with_a_warning(tmp_path, model64, key):
    r = run("anonymize", DATA / "group.jpg", "-o", tmp_path / "o.png", "-k", key,
            "-m", model64, "--steps", 2, "--min-face", 60)
    assert r.exit_code == 0, r.output
    assert "not anonymized" in r.output and "smaller than" in r.output


def test_grayscale_rgba_and_rotated_photos(tmp_path, model64, key):
    photo = Image.open(DATA / "obama.jpg")
    variants = {
        "gray.png": photo.convert("L"),
        "rgba.png": photo.convert("RGBA"),
    }
    for name, im in variants.items():
        im.save(tmp_path / name)
    # Stored sideways with an EXIF "rotate 90 CW" tag: upright once the tag is applied.
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rot.jpg", exif=exif)
    for name in [*variants, "rot.jpg"]:
        out = tmp_path / f"{name}.out.png"
        r = run("anonymize", tmp_path / name, "-o", out, "-k", key, "-m", model64,
                "--steps", 2, "-q")
        assert r.exit_code == 0, (name, r.output)
        assert len(json.loads(run("inspect", out).stdout)["faces"]) == 1, name
        assert Image.open(out).size == photo.size


def test_folder_batch_survives_a_bad_file(tmp_path, model64, key):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        (src / name).write_bytes((DATA / name).read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    r = run("anonymize", src, "-o", out, "-k", key, "-m", model64, "--steps", 2, "-q")
    assert r.exit_code == 1  # the batch finished, but says one file failed
    assert sorted(p.name for p in out.iterdir()) == ["biden.png", "obama.png"]
    back = tmp_path / "back"
    r = run("recover", out, "-o", back, "-k", key)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in back.iterdir()) == ["biden.png", "obama.png"]
    assert "recovered 2 face(s) in 2 image(s)" in r.output


def test_aligned_synthetic_face_without_mask(tmp_path, model64, key):
    grid = np.asarray(Image.open(DATA / "gan_faces.png").convert("RGB"))
    face = tmp_path / "face.png"
    Image.fromarray(grid[:64, :64]).save(face)
    r = run("anonymize", face, "-o", tmp_path / "a.png", "-k", key, "-m", model64, "--aligned",
            "--steps", 2, "-q")
    assert r.exit_code == 0, r.output
    opened = api.open_record(tmp_path / "a.png", keys.KeySource.from_key_file(key))
    assert opened.faces[0].source == "aligned"


def test_lossless_recovery_is_bit_exact(tmp_path, model64, key):
    src = DATA / "group.jpg"
    anon, back = tmp_path / "anon.png", tmp_path / "back.png"
    r = run("anonymize", src, "-o", anon, "-k", key, "-m", model64, "--steps", 3, "--lossless",
            "-q")
    assert r.exit_code == 0, r.output
    record = json.loads(run("inspect", anon).stdout)
    assert record["sampler"]["default_recovery"] == "lossless"
    assert all(len(f["lossless"]) > 100 for f in record["faces"])
    assert run("recover", anon, "-o", back, "-k", key, "-q").exit_code == 0
    original = images.load_image(src).pixels
    assert np.array_equal(np.asarray(Image.open(back)), original)
    # Without the key nothing opens: a wrong key is refused before any pixel is written.
    other = tmp_path / "other.key"
    run("keygen", "-o", other)
    r = run("recover", anon, "-o", tmp_path / "w.png", "-k", other)
    assert r.exit_code == 3 and not (tmp_path / "w.png").exists()


def test_lossless_tampered_or_reencoded(tmp_path, model64, key):
    src = DATA / "obama.jpg"
    anon = tmp_path / "anon.png"
    run("anonymize", src, "-o", anon, "-k", key, "-m", model64, "--steps", 3, "--lossless", "-q")
    with Image.open(anon) as im:
        pixels = np.array(im)
    record = png.read(anon)

    def flip_bit(r):  # a flipped bit in the sealed face data: the MAC catches it
        data = bytearray(fields.b64d(r["faces"][0]["lossless"]))
        data[-1] ^= 1
        r["faces"][0]["lossless"] = fields.b64e(bytes(data))

    bad = rewrite(record, flip_bit)  # the (unkeyed) digest recomputed
    tampered = tmp_path / "tampered.png"
    text = {png.CHUNK_KEYWORD: json.dumps(bad)}
    tampered.write_bytes(images.encode_image(pixels, text=text))
    r = run("recover", tampered, "-o", tmp_path / "t.png", "-k", key)
    assert r.exit_code == 4 and not (tmp_path / "t.png").exists()
    # Re-encoded as JPEG: the sealed originals do not depend on the anonymized pixels, so
    # the faces still come back bit-exact, and recovery says the rest is re-encoded.
    jpg = tmp_path / "anon.jpg"
    Image.fromarray(pixels).save(jpg, quality=75)
    meta = tmp_path / "meta.json"
    run("inspect", anon, "--export", meta)
    r = run("recover", jpg, "-o", tmp_path / "j.png", "-k", key, "--meta", meta)
    assert r.exit_code == 0, r.output
    assert "re-encoded" in r.output and "bit-exactly" in r.output
    original = images.load_image(src).pixels
    back = np.asarray(Image.open(tmp_path / "j.png"))
    union = union_footprint(anon, key, original.shape)
    assert np.array_equal(back[union], original[union])


def test_deniable_refuses_lossless_and_a_wrong_key_gives_another_face(tmp_path, model64, key):
    src = DATA / "obama.jpg"
    anon = tmp_path / "anon.png"
    r = run("anonymize", src, "-o", anon, "-k", key, "-m", model64, "--steps", 3,
            "--lossless", "--deniable", "-q")
    assert r.exit_code == 1 and "--lossless" in r.output and not anon.exists()
    assert run("anonymize", src, "-o", anon, "-k", key, "-m", model64, "--steps", 3,
               "--deniable", "-q").exit_code == 0
    other = tmp_path / "other.key"
    run("keygen", "-o", other)
    r = run("recover", anon, "-o", tmp_path / "w.png", "-k", other, "-m", model64,
            "--deniable", "-q")
    assert r.exit_code == 0, r.output
    original = images.load_image(src).pixels
    union = union_footprint(anon, other, original.shape, deniable=True)
    wrong = np.asarray(Image.open(tmp_path / "w.png"))
    assert (wrong[union] != original[union]).mean() > 0.5


def test_parser_weights_option(tmp_path, model64, key):
    import torch

    from faceveil.faces import parsing

    weights = tmp_path / "79999_iter.pth"
    torch.save(parsing.BiSeNet().state_dict(), weights)
    r = run("detect", DATA / "obama.jpg", "-o", tmp_path / "p.png", "-m", model64,
            "--parser-weights", weights)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["faces"]) == 1
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    r = run("anonymize", DATA / "obama.jpg", "-o", tmp_path / "a.png", "-k", key, "-m", model64,
            "--parser-weights", tmp_path / "junk.pth")
    assert r.exit_code == 1 and "face-parser weights" in r.output
