"""The opt-in GPU fast paths of the backbone: a no-op on CPU, strict option parsing."""

import pytest
import torch

from faceveil.diffusion import accelerate, models
from faceveil.errors import ModelError


@pytest.fixture
def backbone(pixel_model):
    return models.load_model(str(pixel_model))


def test_accelerate_is_a_no_op_on_cpu(backbone):
    z = torch.randn(2, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    before = backbone.predict(z, 500)
    unet = backbone.unet
    assert backbone.accelerate(cuda_graphs=True, compile=True, tf32=True) is backbone
    assert backbone.fast_call is None and backbone.acceleration == {}
    assert backbone.unet is unet  # not wrapped, not compiled
    assert torch.equal(backbone.predict(z, 500), before)


def test_graphed_call_stays_eager_for_cpu_tensors():
    calls = []

    def call(z, t):
        calls.append(z.shape)
        return z * 2

    graphed = accelerate.GraphedCall(call)
    z = torch.ones(1, 3, 4, 4)
    assert torch.equal(graphed(z, torch.zeros(1, dtype=torch.long)), z * 2)
    assert graphed.graphs == {} and calls == [(1, 3, 4, 4)]


def test_acceleration_from_env(monkeypatch, backbone, pixel_model):
    monkeypatch.delenv(accelerate.ACCELERATE_ENV, raising=False)
    assert accelerate.acceleration_from_env() is None
    monkeypatch.setenv(accelerate.ACCELERATE_ENV, "cuda-graphs, tf32")
    assert accelerate.acceleration_from_env() == {"cuda_graphs": True, "compile": False,
                                              "tf32": True}
    # Loading with the variable set works on CPU and changes nothing there.
    loaded = models.load_model(str(pixel_model))
    assert loaded.fast_call is None and loaded.sha256 == backbone.sha256
    monkeypatch.setenv(accelerate.ACCELERATE_ENV, "bf16")
    with pytest.raises(ModelError, match="bf16"):
        accelerate.acceleration_from_env()


def test_cuda_asked_for_but_absent_is_a_clear_error(tmp_path, face_files, pixel_model):
    from click.testing import CliRunner

    from faceveil.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    img, mask, key = face_files
    r = CliRunner().invoke(main, ["anonymize", str(img), "-o", str(tmp_path / "a.png"), "-k",
                                  str(key), "-m", str(pixel_model), "--aligned", "--device",
                                  "cuda"])
    assert r.exit_code == 1 and "no CUDA device" in r.output
    assert not (tmp_path / "a.png").exists()
