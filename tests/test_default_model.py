"""The pulled model is the default: `models pull` and `models default` choose it,
$FACEVEIL_MODEL comes first, `builtin` goes back; a chosen model that went missing or is
damaged is exit 5, never a silent fall-back; loads print nothing. Tiny models laid out as
a Hugging Face cache, offline."""

from __future__ import annotations

import json
import shutil

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceveil import api
from faceveil.cli import main
from faceveil.diffusion import backends, hub, models
from faceveil.pipeline.anonymize import resolution_notes

from .conftest import smooth_image
from .tinymodels import make_latent_model, make_pixel_model

pytestmark = pytest.mark.slow  # tiny models built and loaded through torch
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "someone/tiny-default"


def _cache(cache, repo: str, make):
    """A model where huggingface_hub keeps a downloaded ``repo``."""
    root = cache / ("models--" + repo.replace("/", "--"))
    folder = make(root / "snapshots" / COMMIT)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    return folder


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A machine with its own faceveil cache and Hugging Face cache, no default chosen."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("FACEVEIL_CACHE", str(tmp_path / "fv"))
    monkeypatch.delenv("FACEVEIL_MODEL", raising=False)
    backends.cached_torch.cache_clear()
    Image.fromarray(smooth_image(32, seed=3)).save(tmp_path / "face.png")
    (tmp_path / "k.key").write_text(f"faceveil-key-v1\n{bytes(range(32)).hex()}\n")
    (tmp_path / "k.key").chmod(0o600)  # as keygen makes it: no permission warning
    yield tmp_path
    backends.cached_torch.cache_clear()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def anonymize(tmp, out: str, *extra):
    return run("anonymize", tmp / "face.png", "-o", tmp / out, "--aligned", "-k",
               tmp / "k.key", "--steps", 2, *extra)


def model_of(path) -> dict:
    return json.loads(run("inspect", path).output)["model"]["reference"]


def test_the_pulled_model_becomes_the_default_and_builtin_goes_back(machine, monkeypatch):
    tmp = machine
    _cache(tmp / "hub", REPO, make_pixel_model)
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download",  # the download: a filled cache
                        lambda *a, **k: real(*a, **{**k, "local_files_only": True}))
    assert hub.default_model().builtin
    r = run("models", "pull", REPO)
    assert r.exit_code == 0, r.output
    assert f"the default model is now {REPO}" in r.output
    assert json.loads((tmp / "fv" / "settings.json").read_text()) == {"default_model": REPO}

    r = anonymize(tmp, "a.png")  # no --model: the pulled one, and it says so
    assert r.exit_code == 0, r.output
    assert f"model: {REPO} (the default, chosen by" in r.output
    assert model_of(tmp / "a.png") == {"hub": REPO, "revision": COMMIT}
    r = run("models")
    assert r.exit_code == 0 and f"default: {REPO} (chosen by" in r.output

    # $FACEVEIL_MODEL comes first; `builtin` there means the built-in model.
    monkeypatch.setenv("FACEVEIL_MODEL", "builtin")
    r = anonymize(tmp, "b.png", "-q")
    assert r.exit_code == 0 and r.output == ""  # -q: quiet
    assert model_of(tmp / "b.png") == {"preset": hub.DEFAULT_MODEL}
    monkeypatch.delenv("FACEVEIL_MODEL")

    r = run("models", "default", "builtin")
    assert r.exit_code == 0 and "built-in" in r.output
    r = anonymize(tmp, "c.png")
    assert r.exit_code == 0 and "model:" not in r.output
    assert model_of(tmp / "c.png") == {"preset": hub.DEFAULT_MODEL}
    assert "* face64-v2" in run("models").output

    # A model that is not here cannot become the default: exit 5 with the pull command.
    r = run("models", "default", "someone/not-here")
    assert r.exit_code == 5 and "faceveil models pull someone/not-here" in r.output
    assert hub.default_model().builtin


def test_a_deleted_default_is_exit_5_with_the_pull_command_never_a_fallback(machine):
    tmp = machine
    folder = _cache(tmp / "hub", REPO, make_pixel_model)
    assert run("models", "default", REPO).exit_code == 0
    shutil.rmtree(folder.parent.parent)  # the cache was cleaned
    r = anonymize(tmp, "a.png")
    assert r.exit_code == 5, r.output
    assert f"faceveil models pull {REPO}" in r.output and "models default builtin" in r.output
    assert not (tmp / "a.png").exists()
    # A default folder that went away: the same, naming where the default came from.
    folder = make_pixel_model(tmp / "mine")
    assert run("models", "default", folder).exit_code == 0
    shutil.rmtree(folder)
    r = anonymize(tmp, "a.png")
    assert r.exit_code == 5 and "settings.json" in r.output and "default builtin" in r.output
    assert not (tmp / "a.png").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_weights_in_the_cache_are_exit_5_naming_the_file(machine, damage):
    tmp = machine
    folder = _cache(tmp / "hub", REPO, make_pixel_model)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\0" * 4096)
    assert run("models", "default", REPO).exit_code == 0
    r = anonymize(tmp, "a.png")
    assert r.exit_code == 5, r.output
    assert str(weights) in r.output and "Traceback" not in r.output
    assert not (tmp / "a.png").exists()


def test_an_unreadable_settings_file_is_exit_5_naming_it_and_can_be_repaired(machine):
    tmp = machine
    (tmp / "fv").mkdir()
    (tmp / "fv" / "settings.json").write_text("{not json")
    r = anonymize(tmp, "a.png")
    assert r.exit_code == 5 and str(tmp / "fv" / "settings.json") in r.output
    assert run("models", "default", "builtin").exit_code == 0
    assert anonymize(tmp, "a.png", "-q").exit_code == 0


def test_the_pull_note_appears_only_when_no_real_model_is_here(machine):
    """Faces far larger than the built-in model's crops: the note names the pull command
    while no real checkpoint is here, and the one that is here once it is."""
    tmp = machine
    img = np.zeros((600, 600, 3), np.uint8)
    builtin = backends.get_model(None, backend="auto")
    regions = [api.box_region(img, (20, 20, 400, 400), model=builtin, index=0)]
    notes = resolution_notes(regions, builtin)
    assert len(notes) == 1 and "faceveil models pull ldm-celebahq-256" in notes[0]
    _cache(tmp / "hub", hub.PRESETS["ldm-celebahq-256"].repo, lambda f: (
        f.mkdir(parents=True), (f / "model_index.json").write_text("{}"), f)[-1])
    notes = resolution_notes(regions, builtin)
    assert len(notes) == 1 and "pull" not in notes[0]
    assert "--model ldm-celebahq-256" in notes[0]


def test_a_bin_only_snapshot_loads_without_an_error_looking_line(tmp_path, capfd):
    """CompVis/ldm-celebahq-256's unet/ holds only diffusion_pytorch_model.bin: diffusers
    tried safetensors first and logged an error, although the load succeeded."""
    folder = make_latent_model(tmp_path / "ldm", kind="vq")
    for name in ("unet", "vqvae"):
        module = models.load_folder(folder).unet if name == "unet" else None
        if module is None:
            from diffusers import VQModel

            module = VQModel.from_pretrained(folder / name, low_cpu_mem_usage=False)
        shutil.rmtree(folder / name)
        module.save_pretrained(folder / name, safe_serialization=False)
    assert not list(folder.rglob("*.safetensors"))
    capfd.readouterr()
    backbone = models.load_folder(folder)
    assert backbone.vae_kind == "vq"
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
