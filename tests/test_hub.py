"""Real checkpoints one command away, tested offline: tiny random models of each layout in
a Hugging Face cache (HF_HOME set here, HF_HUB_OFFLINE=1) load by hub id, anonymize and
recover; the authors' ffhq-diffusers folder layout loads with --model DIR; `models pull`
without a network is a clear exit 5, an unknown name exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil.diffusion import hub, models

from .conftest import centre_mask, smooth_image
from .isolated import offline_cli
from .tinymodels import make_latent_model, make_pixel_model, make_sd_model

pytestmark = pytest.mark.slow
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache(home: Path, repo: str, make) -> Path:
    """Put a model where huggingface_hub keeps a downloaded ``repo`` under HF_HOME."""
    root = home / "hub" / ("models--" + repo.replace("/", "--"))
    folder = make(root / "snapshots" / COMMIT)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    return folder


def _cli(*args, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    return offline_cli(*args, home=home, cwd=cwd, timeout=600)


@pytest.fixture
def inputs(tmp_path):
    x = smooth_image(32, seed=7)
    Image.fromarray(x).save(tmp_path / "face.png")
    Image.fromarray(centre_mask().astype(np.uint8) * 255).save(tmp_path / "mask.png")
    key = tmp_path / "k.key"
    key.write_text(f"faceveil-key-v1\n{bytes(range(32)).hex()}\n")
    return x, key


@pytest.mark.parametrize("layout", ["pixel", "ldm-vq", "sd"])
def test_a_model_in_the_hub_cache_loads_by_id_anonymizes_and_recovers(tmp_path, inputs,
                                                                       layout):
    x, key = inputs
    home = tmp_path / "hf"
    make = {"pixel": make_pixel_model, "ldm-vq": lambda f: make_latent_model(f, kind="vq"),
            "sd": make_sd_model}[layout]
    repo = f"someone/tiny-{layout}"
    _cache(home, repo, make)
    common = ["-k", key, "-q"]
    r = _cli("anonymize", "face.png", "-o", "anon.png", "--model", repo, "--mask", "mask.png",
             "--steps", 3, "--no-lossless", *common, home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    record = json.loads(_cli("inspect", "anon.png", home=home, cwd=tmp_path).stdout)
    assert record["model"]["reference"] == {"hub": repo, "revision": COMMIT}
    # Recovery finds the model the file names, in the same cache, without --model.
    r = _cli("recover", "anon.png", "-o", "back.png", *common, home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    back = np.asarray(Image.open(tmp_path / "back.png").convert("RGB"))
    m = centre_mask()
    assert np.array_equal(back[~m], x[~m])  # outside the mask: as it was
    if layout != "sd":  # a tiny random KL autoencoder does not round-trip: no bound there
        assert np.abs(back.astype(int) - x.astype(int))[m].mean() < 25  # near the original
    if layout == "pixel":  # on a machine without the model: exit 5, naming the command
        (tmp_path / "empty").mkdir()
        r = _cli("recover", "anon.png", "-o", "again.png", *common, home=tmp_path / "empty",
                 cwd=tmp_path)
        assert r.returncode == 5 and f"faceveil models pull {repo}" in r.stderr, r.stderr
        assert not (tmp_path / "again.png").exists()


def test_a_missing_model_names_the_pull_command(tmp_path, inputs):
    _, key = inputs
    home = tmp_path / "hf"
    home.mkdir()
    r = _cli("anonymize", "face.png", "-o", "anon.png", "--model", "ldm-celebahq-256",
             "--aligned", "-k", key, "-q", home=home, cwd=tmp_path)
    assert r.returncode == 5 and "faceveil models pull ldm-celebahq-256" in r.stderr
    assert not (tmp_path / "anon.png").exists()


def test_pull_without_network_is_exit_5_naming_the_command(tmp_path):
    home = tmp_path / "hf"
    home.mkdir()
    r = _cli("models", "pull", "ldm-celebahq-256", home=home, cwd=tmp_path)
    assert r.returncode == 5, r.stderr
    assert "faceveil models pull ldm-celebahq-256" in r.stderr
    assert "hf download CompVis/ldm-celebahq-256" in r.stderr
    assert not (home / "pulled.json").exists()
    r = _cli("models", "pull", "no-such-model", home=home, cwd=tmp_path)
    assert r.returncode == 2 and "ldm-celebahq-256" in r.stderr and "sd15" in r.stderr


def test_pull_records_what_it_fetched_and_later_loads_check_it(tmp_path, monkeypatch):
    """A pull is huggingface_hub's download (here: a cache already filled), then one load
    to hash the weights; a later load of the same snapshot refuses other weights."""
    import huggingface_hub
    import huggingface_hub.constants

    from faceveil.diffusion import pull

    cache = tmp_path / "hub"
    folder = _cache(tmp_path, "someone/tiny-pull", make_pixel_model)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("FACEVEIL_CACHE", str(tmp_path / "fv"))
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: real(*a, **{**k, "local_files_only": True}))
    done = pull.pull("someone/tiny-pull")
    assert done.revision == COMMIT and done.folder == folder
    entry = json.loads((tmp_path / "fv" / "pulled.json").read_text())[str(folder.resolve())]
    assert entry["sha256"] == models.load_model("someone/tiny-pull").sha256
    # Other weights in the pulled snapshot: refused on load, naming the pull.
    shutil.rmtree(folder / "unet")
    make_pixel_model(tmp_path / "other", seed=3)
    shutil.copytree(tmp_path / "other" / "unet", folder / "unet")
    with pytest.raises(models.ModelError, match="pull it again"):
        models.load_model("someone/tiny-pull")


def test_the_authors_ffhq_diffusers_layout_loads_from_a_folder(tmp_path):
    """unet/ (UNet2DModel) and vqvae/ (VQModel), no model_index.json and no scheduler/:
    the CelebA-HQ LDM's scheduler is used."""
    folder = make_latent_model(tmp_path / "ffhq-diffusers", kind="vq")
    (folder / "model_index.json").unlink()
    shutil.rmtree(folder / "scheduler")
    bb = models.load_model(str(folder))
    assert bb.vae_kind == "vq" and bb.scheduler_config == models.LDM_SCHEDULER
    assert bb.prediction_type == "epsilon"
    (folder / "vqvae" / "config.json").unlink()
    shutil.rmtree(folder / "vqvae")  # a bare UNet with no scheduler: refused, said why
    with pytest.raises(models.ModelError, match="scheduler"):
        models.load_model(str(folder))


def test_presets_have_a_repository_or_built_in_weights():
    for preset in hub.PRESETS.values():
        assert (preset.folder is None) != (preset.repo is None)
