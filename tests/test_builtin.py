"""The built-in model: ships with the package, is the default, works offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceveil import api, keys
from faceveil.cli import main
from faceveil.diffusion import hub
from faceveil.evaluation import realism

from .conftest import psnr
from .records import rewrite

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_builtin_model_is_the_default_and_declares_its_framing():
    bb = api.get_model(None)
    assert bb.reference == {"preset": hub.DEFAULT_MODEL}
    assert bb.image_size == 64 and bb.patch_size == 4 and bb.latent_shape == (48, 16, 16)
    assert bb.prediction_type == "v_prediction"
    assert not bb.scheduler_config.get("clip_sample")
    lm = np.asarray(bb.framing["landmarks68"])
    assert lm.shape == (68, 2) and ((lm > -0.1) & (lm < 1.1)).all()
    assert bb.model_id == f"faceveil-{hub.DEFAULT_MODEL}"
    for name in ("face64-v1", "face64-v2"):
        card = (hub.WEIGHTS_DIR / name / "MODEL_CARD.md").read_text()
        assert "DigiFace1M" in card and "non-commercial" in card


def test_default_model_makes_faces_a_detector_sees():
    # A realism floor: face64-v2 gives 6 of these 8 samples that dlib's CNN detects,
    # face64-v1 none (its samples are noise with a face layout).
    bb = api.get_model(None)
    samples = realism.model_samples(bb, 8, steps=10, seed=0)
    assert realism.detection_rate(samples, "cnn") >= 0.5


def test_builtin_models_are_distinct_immutable_presets():
    v1, v2 = api.get_model("face64-v1"), api.get_model("face64-v2")
    assert v1.model_id == "faceveil-face64-v1" and v2.model_id == "faceveil-face64-v2"
    assert v1.sha256 != v2.sha256
    rows = {r["name"]: r for r in json.loads(run("models", "--json").stdout)}
    assert rows["face64-v2"]["default"] and not rows["face64-v1"]["default"]
    assert rows["face64-v1"]["available"] and rows["face64-v2"]["available"]


def test_photo_with_the_builtin_model(tmp_path):
    key = tmp_path / "k.key"
    run("keygen", "-o", key)
    out = tmp_path / "anon.png"
    r = run("anonymize", DATA / "obama.jpg", "-o", out, "-k", key, "--steps", 5, "-q")
    assert r.exit_code == 0, r.output
    assert len(json.loads(run("inspect", out).stdout)["faces"]) == 1


@pytest.fixture
def aligned_face(tmp_path):
    face = tmp_path / "face.png"
    grid = np.asarray(Image.open(DATA / "gan_faces.png").convert("RGB"))
    Image.fromarray(grid[:, 64:128]).save(face)  # a held-out DCGAN face (seed 1)
    key = tmp_path / "k.key"
    run("keygen", "-o", key)
    return face, key


@pytest.mark.parametrize("model", [None, "face64-v1"])
def test_aligned_face_round_trip_recovers_without_model_flag(tmp_path, aligned_face, model):
    # All defaults; and a file made with the superseded face64-v1 still recovers with the
    # default installation, which finds the model the file names.
    face, key = aligned_face
    anon, back = tmp_path / "anon.png", tmp_path / "back.png"
    flags = [] if model is None else ["--model", model]
    r = run("anonymize", face, "-o", anon, "-k", key, "--aligned", "-q", *flags)
    assert r.exit_code == 0, r.output
    record = json.loads(run("inspect", anon).stdout)
    name = model or hub.DEFAULT_MODEL
    assert record["model"]["reference"] == {"preset": name}
    assert record["model"]["id"] == f"faceveil-{name}"
    assert run("recover", anon, "-o", back, "-k", key, "-q").exit_code == 0  # no --model
    original = np.asarray(Image.open(face))
    mask = api.open_record(anon, keys.KeySource.from_key_file(key)).faces[0].mask
    assert psnr(np.asarray(Image.open(anon))[mask], original[mask]) < 25
    # Near-exact, not bit-exact: how close depends on the key, since the noise is mixed
    # at face64-v2's mixing_rms (this face over 6 random keys: 34.1 to 44.5 dB; held-out
    # faces: 41.9 dB median, benchmarks/builtin_quality.py).
    assert psnr(np.asarray(Image.open(back))[mask], original[mask]) > 30


def test_weights_that_differ_from_the_files_are_refused(tmp_path, aligned_face):
    face, key = aligned_face
    anon = tmp_path / "anon.png"
    r = run("anonymize", face, "-o", anon, "-k", key, "--aligned", "--steps", 2, "--deniable",
            "-q")
    assert r.exit_code == 0, r.output
    # Other weights given with --model: refused, naming the way out.
    r = run("recover", anon, "-o", tmp_path / "b.png", "-k", key, "--model", "face64-v1",
            "--deniable", "-q")
    assert r.exit_code == 5 and "not the one this file was made with" in r.output
    assert "--model" in r.output and not (tmp_path / "b.png").exists()
    # A built-in name whose weights this installation does not have: the file names the
    # release that made it.
    stored = rewrite(api.read_record(anon), lambda r: r["model"].update(sha256="0" * 64))
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(stored))
    r = run("recover", anon, "-o", tmp_path / "b.png", "-k", key, "--meta", meta,
            "--deniable", "-q")
    assert r.exit_code == 5, r.output
    assert "built-in model 'face64-v2'" in r.output and "recover it with that release" in r.output
