"""Keyed orthogonal mixing of the noise inside the mask, with a hidden norm.

Pure math over tensors; the parameters (permutations and signs) come from a face's
key (:meth:`faceveil.keys.FaceKey.mixing`), and this module never sees a key.

Why. The paper's key flips only signs, ``z -> k * z``, so ``|z|`` survives: inverting
an anonymized face gives back the magnitudes of the original's noise, which link the
file to its original photo (``benchmarks/attacks.py``). Format version 2 flips the
signs in a keyed orthogonal basis instead::

    M(v) = Q^T (k * (Q v))                   Q orthogonal, k in {-1, +1}^n

``M`` is still an exact involution (``Q Q^T = I``, ``k * k = 1``) and still maps
N(0, I) onto N(0, I) (rotations and sign flips both do), so the masked region still
decodes to another plausible face; but each output coordinate now mixes every input
coordinate, so no magnitude survives. ``Q`` is three rounds of a keyed permutation
``P_r``, keyed signs ``D_r`` and a normalised Walsh-Hadamard transform ``H``::

    Q = R_3 R_2 R_1,     R_r(v) = H(D_r P_r v)

For a length ``n`` that is not a power of two, ``H`` applies the orthonormal
Walsh-Hadamard transform ``W_m`` (``m``: the largest power of two <= n) to the first
``m`` coordinates and then to the last ``m``: two overlapping orthogonal maps, whose
composition is orthogonal and touches every coordinate.

Orthogonal maps keep the norm, and the norm alone still links (about half the time
among 32 candidates). So the vector is also rescaled to a fixed radius before the
flip (:func:`hide_norm`), and the original radius travels sealed under the key; the
anonymized face's inverted noise then has the same norm whatever the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

ROUNDS = 3


@dataclass(frozen=True)
class MixingParams:
    """The keyed parameters of one face's mixing, for vectors of length ``n``.

    ``perms``: one permutation of ``range(n)`` per round; ``round_signs``: one +-1
    vector per round; ``flip``: the +-1 key signs applied in the mixed basis.
    """

    perms: tuple[np.ndarray, ...]
    round_signs: tuple[np.ndarray, ...]
    flip: np.ndarray

    @property
    def n(self) -> int:
        return int(self.flip.shape[0])


def _wht(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard transform along the last axis (length a power of two).

    Its own inverse: ``W = W^T`` and ``W W = I``.
    """
    m = x.shape[-1]
    h = 1
    while h < m:
        y = x.reshape(*x.shape[:-1], m // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*x.shape[:-1], m)
        h *= 2
    return x / math.sqrt(m)


def _spread(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``H``: W_m on the first m coordinates, then on the last m (reversed order and
    transposed for the inverse; W_m is symmetric)."""
    n = x.shape[-1]
    m = 1 << (n.bit_length() - 1)
    if m == n:
        return _wht(x)
    x = x.clone()
    spans = [slice(0, m), slice(n - m, n)]
    for span in reversed(spans) if inverse else spans:
        x[..., span] = _wht(x[..., span])
    return x


def mix(v: torch.Tensor, p: MixingParams) -> torch.Tensor:
    """``Q v`` for a 1-D vector of length ``p.n``."""
    for perm, signs in zip(p.perms, p.round_signs, strict=True):
        v = _spread(v[_index(perm, v)] * _signs(signs, v), inverse=False)
    return v


def unmix(u: torch.Tensor, p: MixingParams) -> torch.Tensor:
    """``Q^T u``: the inverse of :func:`mix`."""
    for perm, signs in zip(reversed(p.perms), reversed(p.round_signs), strict=True):
        w = _spread(u, inverse=True) * _signs(signs, u)
        u = torch.empty_like(w)
        u[_index(perm, w)] = w  # P^T: scatter back where the gather took from
    return u


def keyed_flip(v: torch.Tensor, p: MixingParams) -> torch.Tensor:
    """``M(v) = Q^T (k * (Q v))``: the keyed flip in the mixed basis; an involution."""
    if v.shape != (p.n,):
        raise ValueError(f"mixing parameters are for {p.n} values, not {tuple(v.shape)}")
    return unmix(mix(v, p) * _signs(p.flip, v), p)


def _index(perm: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(perm).to(like.device)


def _signs(signs: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(signs).to(device=like.device, dtype=like.dtype)


def hide_norm(v: torch.Tensor, radius: float) -> tuple[torch.Tensor, float]:
    """Rescale ``v`` to norm ``radius``; returns the rescaled vector and ``v``'s own norm."""
    norm = float(v.norm())
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError("cannot rescale a zero or non-finite noise vector")
    return v * (radius / norm), norm


def target_radius(n: int, rms: float) -> float:
    """The fixed radius of ``n`` coordinates at a model's typical inversion RMS."""
    return math.sqrt(n) * rms


# ---------------------------------------------------------------------------
# Batched application inside latent masks
# ---------------------------------------------------------------------------


def apply(
    z: torch.Tensor,
    mask: torch.Tensor,
    params: Sequence[MixingParams],
    *,
    hide: Sequence[float | None] | None = None,
    restore: Sequence[float | None] | None = None,
) -> tuple[torch.Tensor, list[float | None]]:
    """Apply each face's keyed flip to its masked coordinates of ``z`` (B, C, H, W).

    ``mask`` is (B, 1, H, W) or (B, C, H, W) boolean; the masked coordinates of face
    ``b`` are taken in C order. Anonymization passes ``hide`` (a target radius per
    face, or None to keep the norm): the vector is rescaled to it before the flip and
    its original norm is returned. Recovery passes ``restore`` (the sealed original
    norms): after the flip the vector is rescaled back to them. Everything outside the
    mask is returned unchanged. Computed in float64.

    Returns:
        ``(new z, original norms)`` (the norms are None where nothing was hidden).
    """
    inside = mask.to(torch.bool).expand_as(z)
    out = z.clone()
    norms: list[float | None] = []
    for b, p in enumerate(params):
        v = z[b][inside[b]].to(torch.float64)
        norm = None
        if hide is not None and hide[b] is not None:
            v, norm = hide_norm(v, float(hide[b]))
        v = keyed_flip(v, p)
        if restore is not None and restore[b] is not None:
            v, _ = hide_norm(v, float(restore[b]))
        out[b][inside[b]] = v.to(z.dtype)
        norms.append(norm)
    return out, norms
