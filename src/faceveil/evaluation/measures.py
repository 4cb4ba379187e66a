"""Image and identity measures for the evaluation harness: pure numpy/torch.

Fidelity is measured on 8-bit RGB images as uint8 or float arrays in [0, 255]:

* PSNR in dB with peak 255, over all three channels of the selected pixels. Identical
  pixels have an infinite PSNR; JSON has no infinity, so every PSNR is capped at
  :data:`PSNR_CAP` (100 dB): a reported 100.0 means "identical" (or within 2.5e-3 grey
  levels RMS, which 8-bit images cannot be without being identical).
* SSIM (Wang et al. 2004) with an 11x11 Gaussian window of sigma 1.5, K1 = 0.01,
  K2 = 0.03, L = 255, computed per channel and averaged; the map is padded by
  reflection so it has one value per pixel and can be averaged over a mask.
* MAE as a fraction of the full scale (mean absolute difference / 255), in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 100.0
"""PSNR reported for identical images (and the upper bound of every PSNR), in dB."""

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _float(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _select(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    a = _float(a)
    return a if mask is None else a[np.asarray(mask, dtype=bool)]


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """PSNR (dB, peak 255, capped at :data:`PSNR_CAP`) of ``a`` against ``b``, over the
    pixels where ``mask`` (H, W) is true; None when the mask selects nothing."""
    d = _select(a, mask) - _select(b, mask)
    if d.size == 0:
        return None
    mse = float(np.mean(d * d))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(255.0**2 / mse))


def mae(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Mean absolute difference as a fraction of 255 (in [0, 1]); None for an empty mask."""
    d = _select(a, mask) - _select(b, mask)
    if d.size == 0:
        return None
    return float(np.mean(np.abs(d)) / 255.0)


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The SSIM map (H, W) of two (H, W, 3) or (H, W) images in [0, 255], averaged over
    channels; reflection padding keeps one value per pixel."""
    x = torch.from_numpy(_float(a))
    y = torch.from_numpy(_float(b))
    if x.shape != y.shape:
        raise ValueError(f"SSIM of images of different shapes {tuple(x.shape)} {tuple(y.shape)}")
    if x.ndim == 2:
        x, y = x[:, :, None], y[:, :, None]
    c = x.shape[2]
    # (1, C, H, W); separable Gaussian filtering, one channel at a time (groups=C).
    x = x.permute(2, 0, 1)[None]
    y = y.permute(2, 0, 1)[None]
    g = _gaussian_window()
    half = SSIM_WINDOW // 2
    h, w = x.shape[-2:]
    # Reflection needs the padding to be smaller than the side; tiny images use 'replicate'.
    mode = "reflect" if min(h, w) > half else "replicate"
    gx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    gy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.pad(t, (half, half, half, half), mode=mode)
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return (num / den)[0].mean(0).numpy()


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Mean SSIM of ``a`` against ``b`` over the pixels where ``mask`` is true (the window
    still sees the pixels around them); None for an empty mask."""
    m = ssim_map(a, b)
    sel = m if mask is None else m[np.asarray(mask, dtype=bool)]
    return float(sel.mean()) if sel.size else None


def fidelity(a: np.ndarray, b: np.ndarray, face: np.ndarray) -> dict[str, float | None]:
    """PSNR, SSIM and MAE of ``a`` against ``b`` over the ``face`` mask and the image."""
    m = ssim_map(a, b)
    face = np.asarray(face, dtype=bool)
    return {
        "psnr_face": psnr(a, b, face),
        "psnr_image": psnr(a, b),
        "ssim_face": float(m[face].mean()) if face.any() else None,
        "ssim_image": float(m.mean()),
        "mae_face": mae(a, b, face),
        "mae_image": mae(a, b),
    }


def stats(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean, standard deviation, median, min, max and count of the values that are not
    None or NaN (all None when there are none)."""
    v = np.array([float(x) for x in values if x is not None and not math.isnan(float(x))])
    if v.size == 0:
        return {"mean": None, "std": None, "median": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def rate(flags: Iterable[bool | None]) -> float | None:
    """Share of true values among those that are not None (None when there are none)."""
    f = [bool(x) for x in flags if x is not None]
    return float(np.mean(f)) if f else None


def tar_at_far(genuine: Sequence[float], impostor: Sequence[float],
               far: float = 1e-3) -> tuple[float | None, float | None]:
    """True accept rate at a false accept rate, for similarity scores (higher = same).

    The threshold is the ``floor(far * n) + 1``-th highest impostor score and a pair is
    accepted when its score is strictly above it, so at most ``far`` of the impostor
    pairs are accepted (with fewer than ``1 / far`` impostor pairs: none of them).

    Returns:
        ``(tar, threshold)``, None for both without impostor or genuine scores.
    """
    imp = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    gen = np.asarray(genuine, dtype=np.float64)
    if imp.size == 0 or gen.size == 0:
        return None, None
    k = min(int(math.floor(far * imp.size)), imp.size - 1)
    threshold = float(imp[k])
    return float(np.mean(gen > threshold)), threshold


def tar_with_threshold(genuine: Sequence[float], threshold: float | None) -> float | None:
    """Share of genuine scores strictly above a threshold from :func:`tar_at_far`."""
    gen = np.asarray(genuine, dtype=np.float64)
    if threshold is None or gen.size == 0:
        return None
    return float(np.mean(gen > threshold))


def inter_ocular(landmarks68: np.ndarray) -> float:
    """Distance between the eye centres of 68 landmarks (iBUG order)."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def landmark_shift(before: np.ndarray, after: np.ndarray) -> float | None:
    """Mean distance between two sets of 68 landmarks, in units of the inter-ocular
    distance of ``before`` (None when the eyes coincide)."""
    iod = inter_ocular(before)
    if iod <= 1e-9:
        return None
    d = np.linalg.norm(np.asarray(before, np.float64) - np.asarray(after, np.float64), axis=1)
    return float(d.mean() / iod)


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
