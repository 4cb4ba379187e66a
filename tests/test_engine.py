"""The engine on a model with closed-form behaviour, and on a tiny diffusers UNet."""

import math

import pytest
import torch

from faceveil.diffusion.engine import Engine, flip, make_schedule

from .tinymodels import GaussianDenoiser


def _data(model, shape=(2, 3, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (model.mu + model.s * torch.randn(shape, generator=g, dtype=torch.float64))


def _signs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g).double() * 2 - 1


def _mask(shape):
    m = torch.zeros(shape[0], 1, *shape[2:], dtype=torch.bool)
    m[:, :, 2:6, 1:7] = True
    return m


def psnr(a, b, peak=2.0):
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


# A sample-predicting model has no noise estimate at the clean level, so its first
# inversion step reads the prediction at the next level: a larger approximation.
@pytest.mark.parametrize(("ptype", "bound"),
                         [("epsilon", 0.1), ("v_prediction", 0.1), ("sample", 0.3)])
def test_inversion_matches_closed_form_noise(ptype, bound):
    model = GaussianDenoiser(prediction_type=ptype)
    engine = Engine(model, steps=50)
    x = _data(model)
    trajectory = engine.invert(x)
    assert len(trajectory) == 51
    truth = model.true_noise(x, engine.schedule.alphas)
    # Denoising the true noise lands exactly on the data (the engine's denoiser is exact) ...
    assert torch.allclose(engine.denoise(truth), x, atol=1e-10)
    # ... while plain inversion, with eps taken at the current point, is off by a few %.
    rel = float((trajectory[-1] - truth).norm() / truth.norm())
    assert 1e-3 < rel < bound, rel


def test_inversion_error_shrinks_with_more_steps():
    model = GaussianDenoiser()
    x = _data(model)
    errors = []
    for steps in (10, 50, 200):
        engine = Engine(model, steps=steps)
        truth = model.true_noise(x, engine.schedule.alphas)
        errors.append(float((engine.invert(x)[-1] - truth).norm()))
    assert errors[0] > errors[1] > errors[2]


def test_flip_is_its_own_inverse_and_only_inside_mask():
    z = torch.randn(2, 3, 8, 8)
    k = _signs(z.shape, 1).float()
    m = _mask(z.shape)
    once = flip(z, k, m)
    assert torch.equal(flip(once, k, m), z)
    outside = ~m.expand_as(z)
    assert torch.equal(once[outside], z[outside])
    assert not torch.equal(once[~outside], z[~outside])


def test_anonymize_keeps_outside_and_recovery_reproduces_input():
    model = GaussianDenoiser()
    engine = Engine(model, steps=50)
    x = _data(model)
    k, m = _signs(x.shape, 1), _mask(x.shape)
    anon = engine.anonymize(x, k, m).z0
    inside = m.expand_as(x)
    assert torch.equal(anon[~inside], x[~inside])  # re-injection at the last level is exact
    assert psnr(anon[inside], x[inside]) < 15  # the face really changed
    rec = engine.recover(anon, k, m).z0
    assert torch.equal(rec[~inside], x[~inside])
    assert psnr(rec[inside], x[inside]) > 28  # plain inversion: about 31 dB here
    wrong = engine.recover(anon, _signs(x.shape, 2), m).z0
    assert psnr(wrong[inside], x[inside]) < 15


def test_same_inputs_give_identical_outputs():
    model = GaussianDenoiser()
    x = _data(model)
    k, m = _signs(x.shape, 1), _mask(x.shape)
    a = Engine(model, steps=10).anonymize(x, k, m).z0
    b = Engine(model, steps=10).anonymize(x, k, m).z0
    assert torch.equal(a, b)


def test_batch_matches_single_faces():
    model = GaussianDenoiser()
    x = _data(model)
    k, m = _signs(x.shape, 1), _mask(x.shape)
    engine = Engine(model, steps=10)
    both = engine.anonymize(x, k, m).z0
    first = engine.anonymize(x[:1], k[:1], m[:1]).z0
    assert torch.allclose(both[:1], first, atol=1e-12)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_schedule_spacings(spacing):
    s = make_schedule(GaussianDenoiser().scheduler_config, 25, spacing)
    assert s.steps == 25 and len(s.alphas) == 26
    assert list(s.timesteps) == sorted(s.timesteps)
    assert s.alphas[0] == 1.0 and all(a > b for a, b in zip(s.alphas, s.alphas[1:]))


def test_bad_settings_rejected():
    cfg = GaussianDenoiser().scheduler_config
    with pytest.raises(ValueError):
        make_schedule(cfg, 0)
    with pytest.raises(ValueError):
        make_schedule(cfg, 10, "sideways")
    with pytest.raises(ValueError):
        Engine(GaussianDenoiser(prediction_type="mystery"))


def test_progress_callback_counts_model_calls():
    model = GaussianDenoiser()
    seen = []
    engine = Engine(model, steps=7, progress=lambda phase, i, n: seen.append((phase, i, n)))
    x = _data(model)
    engine.anonymize(x, _signs(x.shape, 1), _mask(x.shape))
    assert [s for s in seen if s[0] == "invert"][-1] == ("invert", 7, 7)
    assert len(seen) == 14 and model.calls == 14


def test_exact_inversion_solves_each_step():
    model = GaussianDenoiser()
    engine = Engine(model, steps=50, tolerance=1e-6, max_iterations=30)
    x = _data(model)
    truth = model.true_noise(x, engine.schedule.alphas)
    solved = engine.invert_exact(x)
    exact = solved.trajectory[-1]
    plain = engine.invert(x)[-1]
    assert float((exact - truth).norm() / truth.norm()) < 1e-4
    assert float((exact - truth).norm()) < 0.01 * float((plain - truth).norm())
    assert float(solved.residuals.max()) <= 1e-6


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_exact_steps_recovery_is_near_exact(ptype):
    model = GaussianDenoiser(prediction_type=ptype)
    engine = Engine(model, steps=50)
    x = _data(model)
    k, m = _signs(x.shape, 1), _mask(x.shape)
    inside = m.expand_as(x)
    anon = engine.transform(x, k, m, method="exact-steps", context="masked").z0
    assert torch.equal(anon[~inside], x[~inside])
    rec = engine.transform(anon, k, m, method="exact-steps", context="masked").z0
    assert psnr(rec[inside], x[inside]) > 45  # about 49 dB at the default tolerance 1e-3
    plain = engine.transform(engine.transform(x, k, m).z0, k, m).z0
    assert psnr(rec[inside], x[inside]) > psnr(plain[inside], x[inside]) + 15


def test_masked_context_ignores_the_inside():
    # The re-injected trajectory must not depend on what is inside the mask, or recovery
    # (which only sees the anonymized inside) could not recompute it.
    import tempfile
    from pathlib import Path

    from faceveil.diffusion.models import load_model

    from .tinymodels import make_pixel_model  # a real network mixes neighbouring pixels

    with tempfile.TemporaryDirectory() as d:
        bb = load_model(str(make_pixel_model(Path(d) / "m")))
    engine = Engine(bb, steps=10)
    z = torch.randn(1, *bb.latent_shape)
    m = torch.zeros(1, 1, *bb.latent_shape[1:], dtype=torch.bool)
    m[..., 4:12, 4:12] = True
    other = torch.where(m, torch.randn_like(z), z)
    fill = torch.zeros_like(z)
    a = engine.invert(torch.where(m, fill, z))
    b = engine.invert(torch.where(m, fill, other))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    own_a, own_b = engine.invert(z), engine.invert(other)
    assert not torch.equal(own_a[-1][~m.expand_as(z)], own_b[-1][~m.expand_as(z)])


@pytest.mark.slow
def test_exact_steps_on_a_diffusers_unet_beats_plain(pixel_model):
    from faceveil.diffusion.models import load_model

    bb = load_model(str(pixel_model))
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 64, 64, generator=g), 2) * 2 - 1
    z0 = bb.encode(x)
    k = _signs(z0.shape, 3).float()
    m = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    m[..., 4:12, 4:12] = True
    engine = Engine(bb, steps=20)
    results = {}
    for method, context in (("plain", "own"), ("exact-steps", "masked")):
        anon = engine.transform(z0, k, m, method, context).z0
        rec = engine.transform(anon, k, m, method, context).z0
        results[method] = psnr(bb.decode(rec), x)
    assert results["exact-steps"] > 50
    assert results["exact-steps"] > results["plain"] + 10


@pytest.mark.slow
def test_context_rides_in_the_exact_steps_calls(pixel_model):
    """With a denoiser that takes a timestep per sample, the masked context's inversion
    shares the exact inversion's model calls: the same context, 49 calls fewer."""
    from faceveil.diffusion.models import load_model

    bb = load_model(str(pixel_model))
    g = torch.Generator().manual_seed(1)
    z0 = bb.encode(torch.nn.functional.avg_pool2d(torch.rand(2, 3, 64, 64, generator=g), 2) * 2
                   - 1)
    m = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    m[..., 4:12, 3:13] = True
    blanked = torch.where(m, torch.zeros_like(z0), z0)
    engine = Engine(bb, steps=50)
    separate = engine.invert(blanked)
    exact_separate = engine.invert_exact(z0, m, separate).trajectory
    calls = engine.calls
    fused = engine.invert_exact(z0, m, context_from=blanked)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fused.context, separate))
    assert all(torch.allclose(a, b, atol=1e-4)
               for a, b in zip(fused.trajectory, exact_separate))
    assert engine.calls - calls == calls - 49  # of the 50 context calls, 49 are shared
