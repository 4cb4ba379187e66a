"""The command line end to end on a tiny pixel model: aligned crops with a mask."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceveil import api, images, keys
from faceveil.cli import main
from faceveil.errors import InputError
from faceveil.format import auth, png
from faceveil.options import FixedKeys, Options

from .conftest import centre_mask, psnr, smooth_image
from .records import rewrite


def run(*args, input=None, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env)


@pytest.fixture
def anon(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    out = tmp_path / "anon.png"
    r = run("anonymize", img, "-o", out, "--key-file", key, "--model", pixel_model,
            "--aligned", "--mask", mask, "--steps", 20, "--quiet")
    assert r.exit_code == 0, r.output
    return out


def test_round_trip(tmp_path, face_files, pixel_model, anon):
    img, mask, key = face_files
    original = np.array(Image.open(img))
    m = centre_mask()
    a = np.array(Image.open(anon))
    assert (a[~m] == original[~m]).all()  # black in the mask = byte-identical
    assert psnr(a[m], original[m]) < 35  # the masked region really changed
    back = tmp_path / "back.png"
    r = run("recover", anon, "-o", back, "--key-file", key, "--quiet")
    assert r.exit_code == 0, r.output
    b = np.array(Image.open(back))
    assert (b[~m] == original[~m]).all()
    assert psnr(b[m], original[m]) > 35
    with Image.open(back) as im:
        assert "faceveil" not in getattr(im, "text", {})  # recovered: no faceveil metadata


def test_wrong_key_is_refused(tmp_path, anon):
    other = tmp_path / "other.key"
    assert run("keygen", "-o", other).exit_code == 0
    r = run("recover", anon, "-o", tmp_path / "x.png", "--key-file", other)
    assert r.exit_code == 3 and "wrong key" in r.output
    assert not (tmp_path / "x.png").exists()


def test_deniable_wrong_key_gives_another_face(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    out = tmp_path / "anon.png"
    assert run("anonymize", img, "-o", out, "-k", key, "-m", pixel_model, "--mask", mask,
               "--steps", 20, "--deniable", "-q").exit_code == 0
    record = json.loads(run("inspect", out).stdout)
    assert record["key"]["check"] is None and record["mac"] is None
    other = tmp_path / "other.key"
    run("keygen", "-o", other)
    # Without --deniable an unauthenticated file is refused, with either key.
    for k in (key, other):
        r = run("recover", out, "-o", tmp_path / "w.png", "-k", k, "-q")
        assert r.exit_code == 4 and "--deniable" in r.output
    # Its model reference (a folder) is not followed from an unauthenticated record.
    r = run("recover", out, "-o", tmp_path / "w.png", "-k", other, "--deniable", "-q")
    assert r.exit_code == 5 and "--model" in r.output
    r = run("recover", out, "-o", tmp_path / "w.png", "-k", other, "--deniable",
            "-m", pixel_model, "-q")
    assert r.exit_code == 0, r.output
    m = centre_mask()
    original = np.array(Image.open(img))
    wrong = np.array(Image.open(tmp_path / "w.png"))
    assert psnr(wrong[m], original[m]) < 30
    run("recover", out, "-o", tmp_path / "r.png", "-k", key, "--deniable", "-m", pixel_model,
        "-q")
    assert psnr(np.array(Image.open(tmp_path / "r.png"))[m], original[m]) > 35


def test_inspect_prints_one_json_document_without_secrets(anon, face_files):
    r = run("inspect", anon)
    assert r.exit_code == 0
    record = json.loads(r.stdout)  # exactly one JSON document on stdout
    assert record["format"] == "faceveil" and record["version"] == 4
    assert record["sampler"]["steps"] == 20 and len(record["faces"]) == 1
    # The default with sealed originals: fresh keyed noise, no noise norm to hide.
    assert record["sampler"]["flip"] == "fresh" and record["sampler"]["norm"] == "none"
    assert record["sampler"]["recovery_methods"] == ["lossless"]
    key_hex = face_files[2].read_text().split()[1]
    assert key_hex not in r.stdout
    # Only what is needed before the key is public; geometry and residual are sealed.
    face = record["faces"][0]
    # Only ciphertext beside the public fields: the sealed geometry, the sealed original.
    assert set(face) == {"box", "crop_size", "nonce", "window_sha256", "sealed", "lossless"}
    opened = api.open_record(anon, keys.KeySource.from_key_file(face_files[2]))
    assert opened.faces[0].mask.sum() == centre_mask().sum()
    assert (opened.faces[0].photo_mask == centre_mask()).all()


def test_jpeg_reencoded_file_recovers_with_exported_metadata(tmp_path, face_files, anon):
    img, mask, key = face_files
    meta = tmp_path / "meta.json"
    assert run("inspect", anon, "--export", meta).exit_code == 0
    jpg = tmp_path / "anon.jpg"
    Image.open(anon).save(jpg, quality=95)
    r = run("recover", jpg, "-o", tmp_path / "b.png", "-k", key, "-q")
    assert r.exit_code == 4 and "--meta" in r.output
    r = run("recover", jpg, "-o", tmp_path / "b.png", "-k", key, "--meta", meta, "-q")
    assert r.exit_code == 0, r.output
    original = np.array(Image.open(img))
    m = centre_mask()
    assert psnr(np.array(Image.open(tmp_path / "b.png"))[m], original[m]) > 25


def test_sidecar(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    out = tmp_path / "a.png"
    assert run("anonymize", img, "-o", out, "-k", key, "-m", pixel_model, "--mask", mask,
               "--steps", 5, "--sidecar", "-q").exit_code == 0
    side = tmp_path / "a.faceveil.json"
    # The sidecar holds the stored record (format 3: the envelope), as the PNG chunk does;
    # read back, it is the record inspect prints.
    assert json.loads(side.read_text()) == auth.wire(png.read(out))
    assert png.read_sidecar(side).public() == json.loads(run("inspect", out).stdout)


def _tamper(path, edit):
    """Replace the PNG's stored record (the format-3 envelope) with ``edit(stored)``."""
    with Image.open(path) as im:
        stored = json.loads(im.text["faceveil"])
        pixels = np.array(im)
    text = {"faceveil": json.dumps(edit(stored))}
    path.write_bytes(images.encode_image(pixels, text=text))


def _shift_box(fields):
    fields["faces"][0]["box"][0] += 1


def test_tampered_metadata_is_refused(tmp_path, anon, face_files):
    key = face_files[2]

    def shift_box(stored):  # the record text edited, its digest left as it was
        body = json.loads(stored["record"])
        _shift_box(body)
        return dict(stored, record=auth.body_text(body))

    _tamper(anon, shift_box)
    r = run("recover", anon, "-o", tmp_path / "b.png", "-k", key)
    assert r.exit_code == 4 and "modified" in r.output


def test_tampered_metadata_with_fixed_digest_fails_mac(tmp_path, anon, face_files):
    key = face_files[2]
    record = png.read(anon)
    # The attacker recomputes the (unkeyed) digest; only the MAC is left to catch it.
    _tamper(anon, lambda stored: rewrite(record, _shift_box))
    r = run("recover", anon, "-o", tmp_path / "b.png", "-k", key)
    assert r.exit_code == 4 and "MAC" in r.output


@pytest.mark.parametrize("edit", ["version", "truncate", "missing"])
def test_unknown_version_truncated_or_missing_metadata(tmp_path, anon, face_files, edit):
    key = face_files[2]
    with Image.open(anon) as im:
        text, pixels = im.text["faceveil"], np.array(im)
    if edit == "version":
        record = json.loads(text)
        record["version"] = 99
        chunks = {"faceveil": json.dumps(record)}
    elif edit == "truncate":
        chunks = {"faceveil": text[: len(text) // 2]}
    else:
        chunks = {}
    anon.write_bytes(images.encode_image(pixels, text=chunks))
    r = run("recover", anon, "-o", tmp_path / "b.png", "-k", key)
    assert r.exit_code == 4, r.output
    assert {"version": "version 99", "truncate": "truncated", "missing": "no faceveil"}[edit] \
        in r.output
    assert "Traceback" not in r.output


def test_outputs_are_never_clobbered(tmp_path, face_files, pixel_model, anon):
    img, mask, key = face_files
    base = ["-k", key, "-m", pixel_model, "--mask", mask, "--steps", 2, "-q"]
    before = anon.read_bytes()
    r = run("anonymize", img, "-o", anon, *base)
    assert r.exit_code == 1 and "exists" in r.output and anon.read_bytes() == before
    copy = tmp_path / "in.png"
    copy.write_bytes(img.read_bytes())
    r = run("anonymize", copy, "-o", copy, *base, "--force")
    assert r.exit_code == 1 and "input" in r.output
    assert copy.read_bytes() == img.read_bytes()
    r = run("anonymize", img, "-o", tmp_path / "nope" / "a.png", *base)
    assert r.exit_code == 1 and "does not exist" in r.output
    r = run("anonymize", img, "-o", tmp_path / "a.jpg", *base)
    assert r.exit_code == 1 and ".png" in r.output
    assert run("anonymize", img, "-o", anon, *base, "--force").exit_code == 0
    assert anon.read_bytes() != before
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_bad_inputs(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    base = ["-m", pixel_model, "--steps", 2, "-q"]
    out = tmp_path / "o.png"
    (tmp_path / "notimage.png").write_text("hello")
    r = run("anonymize", tmp_path / "notimage.png", "-o", out, "-k", key, "--mask", mask, *base)
    assert r.exit_code == 1 and "not an image" in r.output
    (tmp_path / "trunc.png").write_bytes(img.read_bytes()[:200])
    r = run("anonymize", tmp_path / "trunc.png", "-o", out, "-k", key, "--mask", mask, *base)
    assert r.exit_code == 1 and ("corrupt" in r.output or "truncated" in r.output)
    r = run("anonymize", tmp_path / "missing.png", "-o", out, "-k", key, "--mask", mask, *base)
    assert r.exit_code == 1 and "not found" in r.output
    small = tmp_path / "small_mask.png"
    Image.new("L", (16, 16), 255).save(small)
    r = run("anonymize", img, "-o", out, "-k", key, "--mask", small, *base)
    assert r.exit_code == 1 and "same size" in r.output
    r = run("anonymize", img, "-o", out, "-k", tmp_path / "no.key", "--mask", mask, *base)
    assert r.exit_code == 1 and "not found" in r.output
    (tmp_path / "bad.key").write_text("faceveil-key-v1\n1234\n")
    r = run("anonymize", img, "-o", out, "-k", tmp_path / "bad.key", "--mask", mask, *base)
    assert r.exit_code == 1 and "malformed" in r.output
    r = run("anonymize", img, "-o", out, "--mask", mask, *base)  # no key at all
    assert r.exit_code == 1 and "keygen" in r.output
    assert not out.exists()


def test_decompression_bomb_refused(tmp_path, face_files, monkeypatch):
    img, mask, key = face_files
    monkeypatch.setattr(images, "MAX_PIXELS", 500)
    r = run("anonymize", img, "-o", tmp_path / "o.png", "-k", key, "--mask", mask)
    assert r.exit_code == 1 and "decompression bomb" in r.output


@pytest.mark.parametrize("mode, out_mode", [("L", "L"), ("RGBA", "RGB"), ("P", "RGB"),
                                            ("I;16", "L")])
def test_other_modes_are_converted(tmp_path, face_files, pixel_model, mode, out_mode):
    img, mask, key = face_files
    rgb = Image.open(img)
    if mode == "I;16":
        src = Image.fromarray(np.array(rgb.convert("L")).astype(np.uint16) * 257)
    else:
        src = rgb.convert(mode)
    path = tmp_path / f"in_{mode.replace(';', '')}.png"
    src.save(path)
    out = tmp_path / "o.png"
    r = run("anonymize", path, "-o", out, "-k", key, "-m", pixel_model, "--mask", mask,
            "--steps", 2, "-q")
    assert r.exit_code == 0, r.output
    assert Image.open(out).mode == out_mode  # grayscale stays grayscale


def test_exif_is_stripped_kept_encrypted_and_restored(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0112] = 1  # orientation: upright
    jpg = tmp_path / "in.jpg"
    Image.open(img).save(jpg, exif=exif, quality=98)
    out = tmp_path / "a.png"
    assert run("anonymize", jpg, "-o", out, "-k", key, "-m", pixel_model, "--mask", mask,
               "--steps", 5, "-q").exit_code == 0
    assert b"SecretCam" not in out.read_bytes()
    with Image.open(out) as im:
        assert "exif" not in im.info
    back = tmp_path / "b.jpg"
    assert run("recover", out, "-o", back, "-k", key, "-q").exit_code == 0
    with Image.open(back) as im:
        assert im.getexif().get(0x010F) == "SecretCam"


def test_exif_orientation_is_applied(tmp_path, pixel_model):
    # A 32x16 image stored sideways with "rotate 90" orientation is 16x32 upright.
    pixels = smooth_image(32)[:16]
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(pixels).save(path, exif=exif)
    loaded = images.load_image(path)
    assert loaded.pixels.shape == (32, 16, 3)


def test_passphrase_from_stdin_and_environment(tmp_path, face_files, pixel_model):
    img, mask, _ = face_files
    out = tmp_path / "a.png"
    base = ["-m", pixel_model, "--mask", mask, "--steps", 5, "-q"]
    r = run("anonymize", img, "-o", out, "--passphrase-stdin", *base, input="open sesame\n")
    assert r.exit_code == 0, r.output
    record = json.loads(run("inspect", out).stdout)
    assert record["key"]["type"] == "passphrase" and record["key"]["kdf"]["name"] == "argon2id"
    r = run("recover", out, "-o", tmp_path / "b.png", "-q",
            env={"FACEVEIL_PASSPHRASE": "open sesame"})
    assert r.exit_code == 0, r.output
    r = run("recover", out, "-o", tmp_path / "c.png", "--passphrase-stdin", input="open sesamf\n")
    assert r.exit_code == 3


def test_help_explains_commands():
    r = run("--help")
    for cmd in ("keygen", "anonymize", "recover", "inspect"):
        assert cmd in r.output
    assert "--deniable" in run("anonymize", "--help").output


def test_the_command_list_is_each_commands_own_short_help():
    # `faceveil --help` lists the commands from a table, importing none of them: it must
    # read exactly as click's list made from the commands themselves.
    import click

    from faceveil.cli import COMMANDS, SHORT_HELP, LazyGroup

    assert set(SHORT_HELP) == set(COMMANDS)
    fresh = LazyGroup(name="faceveil", lazy=COMMANDS)
    listed = CliRunner().invoke(fresh, ["--help"]).output
    ctx = click.Context(fresh)
    for name in COMMANDS:
        fresh.get_command(ctx, name)  # now loaded: the list comes from the commands
    assert CliRunner().invoke(fresh, ["--help"]).output == listed


def test_api_round_trip_and_determinism(pixel_model):
    from faceveil import api, keys

    key = keys.KeySource.from_bytes(bytes(range(32)))
    x, m = smooth_image(), centre_mask()
    fixed = FixedKeys(salt=b"s" * 16, nonces=(b"n" * 16,))
    steps20, model = Options.of(steps=20), str(pixel_model)
    a1 = api.anonymize(x, key, model=model, mask=m, options=steps20, fixed=fixed)
    a2 = api.anonymize(x, key, model=model, mask=m, options=steps20, fixed=fixed)
    assert np.array_equal(a1.pixels, a2.pixels)  # same inputs, salt and nonce: identical
    a3 = api.anonymize(x, key, model=model, mask=m, options=steps20)
    assert not np.array_equal(a1.pixels, a3.pixels)  # fresh random nonce: another face
    # The file salt is bound into every face's key material: the same nonce in another
    # file (another salt) gives another face.
    a4 = api.anonymize(x, key, model=model, mask=m, options=steps20,
                       fixed=FixedKeys(nonces=(b"n" * 16,)))
    assert not np.array_equal(a1.pixels, a4.pixels)
    for bad in ((b"short",), (b"n" * 16, b"n" * 16)):
        with pytest.raises(InputError, match="nonce"):
            api.anonymize(x, key, model=model, mask=m, options=Options.of(steps=2),
                          fixed=FixedKeys(nonces=bad))
    record = png.from_png_bytes(a1.png_bytes())
    assert record == a1.record  # the metadata round-trips through the PNG chunk
    rec = api.recover(a1.pixels, key, meta=record)
    assert psnr(rec.pixels[m], x[m]) > 35


def test_recovery_methods_on_an_aligned_face(tmp_path, face_files, pixel_model):
    """exact-steps with the stored residual beats the paper's plain method by far."""
    img, mask, key = face_files
    original, m = np.array(Image.open(img)), centre_mask()
    scores = {}
    for method, context in (("plain", "own"), ("exact-steps", "masked")):
        out, back = tmp_path / f"{method}.png", tmp_path / f"{method}.back.png"
        r = run("anonymize", img, "-o", out, "-k", key, "-m", pixel_model, "--mask", mask,
                "--method", method, "--context", context, "--steps", 20, "--no-lossless",
                "-q")
        assert r.exit_code == 0, r.output
        assert run("recover", out, "-o", back, "-k", key, "-q").exit_code == 0
        scores[method] = psnr(np.array(Image.open(back))[m], original[m])
    assert scores["exact-steps"] > 45
    assert scores["exact-steps"] > scores["plain"] + 5


def test_timings_say_where_the_time_went(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    r = run("anonymize", img, "-o", tmp_path / "a.png", "-k", key, "-m", pixel_model,
            "--aligned", "--steps", 3, "-q", "--timings")
    assert r.exit_code == 0, r.output
    (line,) = [x for x in r.output.splitlines() if x.startswith("faceveil: timings:")]
    for phase in ("start-up", "imports", "model load", "detection", "model", "writing"):
        assert f"{phase} " in line, line
    # Fresh noise inside the mask: 3 denoising steps, the outside noised forward.
    assert "3 network calls for 1 face(s)" in line and "total" in line
    r = run("recover", tmp_path / "a.png", "-o", tmp_path / "b.png", "-k", key, "-q",
            "--timings")
    assert r.exit_code == 0, r.output
    assert "faceveil: timings: start-up" in r.output and "writing" in r.output
    assert "network calls" not in r.output  # sealed originals: no model ran
    # The API fills the same hook.
    t = api.Timings()
    api.anonymize(img, keys.KeySource.from_key_file(key), model=str(pixel_model), timings=t,
                  options=Options.of(aligned=True, steps=3, lossless=False))
    assert t.calls > 6 and t.faces == 1 and t.seconds["model"] > 0
