"""The built-in model through onnxruntime: the shipped graph against the torch model it
was exported from, the schedule built without diffusers, and which runtime each kind of
file gets (numerics may change only where recovery never runs the model)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceveil import api, keys
from faceveil.diffusion import backends, hub, models
from faceveil.diffusion import onnx as fonnx
from faceveil.diffusion.engine import Engine, ddim_timesteps, make_schedule
from faceveil.errors import InputError, ModelError
from faceveil.options import SPACINGS, FixedKeys, Options

from .conftest import psnr
from .tinymodels import make_pixel_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
import onnx_graph  # noqa: E402

BUILTIN = hub.WEIGHTS_DIR / "face64-v2"
FACE = Path(__file__).parent / "data" / "gan_faces.png"


@pytest.fixture(scope="module")
def builtin():
    return (backends.get_model("face64-v2", "cpu", backend="onnx"),
            backends.get_model("face64-v2", "cpu"))


def test_the_shipped_graph_computes_what_the_torch_model_computes(builtin):
    fast, exact = builtin
    assert fonnx.has_graph(BUILTIN) and backends.runtime_of(fast) == "onnx"
    assert backends.runtime_of(exact) == "torch"
    # Same weights, same identity: a file records the same model whichever runtime made it.
    assert fast.sha256 == exact.sha256 == models.weights_hash(exact.unet)
    assert fast.describe() == exact.describe()
    g = torch.Generator().manual_seed(0)
    for batch, t in ((1, 999), (2, 500), (5, 37), (3, 0)):
        z = torch.randn(batch, *exact.latent_shape, generator=g)
        want = exact.predict(z, t).numpy()
        got = fast.predict(z.numpy(), t)
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-4
        # A face's output does not depend on the faces beside it in the batch.
        assert np.array_equal(fast.predict(z.numpy()[:1], t), got[:1])
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    assert np.array_equal(fast.encode(x.numpy()), exact.encode(x).numpy())
    z = exact.encode(x)
    assert np.array_equal(fast.decode(z.numpy()), exact.decode(z).numpy())


def test_the_chain_is_built_without_diffusers_as_diffusers_builds_it(builtin):
    fast, exact = builtin
    for spacing in SPACINGS:
        for steps in (1, 2, 3, 7, 10, 25, 49, 50, 100, 333, 1000):
            try:
                want = make_schedule(exact.scheduler_config, steps, spacing)
            except ValueError as e:  # a spacing that repeats a timestep: refused alike
                with pytest.raises(ValueError, match="repeat"):
                    make_schedule(fast.scheduler_config, steps, spacing, fast.ddim_alphas)
                assert "repeat" in str(e)
                continue
            assert make_schedule(fast.scheduler_config, steps, spacing,
                                 fast.ddim_alphas) == want
    assert Engine(fast, steps=25, spacing="trailing").schedule == make_schedule(
        exact.scheduler_config, 25, "trailing")


@pytest.mark.parametrize("offset", [0, 1])
def test_timesteps_are_diffusers_own(offset):
    from diffusers import DDIMScheduler

    config = {"num_train_timesteps": 1000, "steps_offset": offset}
    for spacing in SPACINGS:
        for steps in (1, 4, 20, 50, 999):
            s = DDIMScheduler.from_config({**config, "timestep_spacing": spacing})
            s.set_timesteps(steps)
            assert ddim_timesteps(config, steps, spacing) == [int(t) for t in s.timesteps]


def test_runtime_follows_how_the_file_is_recovered():
    def runtime(**kw):
        return backends.runtime_of(api.get_model(None, "cpu", options=Options.of(**kw)))

    assert runtime() == "onnx"  # sealed originals, fresh noise: recovery never runs it
    assert runtime(backend="torch") == "torch"
    assert runtime(lossless=False) == "torch"  # diffusion recovery: torch's numerics
    assert runtime(deniable=True) == "torch"
    assert runtime(method="exact-steps") == "torch"  # a diffusion-style file, even sealed
    with pytest.raises(InputError, match="--backend onnx"):
        runtime(lossless=False, backend="onnx")
    assert runtime(lossless=False, backend="auto") == "torch"
    # Another device, or a model without a graph, keeps torch.
    assert backends.runtime_of(api.get_model("face64-v1", "cpu", options=Options())) == "torch"
    with pytest.raises(ModelError, match="no onnxruntime graph"):
        api.get_model("face64-v1", "cpu", options=Options.of(backend="onnx"))
    # Given the fast model where exact numerics are needed, the torch one is used.
    fast = api.get_model(None, "cpu", options=Options())
    assert backends.runtime_of(backends.get_model(fast)) == "torch"


@pytest.mark.slow
def test_sealed_faces_look_the_same_on_both_runtimes_and_diffusion_files_stay_exact(tmp_path):
    keys.generate_key_file(tmp_path / "k.key")
    key = keys.KeySource.from_key_file(tmp_path / "k.key")
    face = np.ascontiguousarray(np.asarray(Image.open(FACE).convert("RGB"))[:, :64])
    fixed = FixedKeys(salt=bytes(16), nonces=(bytes(range(16)),))
    fast = api.anonymize(face, key, options=Options.of(aligned=True), fixed=fixed)
    exact = api.anonymize(face, key, options=Options.of(aligned=True, backend="torch"),
                          fixed=fixed)
    assert fast.record.public()["model"] == exact.record.public()["model"]
    assert psnr(fast.pixels, exact.pixels) > 40
    assert np.array_equal(api.recover(fast.png_bytes(), key).pixels, face)
    # The fast model given for a diffusion file: the torch one runs instead, so the file
    # is the one the torch model makes, bit for bit.
    options = Options.of(aligned=True, lossless=False, steps=4)
    given = api.anonymize(face, key, options=options, fixed=fixed,
                          model=api.get_model(None, "cpu", options=Options()))
    plain = api.anonymize(face, key, options=options, fixed=fixed)
    assert np.array_equal(given.pixels, plain.pixels)


def test_a_graph_exported_here_matches_torch_and_refuses_other_weights(tmp_path):
    folder = make_pixel_model(tmp_path / "tiny", seed=4)
    onnx_graph.export(folder)
    fast = fonnx.load(folder, {"path": str(folder)})
    exact = models.load_folder(folder)
    assert fast.sha256 == exact.sha256
    z = torch.randn(3, *exact.latent_shape, generator=torch.Generator().manual_seed(2))
    assert np.abs(fast.predict(z.numpy(), 300) - exact.predict(z, 300).numpy()).max() < 1e-5
    # The same graph beside other weights: not run.
    other = make_pixel_model(tmp_path / "other", seed=5)
    shutil.copy(folder / fonnx.GRAPH, other / fonnx.GRAPH)
    with pytest.raises(ModelError, match="exported for other weights"):
        fonnx.load(other, {"path": str(other)})
