"""The built-in model: ships with the package, is the default, works offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from faceveil import api, keys, models
from faceveil.cli import main

from .conftest import psnr

DATA = Path(__file__).parent / "data"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_builtin_model_is_the_default_and_declares_its_framing():
    bb = api.get_model(None)
    assert bb.reference == {"preset": models.DEFAULT_MODEL}
    assert bb.image_size == 64 and bb.patch_size == 4 and bb.latent_shape == (48, 16, 16)
    assert bb.prediction_type == "v_prediction"
    assert not bb.scheduler_config.get("clip_sample")
    lm = np.asarray(bb.framing["landmarks68"])
    assert lm.shape == (68, 2) and ((lm > -0.1) & (lm < 1.1)).all()
    card = models.WEIGHTS_DIR / "face64-v1" / "MODEL_CARD.md"
    assert "DigiFace1M" in card.read_text() and "non-commercial" in card.read_text()


def test_aligned_face_round_trip_with_no_model_flag(tmp_path):
    face = tmp_path / "face.png"
    grid = np.asarray(Image.open(DATA / "gan_faces.png").convert("RGB"))
    Image.fromarray(grid[:, 64:128]).save(face)  # a held-out DCGAN face (seed 1)
    key = tmp_path / "k.key"
    run("keygen", "-o", key)
    anon, back = tmp_path / "anon.png", tmp_path / "back.png"
    r = run("anonymize", face, "-o", anon, "-k", key, "--aligned", "-q")  # all defaults
    assert r.exit_code == 0, r.output
    record = json.loads(run("inspect", anon).stdout)
    assert record["model"]["reference"] == {"preset": "face64-v1"}
    assert run("recover", anon, "-o", back, "-k", key, "-q").exit_code == 0
    original = np.asarray(Image.open(face))
    mask = api.open_record(anon, keys.KeySource.from_key_file(key)).faces[0].mask
    assert psnr(np.asarray(Image.open(anon))[mask], original[mask]) < 25
    assert psnr(np.asarray(Image.open(back))[mask], original[mask]) > 40


def test_photo_with_the_builtin_model(tmp_path):
    key = tmp_path / "k.key"
    run("keygen", "-o", key)
    out = tmp_path / "anon.png"
    r = run("anonymize", DATA / "obama.jpg", "-o", out, "-k", key, "--steps", 5, "-q")
    assert r.exit_code == 0, r.output
    assert len(json.loads(run("inspect", out).stdout)["faces"]) == 1
