"""Faces made for how they look, with the originals sealed (the default): fresh keyed
noise inside the mask, DDPM-like sampling, colour matched to the surrounding skin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceveil import api, faces, keys
from faceveil.diffusion.engine import Engine, ddim_sigma
from faceveil.errors import InputError
from faceveil.format import auth
from faceveil.options import DIFFUSION_SAMPLING, SEALED_SAMPLING, Options, Sampling
from faceveil.pipeline import harmonize

from .conftest import centre_mask, smooth_image
from .tinymodels import GaussianDenoiser

KEY = keys.KeySource.from_bytes(bytes(range(32)))


def test_keyed_normals_are_standard_normal_and_pinned():
    fk = keys.SecretKey(bytes(range(32)), bytes(16)).face(b"n" * 16)
    draws = fk.normal(200_000, "fresh/start")
    assert abs(draws.mean()) < 0.01 and abs(draws.std() - 1) < 0.01
    assert abs(((draws - draws.mean()) ** 4).mean() / draws.var() ** 2 - 3) < 0.05
    assert np.array_equal(fk.normal(7, "fresh/start"), draws[:7])  # a prefix of the stream
    assert not np.allclose(fk.normal(7, "fresh/step/1"), draws[:7])  # labels differ
    other = keys.SecretKey(bytes(range(32)), bytes(16)).face(b"m" * 16).normal(7, "fresh/start")
    assert not np.allclose(other, draws[:7])  # another face, other noise
    # Pinned (known answer): the new faces of every format-3 file depend on these draws.
    assert np.round(draws[:4], 6).tolist() == [1.300002, 0.157508, -1.259788, -1.039424]


def test_stochastic_denoising_follows_ddim_eq_16():
    assert ddim_sigma(0.5, 0.9, 0.0) == 0.0
    a_t, a_s = 0.3, 0.8  # one step from level t down to s
    expected = np.sqrt((1 - a_s) / (1 - a_t)) * np.sqrt(1 - a_t / a_s)
    assert ddim_sigma(a_t, a_s, 1.0) == pytest.approx(expected)
    model = GaussianDenoiser()
    engine = Engine(model, steps=10)
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.raises(ValueError, match="noise"):
        engine.denoise(z, eta=1.0)
    calls = []

    def noise(n):
        calls.append(n)
        return torch.randn(z.shape, generator=torch.Generator().manual_seed(n), dtype=z.dtype)

    a = engine.denoise(z, eta=1.0, noise=noise)
    b = engine.denoise(z, eta=1.0, noise=noise)
    assert torch.equal(a, b)  # the same draws give the same result
    assert calls == list(range(1, 10)) * 2  # no noise at the last step (clean level)
    assert not torch.allclose(a, engine.denoise(z))  # eta = 0 is another path


def test_fresh_sampling_keeps_the_outside_and_ignores_the_original_inside():
    model = GaussianDenoiser()
    engine = Engine(model, steps=10)
    g = torch.Generator().manual_seed(2)
    z0 = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    m = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    m[..., 2:6, 2:6] = True
    other = torch.where(m, torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64), z0)
    fresh = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    a = engine.sample(z0, m, fresh).z0
    b = engine.sample(other, m, fresh).z0
    inside = m.expand_as(z0)
    assert torch.equal(a[~inside], z0[~inside])
    assert torch.equal(a, b)  # nothing of the original inside the mask reaches the result


class Counted(GaussianDenoiser):
    """The Gaussian denoiser, counting its evaluations from outside the engine."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluations = 0

    def predict(self, z, t):
        self.evaluations += 1
        return super().predict(z, t)


def _noise(shape):
    return lambda n: torch.randn(shape, generator=torch.Generator().manual_seed(n),
                                 dtype=torch.float64)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_solver_first_order_is_the_ddim_step_and_second_order_converges(eta):
    model = GaussianDenoiser()
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    noise = _noise(z.shape)
    # Two steps: the first has no previous estimate and the last lands on clean data, so
    # both are first order, which is DDIM's step with the same eta and draws.
    two = Engine(model, steps=2, spacing="trailing")
    assert torch.allclose(two.denoise_dpm(z, eta=eta, noise=noise),
                          two.denoise(z, eta=eta, noise=noise), atol=1e-12)
    if eta:
        return
    # Deterministic: against the ODE's solution (DDIM at 1000 steps), the second-order
    # solver at 16 steps is more than twice as close as DDIM at 16 (at 32: 19 times).
    exact = Engine(model, steps=1000, spacing="trailing").denoise(z)
    some = Engine(model, steps=16, spacing="trailing")
    err_dpm = (some.denoise_dpm(z) - exact).abs().max()
    err_ddim = (some.denoise(z) - exact).abs().max()
    assert err_dpm < err_ddim / 2
    with pytest.raises(ValueError, match="eta"):
        some.denoise_dpm(z, eta=0.5, noise=noise)


def test_noised_context_costs_no_model_call_and_ignores_the_inside():
    model = Counted()
    engine = Engine(model, steps=6, spacing="trailing")
    g = torch.Generator().manual_seed(4)
    z0 = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    m = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    m[..., 2:6, 2:6] = True
    other = torch.where(m, torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64), z0)
    fresh, ctx = (torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    a = engine.sample(z0, m, fresh, eta=1.0, noise=_noise(z0.shape), context_noise=ctx,
                      solver="dpm++2m").z0
    assert model.evaluations == 6  # one call a step: no inversion
    b = engine.sample(other, m, fresh, eta=1.0, noise=_noise(z0.shape), context_noise=ctx,
                      solver="dpm++2m").z0
    inside = m.expand_as(z0)
    assert torch.equal(a[~inside], z0[~inside]) and torch.equal(a, b)
    model.evaluations = 0
    engine.sample(z0, m, fresh, eta=1.0, noise=_noise(z0.shape))
    assert model.evaluations == 12  # the DDIM chain inverts the outside first


def test_sealed_and_diffusion_defaults():
    assert Options().sampler == SEALED_SAMPLING
    assert Options.of(lossless=False).sampler == DIFFUSION_SAMPLING
    assert Options.of(deniable=True).sampler == DIFFUSION_SAMPLING
    # A diffusion-style choice takes the diffusion defaults for the rest, sealed or not.
    assert Options.of(method="exact-steps").sampler.flip == "mixed"
    assert Options.of(flip="signs").sampler.steps == DIFFUSION_SAMPLING.steps
    assert Options.of(steps=7).sampler == Sampling(**{**SEALED_SAMPLING.__dict__, "steps": 7})
    assert SEALED_SAMPLING.solver == "dpm++2m" and DIFFUSION_SAMPLING.solver == "ddim"
    with pytest.raises(InputError, match="fresh"):
        _ = Options.of(lossless=False, solver="dpm++2m").sampler
    with pytest.raises(InputError, match="eta 0 or 1"):
        _ = Options.of(eta=0.5).sampler
    assert Options.of(solver="ddim").sampler.passes == 2 and Options().sampler.passes == 1
    for bad in ({"flip": "fresh"}, {"eta": 0.5}, {"harmonize": True}):
        with pytest.raises(InputError, match="sealed originals"):
            _ = Options.of(lossless=False, **bad).sampler
    with pytest.raises(InputError):
        Sampling(eta=2.0)


def test_default_file_is_sealed_fresh_and_recovers_bit_exactly(pixel_model):
    x, m = smooth_image(), centre_mask()
    a = api.anonymize(x, KEY, model=str(pixel_model), mask=m, options=Options.of(steps=4))
    s = a.record.sampler
    assert (s.flip, s.eta, s.norm, s.recovery_methods) == ("fresh", 1.0, "none", ("lossless",))
    opened = auth.open(a.record, KEY)
    assert opened.faces[0].residual is None and opened.faces[0].radius is None
    assert np.array_equal(a.pixels[~m], x[~m]) and not np.array_equal(a.pixels[m], x[m])
    back = api.recover(a.png_bytes(), KEY)
    assert back.method == "lossless" and np.array_equal(back.pixels, x)
    with pytest.raises(InputError, match="recovery methods"):
        api.recover(a.png_bytes(), KEY, method="exact-steps")


def test_the_original_inside_the_mask_does_not_shape_the_new_face(pixel_model):
    """Two photos that differ only inside the face's mask, the same key and nonce: the
    same published pixels (fresh noise, outside context, colour of the surroundings)."""
    x, m = smooth_image(), centre_mask()
    y = x.copy()
    y[m] = smooth_image(seed=9)[m]
    region = faces.aligned_region(x, framing=faces.Framing.ffhq(), crop_size=32, mask=m)
    fixed = dict(salt=bytes(16), nonces=(b"f" * 16,))
    from faceveil.options import FixedKeys

    a, b = (api.anonymize(p, KEY, model=str(pixel_model), regions=[region],
                          options=Options.of(steps=4), fixed=FixedKeys(**fixed)) for p in (x, y))
    assert np.array_equal(a.pixels, b.pixels)


def test_harmonization_takes_the_colour_of_the_surroundings():
    rng = np.random.default_rng(0)
    photo = np.zeros((96, 96, 3), np.uint8)
    photo[:] = (200, 150, 120)  # skin-like surroundings
    photo += rng.integers(0, 6, photo.shape, dtype=np.uint8)
    m = np.zeros((32, 32), np.float32)
    m[8:24, 8:24] = 1.0
    region = faces.FaceRegion(box=(32, 32, 32, 32), transform=np.array(
        [[1.0, 0, -32], [0, 1.0, -32]]), crop_size=32, mask=m, landmarks=None,
        source="box", score=None)
    crop = np.full((32, 32, 3), (60.0, 90.0, 140.0), np.float32)  # a blue-grey new face
    crop += rng.normal(0, 4, crop.shape).astype(np.float32)
    out = harmonize.match(crop, region, photo)
    inside = m > 0
    target = photo[40:56, 40:56]
    assert harmonize.colour_shift(crop, np.broadcast_to(target.mean((0, 1)), crop.shape),
                                  inside) > 30
    assert harmonize.colour_shift(out, np.broadcast_to(target.mean((0, 1)), crop.shape),
                                  inside) < 2
    assert np.array_equal(out[~inside], crop[~inside])  # only the mask changes
    # It reads the surroundings only: another face under the mask changes nothing.
    altered = photo.copy()
    altered[40:56, 40:56] = 0
    assert np.array_equal(harmonize.match(crop, region, altered), out)


@pytest.mark.parametrize("flat", [{}, {"lossless": False},
                                  {"lossless": False, "method": "plain"},
                                  {"lossless": False, "method": "plain", "context": "own"}])
def test_sampler_passes_count_the_engine_passes(pixel_model, flat):
    """The web page's progress fraction divides by ``passes``: it must be what the
    engine reports, for each kind of sampler."""
    phases: list[str] = []

    def progress(phase, done, total):
        if done == 1:
            phases.append(phase)

    options = Options.of(steps=3, **flat)
    api.anonymize(smooth_image(), KEY, model=str(pixel_model), mask=centre_mask(),
                  options=options, progress=progress)
    assert len(phases) == options.sampler.passes


def test_a_latent_model_on_a_cpu_runs_faces_one_at_a_time():
    from types import SimpleNamespace

    from faceveil.pipeline.generate import chunks

    cpu = torch.device("cpu")
    latent = SimpleNamespace(vae=object(), device=cpu)
    pixel = SimpleNamespace(vae=None, device=cpu)
    assert chunks(latent, 6, 8) == [range(i, i + 1) for i in range(6)]
    assert chunks(pixel, 6, 4) == [range(0, 4), range(4, 6)]
    on_gpu = SimpleNamespace(vae=object(), device=torch.device("cuda"))
    assert chunks(on_gpu, 6, 8) == [range(0, 6)]
