"""Key-conditioned DDIM anonymization: inversion, masked sign flip, masked denoising.

Pure tensor math. The engine knows nothing about files, faces or where keys come
from: it receives a batch of clean latents ``z0``, a batch of +-1 ``signs`` and a
batch of binary latent ``mask`` s, and a :class:`Denoiser` (any backbone).

Notation follows Song et al., "Denoising Diffusion Implicit Models" (DDIM, 2021):
``a_t`` is the cumulative product of ``1 - beta`` (diffusers' ``alphas_cumprod``).
With eta = 0 one step from level ``t`` to level ``s`` is (DDIM eq. 12)::

    x0_hat = (z_t - sqrt(1 - a_t) * eps) / sqrt(a_t)              # DDIM eq. 9
    z_s    = sqrt(a_s) * x0_hat + sqrt(1 - a_s) * eps

``s < t`` denoises; ``s > t`` inverts. Exact inversion would need ``eps`` at the
unknown end point; like the reference we evaluate it at the current point, the
classic DDIM-inversion approximation (see ``faceveil`` METHOD.md section 4).

With ``eta > 0`` a denoising step also adds fresh noise (DDIM eq. 12 in full, eq. 16
for ``sigma``; eta = 1 is DDPM's ancestral sampler)::

    sigma  = eta * sqrt((1 - a_s) / (1 - a_t)) * sqrt(1 - a_t / a_s)
    z_s    = sqrt(a_s) * x0_hat + sqrt(1 - a_s - sigma^2) * eps + sigma * n,  n ~ N(0, I)

That is not invertible: it serves faces whose originals are sealed in the file
(:meth:`Engine.sample`), never the paper's diffusion recovery.

The plain chain (:meth:`Engine.invert`, :meth:`Engine.denoise`, :meth:`Engine.sample`)
runs on torch tensors or numpy arrays alike, whichever the denoiser takes (the built-in
model through onnxruntime takes numpy: :mod:`faceveil.diffusion.onnx`), so the sealed
default needs no torch; the exact inversion and the keyed transform are torch only.

The anonymization of Labarbarie et al. (arXiv 2510.01031, section 3) is then::

    z_0 -> z_1 -> ... -> z_T                    invert, keeping the trajectory
    z~_T     = M * (k * z_T) + (1 - M) * z_T    flip the signs inside the mask
    z~_{i-1} = M * DDIM(z~_i) + (1 - M) * z_{i-1}   denoise, re-inject outside

and recovery is the same procedure applied to the anonymized latent with the same
key (``k * k = 1``). x0 estimates are never clipped or thresholded: that is not
invertible.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..choices import CONTEXTS, METHODS, SPACINGS

if TYPE_CHECKING:
    import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

Progress = Callable[[str, int, int], None]
"""Called after every model evaluation with (phase, done, total)."""


class Denoiser(Protocol):
    """What the engine needs from a diffusion backbone. One may also offer
    ``ddim_alphas``, ``(alphas_cumprod, final_alpha_cumprod)`` of diffusers' DDIM
    scheduler for its config: the chain is then built without diffusers
    (:func:`make_schedule`)."""

    prediction_type: str
    scheduler_config: dict

    def predict(self, z: torch.Tensor, t: int) -> torch.Tensor:
        """The raw model output at integer timestep ``t`` for a batch of latents."""
        ...


@dataclass(frozen=True)
class ExactInversion:
    """What :meth:`Engine.invert_exact` found.

    ``trajectory`` is ``[z_0, ..., z_T]``; ``residuals`` holds, per face, the largest
    step residual left unconverged (float64, CPU; 0 where every step converged);
    ``context`` is the plain inversion computed alongside (``context_from``), else None.
    """

    trajectory: list[torch.Tensor]
    residuals: torch.Tensor
    context: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class Transformed:
    """What :meth:`Engine.transform` made: the new clean latents, and per face the worst
    exact-inversion residual (zeros for the plain method)."""

    z0: torch.Tensor
    residuals: torch.Tensor


@dataclass(frozen=True)
class Schedule:
    """The discrete DDIM chain: ``levels[0]`` is clean data, ``levels[T]`` pure noise.

    ``timesteps[i]`` is the model timestep of level ``i + 1``; ``alphas[i]`` the
    cumulative alpha of level ``i`` (``alphas[0]`` is the "final" alpha, 1.0 for
    most models).
    """

    timesteps: tuple[int, ...]
    alphas: tuple[float, ...]

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def make_schedule(scheduler_config: dict, steps: int = 50, spacing: str = "leading",
                  ddim_alphas: tuple[Sequence[float], float] | None = None) -> Schedule:
    """Build the DDIM chain for ``steps`` steps from a diffusers scheduler config.

    The timesteps and ``alphas_cumprod`` come from diffusers' own ``DDIMScheduler``
    so that every spacing and beta schedule it knows is honoured exactly. Given
    ``ddim_alphas``, the scheduler's ``alphas_cumprod`` and ``final_alpha_cumprod`` as
    diffusers computed them, the chain is built without diffusers, by the same
    arithmetic (:func:`ddim_timesteps`).
    """
    if spacing not in SPACINGS:
        raise ValueError(f"timestep spacing must be one of {SPACINGS}, not {spacing!r}")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if ddim_alphas is not None:
        cumprod, final = ddim_alphas
        descending = ddim_timesteps(scheduler_config, steps, spacing)
        ascending = tuple(sorted(set(descending)))
        if len(ascending) != len(descending):
            raise ValueError(f"{steps} steps with {spacing!r} spacing repeat a timestep")
        return Schedule(ascending, (float(final),) + tuple(float(cumprod[t]) for t in ascending))
    from diffusers import DDIMScheduler

    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    config.update(timestep_spacing=spacing, clip_sample=False, thresholding=False)
    scheduler = DDIMScheduler.from_config(config)
    if steps > scheduler.config.num_train_timesteps:
        raise ValueError(f"steps must be at most {scheduler.config.num_train_timesteps}")
    scheduler.set_timesteps(steps)
    descending = [int(t) for t in scheduler.timesteps]
    ascending = tuple(sorted(set(descending)))
    if len(ascending) != len(descending):
        raise ValueError(f"{steps} steps with {spacing!r} spacing repeat a timestep")
    ac = scheduler.alphas_cumprod.double()
    alphas = (float(scheduler.final_alpha_cumprod),) + tuple(float(ac[t]) for t in ascending)
    return Schedule(ascending, alphas)


def ddim_timesteps(scheduler_config: dict, steps: int, spacing: str) -> list[int]:
    """The descending timesteps of ``DDIMScheduler.set_timesteps`` (diffusers 0.30 to
    0.42), computed as it computes them (numpy), without diffusers."""
    train = int(scheduler_config.get("num_train_timesteps", 1000))
    if steps > train:
        raise ValueError(f"steps must be at most {train}")
    if spacing == "linspace":
        t = np.linspace(0, train - 1, steps).round()[::-1].copy().astype(np.int64)
    elif spacing == "leading":
        t = (np.arange(0, steps) * (train // steps)).round()[::-1].copy().astype(np.int64)
        t += int(scheduler_config.get("steps_offset", 0))
    else:
        t = np.round(np.arange(train, 0, -(train / steps))).astype(np.int64) - 1
    return [int(v) for v in t]


# The plain chain runs on torch tensors or numpy arrays: these pick the library.
def _torch_no_grad(method):
    """``torch.no_grad()`` around ``method`` when torch is loaded (numpy needs none)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        torch = sys.modules.get("torch")
        if torch is None:
            return method(*args, **kwargs)
        with torch.no_grad():
            return method(*args, **kwargs)

    return wrapper


def where(mask: Any, a: Any, b: Any) -> Any:
    """``torch.where`` or ``numpy.where``, by the kind of ``a``."""
    if isinstance(a, np.ndarray):
        return np.where(mask, a, b)
    import torch

    return torch.where(mask, a, b)


def _like(x: Any, ref: Any, dtype: Any = None) -> Any:
    """``x`` as an array of ``ref``'s kind, device and dtype (or ``dtype``)."""
    if isinstance(ref, np.ndarray):
        return np.asarray(x, dtype=ref.dtype if dtype is None else dtype)
    return x.to(device=ref.device, dtype=ref.dtype if dtype is None else dtype)


def _full_like(x: Any, value: float) -> Any:
    if isinstance(x, np.ndarray):
        return np.full_like(x, value)
    import torch

    return torch.full_like(x, value)


def _zeros(n: int, like: Any) -> Any:
    """``n`` float64 zeros on the CPU, of ``like``'s kind."""
    if isinstance(like, np.ndarray):
        return np.zeros(n, dtype=np.float64)
    import torch

    return torch.zeros(n, dtype=torch.float64)


def split_output(
    output: torch.Tensor, z: torch.Tensor, alpha: float, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a model output at a point of level ``alpha`` into (x0_hat, eps)."""
    sa, sb = math.sqrt(alpha), math.sqrt(1.0 - alpha)
    if prediction_type == "epsilon":
        eps = output
        x0 = (z - sb * eps) / sa  # DDIM eq. 9
    elif prediction_type == "v_prediction":
        # v = sqrt(a) eps - sqrt(1-a) x0 (Salimans & Ho 2022, section 4)
        x0 = sa * z - sb * output
        eps = sa * output + sb * z
    elif prediction_type == "sample":
        x0 = output
        eps = (z - sa * x0) / sb
    else:
        raise ValueError(f"unknown prediction type {prediction_type!r}")
    return x0, eps


def ddim_move(x0: torch.Tensor, eps: torch.Tensor, alpha_to: float) -> torch.Tensor:
    """Re-noise an (x0_hat, eps) pair to level ``alpha_to`` (DDIM eq. 12 with eta = 0)."""
    return math.sqrt(alpha_to) * x0 + math.sqrt(1.0 - alpha_to) * eps


def ddim_sigma(alpha_from: float, alpha_to: float, eta: float) -> float:
    """The noise a denoising step from ``alpha_from`` to ``alpha_to`` adds (DDIM eq. 16)."""
    if eta == 0.0:
        return 0.0
    return eta * math.sqrt((1.0 - alpha_to) / (1.0 - alpha_from)
                           * (1.0 - alpha_from / alpha_to))


Noise = Callable[[int], "torch.Tensor"]
"""Step ``n`` of a stochastic denoising (1 = first) -> its N(0, I) draws, latent shape."""


def flip(z: torch.Tensor, signs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``M * (k * z) + (1 - M) * z``: flip signs inside the mask. Its own inverse."""
    import torch

    return torch.where(mask, z * signs.to(z.dtype), z)


class Engine:
    """Deterministic DDIM inversion and key-conditioned masked denoising.

    Args:
        denoiser: the backbone (see :class:`Denoiser`).
        steps: number of DDIM steps (the paper uses 50).
        spacing: diffusers timestep spacing, "leading", "trailing" or "linspace".
        progress: optional callback for progress display.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        steps: int = 50,
        spacing: str = "leading",
        progress: Progress | None = None,
        tolerance: float = 1e-3,
        max_iterations: int = 8,
    ) -> None:
        if denoiser.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction type {denoiser.prediction_type!r}")
        self.denoiser = denoiser
        self.schedule = make_schedule(denoiser.scheduler_config, steps, spacing,
                                      getattr(denoiser, "ddim_alphas", None))
        self.progress = progress
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.calls = 0  # model evaluations so far, for cost reports

    def _predict(self, z: torch.Tensor, i: int) -> torch.Tensor:
        self.calls += 1
        return self.denoiser.predict(z, self.schedule.timesteps[i - 1])

    def _predict_two(self, a: torch.Tensor, i: int, b: torch.Tensor, j: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model at ``a`` (level ``i``) and at ``b`` (level ``j``): in one call when the
        denoiser takes a timestep per sample (``predict_steps``), else in two."""
        steps = getattr(self.denoiser, "predict_steps", None)
        if steps is None:
            return self._predict(a, i), self._predict(b, j)
        import torch

        self.calls += 1
        ts = self.schedule.timesteps
        t = torch.tensor([ts[i - 1]] * a.shape[0] + [ts[j - 1]] * b.shape[0],
                         device=a.device, dtype=torch.long)
        out = steps(torch.cat([a, b]), t)
        return out[: a.shape[0]], out[a.shape[0]:]

    def _invert_step(self, z: torch.Tensor, out: torch.Tensor, i: int) -> torch.Tensor:
        """One plain inversion step from level i - 1 to i, given the model's output at z."""
        s, ptype = self.schedule, self.denoiser.prediction_type
        alpha = s.alphas[i - 1]
        if ptype == "sample" and alpha >= 1.0:
            # A sample-predicting model gives no noise at a noiseless point (0/0);
            # read its prediction at the target level instead.
            alpha = s.alphas[i]
        x0, eps = split_output(out, z, alpha, ptype)
        return ddim_move(x0, eps, s.alphas[i])

    def _tick(self, phase: str, done: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, self.schedule.steps)

    @_torch_no_grad
    def invert(self, z0: torch.Tensor, phase: str = "invert") -> list[torch.Tensor]:
        """DDIM-invert clean latents; returns the trajectory ``[z_0, z_1, ..., z_T]``."""
        trajectory = [z0]
        z = z0
        for i in range(1, self.schedule.steps + 1):
            # The model is asked at the target timestep but at the current point
            # (diffusers' DDIMInverseScheduler convention).
            z = self._invert_step(z, self._predict(z, i), i)
            trajectory.append(z)
            self._tick(phase, i)
        return trajectory

    @_torch_no_grad
    def denoise(
        self,
        z_T: torch.Tensor,
        mask: torch.Tensor | None = None,
        outside: Sequence[torch.Tensor] | None = None,
        eta: float = 0.0,
        noise: Noise | None = None,
    ) -> torch.Tensor:
        """DDIM-denoise from level T to clean data.

        When ``mask`` and ``outside`` (a trajectory ``[z_0, ..., z_T]``) are given,
        after every step the latents outside the mask are replaced by the
        trajectory's latents of the same level. ``eta > 0`` adds ``noise(n)`` at step
        ``n`` (module docstring); the last step adds none (``a_0`` is clean data).
        """
        if eta and noise is None:
            raise ValueError("a stochastic denoising (eta > 0) needs its noise")
        s, ptype = self.schedule, self.denoiser.prediction_type
        z = z_T
        for n, i in enumerate(range(s.steps, 0, -1), start=1):
            out = self._predict(z, i)
            x0, eps = split_output(out, z, s.alphas[i], ptype)
            sigma = ddim_sigma(s.alphas[i], s.alphas[i - 1], eta) if i > 1 else 0.0
            if sigma:
                z = (math.sqrt(s.alphas[i - 1]) * x0
                     + math.sqrt(max(1.0 - s.alphas[i - 1] - sigma**2, 0.0)) * eps
                     + sigma * _like(noise(n), z))
            else:
                z = ddim_move(x0, eps, s.alphas[i - 1])
            if outside is not None:
                z = where(mask, z, outside[i - 1])
            self._tick("denoise", n)
        return z

    @_torch_no_grad
    def sample(
        self,
        z0: torch.Tensor,
        mask: torch.Tensor,
        fresh: torch.Tensor,
        eta: float = 0.0,
        noise: Noise | None = None,
        fill: float = 0.0,
        context_noise: torch.Tensor | None = None,
        solver: str = "ddim",
    ) -> Transformed:
        """A new inside for a batch of clean latents, from fresh noise (nothing of the
        inside's original survives: no diffusion can bring it back).

        The outside trajectory carries nothing of the inside either: without
        ``context_noise``, the plain inversion of the latents with the inside replaced by
        ``fill`` (one model call a step); with it, the latents noised forward,
        ``z_i = sqrt(a_i) z_0 + sqrt(1 - a_i) context_noise`` (q(z_i | z_0) with one
        draw, no model call; the inside is never read). ``fresh`` (the latent shape) is
        z_T inside the mask, and the chain is denoised with re-injection outside by
        ``solver``: "ddim" (:meth:`denoise`; ``eta``, ``noise``) or "dpm++2m"
        (:meth:`denoise_dpm`).
        """
        mask = _like(mask, z0, dtype=bool)
        if context_noise is None:
            outside = self.invert(where(mask, _full_like(z0, fill), z0), "context")
        else:
            n = _like(context_noise, z0)
            outside = [z0] + [math.sqrt(a) * z0 + math.sqrt(1.0 - a) * n
                              for a in self.schedule.alphas[1:]]
        z_T = where(mask, _like(fresh, z0), outside[-1])
        denoise = {"ddim": self.denoise, "dpm++2m": self.denoise_dpm}[solver]
        z = denoise(z_T, mask, outside, eta=eta, noise=noise)
        return Transformed(z, _zeros(z0.shape[0], z0))

    @_torch_no_grad
    def denoise_dpm(
        self,
        z_T: torch.Tensor,
        mask: torch.Tensor | None = None,
        outside: Sequence[torch.Tensor] | None = None,
        eta: float = 0.0,
        noise: Noise | None = None,
    ) -> torch.Tensor:
        """Denoise with DPM-Solver++(2M) (Lu et al., arXiv 2211.01095, algorithm 2; with
        ``eta`` 1 its SDE form, diffusers' ``DPMSolverMultistepScheduler`` with
        ``algorithm_type="sde-dpmsolver++"``), re-injecting ``outside`` after every step
        as :meth:`denoise` does. Its first-order step is exactly :meth:`denoise`'s step
        (DDIM with the same ``eta``, 0 or 1), so it is the same sampler with a
        second-order correction from the previous step's x0 estimate, which keeps the
        look with fewer steps. The last step (to clean data, or the lone step) is first
        order, as diffusers' ``lower_order_final`` does. Not invertible: for faces whose
        originals are sealed."""
        if eta not in (0, 1):
            raise ValueError("DPM-Solver++ takes eta 0 (ODE) or 1 (SDE)")
        if eta and noise is None:
            raise ValueError("a stochastic denoising (eta > 0) needs its noise")
        s, ptype = self.schedule, self.denoiser.prediction_type

        def lam(a: float) -> float:  # log(alpha / sigma), half the log-SNR
            return 0.5 * (math.log(a) - math.log1p(-a))

        z, prev = z_T, None  # prev: (x0 estimate, lambda) of the step before
        for n, i in enumerate(range(s.steps, 0, -1), start=1):
            a_t, a_s = s.alphas[i], s.alphas[i - 1]
            x0, _ = split_output(self._predict(z, i), z, a_t, ptype)
            if a_s >= 1.0:  # to clean data: lambda is infinite, the step is x0 itself
                z = x0
            else:
                h = lam(a_s) - lam(a_t)
                d = x0
                if prev is not None and i > 1:  # second order (2M, midpoint form)
                    r = (lam(a_t) - prev[1]) / h
                    d = x0 + (x0 - prev[0]) * (0.5 / r)
                sa, ss, st = math.sqrt(a_s), math.sqrt(1.0 - a_s), math.sqrt(1.0 - a_t)
                if eta:
                    e = math.exp(-2.0 * h)
                    z = (ss / st * math.exp(-h)) * z + (sa * (1.0 - e)) * d
                    z = z + (ss * math.sqrt(1.0 - e)) * _like(noise(n), z)
                else:
                    z = (ss / st) * z + (sa * -math.expm1(-h)) * d
            prev = (x0, lam(a_t))
            if outside is not None:
                z = where(mask, z, outside[i - 1])
            self._tick("denoise", n)
        return z

    @_torch_no_grad
    def invert_exact(
        self,
        z0: torch.Tensor,
        mask: torch.Tensor | None = None,
        context: Sequence[torch.Tensor] | None = None,
        context_from: torch.Tensor | None = None,
    ) -> ExactInversion:
        """Invert the sampler itself: find each z_i that :meth:`denoise` maps onto z_{i-1}.

        One denoising step is y = sqrt(a_{i-1}) x0(z) + sqrt(1 - a_{i-1}) eps(z) with the
        model read at z (level i). Given y, the fixed-point iteration

            eps_k  = eps(z_k)
            z_k+1  = sqrt(a_i) (y - sqrt(1 - a_{i-1}) eps_k) / sqrt(a_{i-1}) + sqrt(1 - a_i) eps_k

        starts from the plain inversion step with the previous step's eps (eps changes
        slowly from one level to the next, so this saves about one model call per step)
        and stops when the step it implies reproduces y to ``tolerance`` (max abs, inside
        the mask) or after ``max_iterations`` model calls. With ``mask`` and ``context``
        (a trajectory), only the inside is solved for: the outside of every z_i is the
        context's, exactly as :meth:`denoise` re-injects it, so denoising the result
        reproduces ``z0``.

        Every face of the batch is solved on its own: its iterations, its best iterate
        and its stop (converged, diverging or out of iterations) do not depend on the
        other faces, and a converged face is not evaluated again at that step. So a
        face's result is the same whichever faces share its batch. The largest
        unconverged residual of each face is returned with the trajectory.

        ``context_from`` instead of ``context``: the context is the plain inversion of
        these latents, computed along the way; each of its steps rides in the first model
        call of the exact step before it (one call at two timesteps, when the denoiser
        offers ``predict_steps``), which saves a model call per step. The context
        trajectory is then returned too.
        """
        import torch

        s, ptype = self.schedule, self.denoiser.prediction_type
        batch = z0.shape[0]
        inside = None if mask is None else mask.expand_as(z0)
        trajectory = [z0]
        y, eps_prev = z0, None
        residuals = torch.zeros(batch, dtype=torch.float64)
        if context_from is not None:
            context = [context_from, self._invert_step(context_from,
                                                       self._predict(context_from, 1), 1)]
        for i in range(1, s.steps + 1):
            sa_prev, sb_prev = math.sqrt(s.alphas[i - 1]), math.sqrt(1.0 - s.alphas[i - 1])
            outside = None if context is None else context[i]
            ride = context_from is not None and i < s.steps  # the context's next step

            def implied(eps: torch.Tensor, rows, y=y, outside=outside, i=i, sa=sa_prev,
                        sb=sb_prev) -> torch.Tensor:
                """The z_i of faces ``rows`` whose step lands on y if the model's noise
                there were eps."""
                z_new = ddim_move((y[rows] - sb * eps) / sa, eps, s.alphas[i])
                return z_new if outside is None else torch.where(inside[rows], z_new,
                                                                 outside[rows])

            every = torch.arange(batch, device=z0.device)
            if eps_prev is None:
                z = y if outside is None else torch.where(inside, y, outside)
            else:
                z = implied(eps_prev, every)
            best, best_eps = z.clone(), torch.zeros_like(z)
            best_err = torch.full((batch,), math.inf, dtype=torch.float64)
            active = every
            for _ in range(self.max_iterations):
                if ride:
                    out, out_ctx = self._predict_two(z[active], i, context[i], i + 1)
                    context.append(self._invert_step(context[i], out_ctx, i + 1))
                    ride = False
                else:
                    out = self._predict(z[active], i)
                x0, eps = split_output(out, z[active], s.alphas[i], ptype)
                residual = (sa_prev * x0 + sb_prev * eps - y[active]).abs()
                if inside is not None:
                    residual = torch.where(inside[active], residual, torch.zeros_like(residual))
                err = residual.flatten(1).amax(dim=1).double().cpu()
                rows = active.cpu()
                better = err < best_err[rows]
                if better.any():
                    keep = active[better.to(active.device)]
                    best[keep] = z[keep]
                    best_eps[keep] = eps[better.to(eps.device)]
                    best_err[rows[better]] = err[better]
                # A face stops when it converged or diverges; the others iterate on.
                going = (err > self.tolerance) & (err <= 4 * best_err[rows])
                if not going.any():
                    break
                active = active[going.to(active.device)]
                z = z.clone()
                z[active] = implied(eps[going.to(eps.device)], active)
            eps_prev = best_eps
            residuals = torch.maximum(residuals, best_err)
            trajectory.append(best)
            y = best
            self._tick("invert", i)
        return ExactInversion(trajectory, residuals,
                              context if context_from is not None else None)

    def transform(
        self,
        z0: torch.Tensor,
        key: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
        mask: torch.Tensor,
        method: str = "plain",
        context: str = "own",
        fill: float = 0.0,
    ) -> Transformed:
        """Anonymize (or, with the same key, recover) a batch of clean latents.

        Args:
            z0: clean latents, shape (B, C, H, W).
            key: the key operation applied to the inverted noise z_T: +-1 ``signs`` of
                the latent shape (the paper's sign flip, :func:`flip`), or a function
                taking and returning (B, C, H, W) that changes only the inside of the
                mask (e.g. :func:`faceveil.diffusion.mixing.apply`).
            mask: boolean latent mask, shape (B, 1, H, W) or (B, C, H, W).
            method: "plain" (one DDIM inversion pass, the paper's) or "exact-steps"
                (each step solved by :meth:`invert_exact`).
            context: what is re-injected outside the mask. "own": the latents' own
                inversion trajectory (the paper's). "masked": the trajectory of the
                latents with the inside replaced by ``fill``, which depends only on
                the outside, so recovery recomputes it exactly from the anonymized
                image (the outside is unchanged by anonymization).
        """
        import torch

        if method not in METHODS or context not in CONTEXTS:
            raise ValueError(f"unknown method {method!r} or context {context!r}")
        mask = mask.to(device=z0.device, dtype=torch.bool)
        if callable(key):
            key_op = key
        else:
            if key.shape != z0.shape:
                raise ValueError(
                    f"signs shape {tuple(key.shape)} != latent shape {tuple(z0.shape)}")
            signs = key.to(z0.device)

            def key_op(z: torch.Tensor) -> torch.Tensor:
                return flip(z, signs, mask)

        blanked = torch.where(mask, torch.full_like(z0, fill), z0)
        residuals = torch.zeros(z0.shape[0], dtype=torch.float64)
        if context == "masked" and method == "exact-steps":
            exact = self.invert_exact(z0, mask, context_from=blanked)
            trajectory, outside, residuals = exact.trajectory, exact.context, exact.residuals
        else:
            outside = self.invert(blanked, "context") if context == "masked" else None
            if method == "exact-steps":
                exact = self.invert_exact(z0, mask, outside)
                trajectory, residuals = exact.trajectory, exact.residuals
            else:
                trajectory = self.invert(z0)
        outside = outside if outside is not None else trajectory
        z_T = key_op(torch.where(mask, trajectory[-1], outside[-1]))
        return Transformed(self.denoise(z_T, mask, outside), residuals)

    anonymize = transform
    recover = transform
