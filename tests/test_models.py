"""Model loading: folders, presets, hub ids offline, weight hashes, latent layouts."""

import json

import numpy as np
import pytest
import torch

from faceveil.diffusion import hub, models
from faceveil.errors import ModelError

from .conftest import centre_mask, psnr, smooth_image
from .tinymodels import make_latent_model, make_pixel_model, make_sd_model


def test_pixel_folder_loads_with_patch_folding(pixel_model):
    bb = models.load_model(str(pixel_model))
    assert bb.image_size == 32 and bb.latent_shape == (12, 16, 16)
    assert bb.prediction_type == "v_prediction"
    assert bb.reference == {"path": str(pixel_model.resolve())}
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = bb.encode(x)
    assert z.shape == (2, 12, 16, 16)
    assert torch.equal(bb.decode(z), x)  # folding pixels is exactly invertible
    assert bb.predict(z, 10).shape == z.shape


def test_latent_mask_covers_every_touched_cell(pixel_model):
    bb = models.load_model(str(pixel_model))
    m = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    m[0, 0, 5, 9] = True
    lm = bb.latent_mask(m)
    assert lm.shape == (1, 1, 16, 16) and lm.sum() == 1 and lm[0, 0, 2, 4]


@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_latent_models_load(tmp_path, kind):
    folder = make_latent_model(tmp_path / kind, kind=kind)
    bb = models.load_model(str(folder))
    assert bb.vae_kind == kind and bb.image_size == 32 and bb.latent_shape == (3, 16, 16)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    z = bb.encode(x)
    assert z.shape == (1, 3, 16, 16)
    assert torch.equal(bb.encode(x), z)  # deterministic encoding (no posterior sampling)
    assert bb.decode(z).shape == x.shape


def test_weights_hash_identifies_weights(tmp_path, pixel_model):
    a = models.load_model(str(pixel_model))
    other = make_pixel_model(tmp_path / "other", seed=1)
    b = models.load_model(str(other))
    assert a.sha256 != b.sha256
    assert models.load_model(str(pixel_model)).sha256 == a.sha256
    with pytest.raises(ModelError, match="not the one this file was made with"):
        models.load_model(str(other), expect_sha256=a.sha256)


def test_references():
    assert hub.parse_reference("sd15") == {"preset": "sd15"}
    assert hub.parse_reference(None) == {"preset": hub.DEFAULT_MODEL}
    assert hub.parse_reference("CompVis/ldm-celebahq-256@abc") == {
        "hub": "CompVis/ldm-celebahq-256", "revision": "abc"}
    with pytest.raises(ModelError, match="unknown model"):
        hub.parse_reference("not a model")


def test_missing_hub_weights_say_what_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        models.load_model("sd15")
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in str(e.value)
    assert "--model" in str(e.value)


def test_not_a_model_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="model_index.json"):
        models.load_model(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DModel"]}))
    with pytest.raises(ModelError):
        models.load_model(str(bad))


def _fake_hub_cache(monkeypatch, cache, repo, make):
    """Put a tiny model where huggingface_hub would have downloaded ``repo``."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    make(root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return commit


@pytest.mark.parametrize(
    ("preset", "make", "kind"),
    [("ldm-celebahq-256", lambda f: make_latent_model(f, kind="vq"), "vq"),
     ("sd15", lambda f: make_sd_model(f), "kl"),
     ("sd21-base", lambda f: make_sd_model(f, seed=1), "kl")],
)
def test_presets_load_through_the_hub_cache(tmp_path, monkeypatch, preset, make, kind):
    repo = hub.PRESETS[preset].repo
    commit = _fake_hub_cache(monkeypatch, tmp_path / "hub", repo, make)
    assert hub.available_locally(hub.PRESETS[preset])
    bb = models.load_model(preset)
    assert bb.vae_kind == kind
    assert bb.reference == {"preset": preset, "revision": commit}
    assert (bb.prompt_embedding is not None) == preset.startswith("sd")
    z = bb.encode(torch.rand(1, 3, bb.image_size, bb.image_size) * 2 - 1)
    assert bb.predict(z, 10).shape == z.shape
    # The stored reference loads the same weights again.
    assert models.load_model(bb.reference, expect_sha256=bb.sha256).sha256 == bb.sha256


def test_stable_diffusion_folder_and_hub_id(tmp_path, monkeypatch):
    folder = make_sd_model(tmp_path / "sd")
    bb = models.load_model(str(folder))
    assert bb.prompt_embedding.shape[0] == 1 and bb.latent_shape == (4, 16, 16)
    _fake_hub_cache(monkeypatch, tmp_path / "hub", "someone/tiny-sd", make_sd_model)
    assert models.load_model("someone/tiny-sd").reference["hub"] == "someone/tiny-sd"


def test_models_command_lists_presets():
    from click.testing import CliRunner

    from faceveil.cli import main

    r = CliRunner().invoke(main, ["models", "--json"])
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert set(rows) == set(hub.PRESETS)
    assert rows[hub.DEFAULT_MODEL]["default"] and rows[hub.DEFAULT_MODEL]["resolution"] == 64


# --- broken model folders and weights that are not the file's -------------------------


def _builtin_copy(tmp_path):
    """A model folder sharing the default built-in model's files (linked, not copied)."""
    src = hub.WEIGHTS_DIR / hub.DEFAULT_MODEL
    folder = tmp_path / "copy"
    folder.mkdir()
    for part in ("unet", "scheduler", "model_index.json"):
        (folder / part).symlink_to(src / part)
    (folder / "faceveil.json").write_text((src / "faceveil.json").read_text())
    return folder


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "has no faceveil.json, and its UNet takes 48 channels at 16x16"),
     ("{not json", "is not readable JSON"),
     ("[1, 2]", "not a JSON object"),
     ('{"patch_size": 0}', "patch_size must be a positive integer"),
     ('{"patch_size": 2}', "does not fit the UNet"),
     ('{"patch_size": 4, "id": 3}', "id must be a non-empty string"),
     ('{"patch_size": 4, "framing": {"landmarks68": [[0.1, 0.2]]}}', "68 \\[u, v\\] number")],
)
def test_missing_or_malformed_faceveil_json_says_what_to_do(tmp_path, content, match):
    folder = _builtin_copy(tmp_path)
    if content is None:
        (folder / "faceveil.json").unlink()
    else:
        (folder / "faceveil.json").write_text(content)
    with pytest.raises(ModelError, match=match) as e:
        models.load_model(str(folder))
    assert "copy faceveil.json from the folder this model came from" in str(e.value)


def test_cli_exits_5_on_a_broken_model_folder(tmp_path, face_files):
    from click.testing import CliRunner

    from faceveil.cli import main

    folder = _builtin_copy(tmp_path)
    (folder / "faceveil.json").unlink()
    img, _, key = face_files
    r = CliRunner().invoke(main, ["anonymize", str(img), "-o", str(tmp_path / "a.png"), "-k",
                                  str(key), "--aligned", "--model", str(folder), "-q"])
    assert r.exit_code == 5, r.output
    assert "has no faceveil.json" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "a.png").exists()


def test_fp16_and_fp32_weights_load_alike(tmp_path):
    from diffusers import UNet2DModel
    from safetensors import safe_open

    fp16 = models.load_model(hub.DEFAULT_MODEL)
    folder = _builtin_copy(tmp_path)
    (folder / "unet").unlink()
    src = hub.WEIGHTS_DIR / hub.DEFAULT_MODEL
    UNet2DModel.from_pretrained(src, subfolder="unet").save_pretrained(
        folder / "unet")  # the same values, stored as fp32
    with safe_open(folder / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float32
    with safe_open(src / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    fp32 = models.load_model(str(folder), expect_sha256=fp16.sha256)  # same identity
    assert fp32.sha256 == fp16.sha256 and fp32.dtype == fp16.dtype == torch.float32


def test_bfloat16_only_where_the_sealed_original_brings_the_face_back(tmp_path):
    """backend auto: a sealed run may use the CPU's native bfloat16 (it changes the new
    face by rounding only); backend torch, and every file recovered by diffusion, keep
    float32, bit for bit."""
    from faceveil import api, keys
    from faceveil.diffusion import backends
    from faceveil.options import FixedKeys, Options


    folder = make_latent_model(tmp_path / "vq")
    exact = backends.get_model(str(folder), "cpu", backend="torch")
    fast = backends.get_model(str(folder), "cpu", backend="auto")
    if fast is exact:
        pytest.skip("this CPU has no native bfloat16: auto keeps float32")
    assert fast.autocast == torch.bfloat16 and fast.unet is exact.unet  # weights shared
    assert backends.get_model(fast, backend="torch").autocast is None  # never bf16 on request
    key = keys.KeySource.from_bytes(bytes(range(32)))
    x, m = smooth_image(), centre_mask()

    def run(model, **opts):
        return api.anonymize(x, key, model=model, mask=m, options=Options.of(steps=3, **opts),
                             fixed=FixedKeys(salt=b"s" * 16, nonces=(b"n" * 16,)))

    a, b = run(fast), run(exact, backend="torch")
    assert not np.array_equal(a.pixels, b.pixels)  # rounded otherwise: the face differs...
    assert psnr(a.pixels, b.pixels) > 30  # ...a little
    assert np.array_equal(api.recover(a.pixels, key, meta=a.record).pixels, x)  # sealed
    # Diffusion-recoverable files are made in float32 whatever model object is passed.
    c, d = run(fast, lossless=False), run(exact, lossless=False)
    assert np.array_equal(c.pixels, d.pixels)
