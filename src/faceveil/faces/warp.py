"""Resampling between photos and face crops: extract a crop, warp it back, blend it in.

Bilinear sampling with pixel centres at integer coordinates (see :mod:`.geometry`), a
box filter before strong downscaling, and exact pass-through of pixels whose sample
falls on a pixel centre, so the identity transform changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .geometry import apply_transform, invert_transform


def _bilinear(src: np.ndarray, sx: np.ndarray, sy: np.ndarray, padding: str) -> np.ndarray:
    """Bilinear samples of ``src`` (HxWxC) at float coordinates; pixel centres at integers.

    Computed directly from the coordinates, so a sample that falls on a pixel centre
    returns that pixel exactly. ``padding``: "reflection" (mirror about the edge pixel
    centres), "border" (repeat the edge) or "zeros".
    """
    h, w = src.shape[:2]
    if padding == "reflection":
        sx, sy = _reflect(sx, w), _reflect(sy, h)
    elif padding == "border":
        sx, sy = np.clip(sx, 0, w - 1), np.clip(sy, 0, h - 1)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    out = np.zeros(sx.shape + src.shape[2:], np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            val = src[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += np.where(valid[..., None], wx * wy * val, 0.0)
    return out


def _reflect(x: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros_like(x)
    period = 2 * (n - 1)
    x = np.abs(np.mod(x, period))
    return np.where(x > n - 1, period - x, x)


def _sample(
    src: np.ndarray, dst_to_src: np.ndarray, out_hw: tuple[int, int], origin: tuple[int, int],
    padding: str,
) -> np.ndarray:
    """Sample ``src`` (HxWxC) at ``dst_to_src`` of each output pixel, bilinearly.

    ``origin`` is the (x, y) of the output's top-left pixel in the destination frame.
    Where an output pixel spans more than two source pixels the source is first
    box-filtered by that integer factor, so downscaling does not alias.
    """
    a = np.asarray(dst_to_src, dtype=np.float64)
    oh, ow = out_hw
    ys, xs = np.mgrid[0:oh, 0:ow].astype(np.float64)
    xs += origin[0]
    ys += origin[1]
    sx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    sy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    h, w = src.shape[:2]
    factor = int(math.floor(math.sqrt(abs(np.linalg.det(a[:, :2])))))
    # Only the part of the source that is sampled is converted and filtered; reflection
    # then only happens at the photo's own edges, which the margin keeps away from.
    margin = 2 * max(factor, 1) + 2
    x0 = int(np.clip(math.floor(sx.min()) - margin, 0, w - 1))
    y0 = int(np.clip(math.floor(sy.min()) - margin, 0, h - 1))
    x1 = int(np.clip(math.ceil(sx.max()) + margin + 1, x0 + 1, w))
    y1 = int(np.clip(math.ceil(sy.max()) + margin + 1, y0 + 1, h))
    part = np.asarray(src[y0:y1, x0:x1], dtype=np.float64)
    sx, sy = sx - x0, sy - y0
    if factor >= 2 and min(part.shape[:2]) >= factor:
        # Mean over whole factor x factor blocks: block k covers source pixels
        # k*f .. k*f + f-1, centred at k*f + (f-1)/2.
        hh, ww = (part.shape[0] // factor), (part.shape[1] // factor)
        part = part[: hh * factor, : ww * factor].reshape(hh, factor, ww, factor, -1)
        part = part.mean(axis=(1, 3))
        sx = (sx - (factor - 1) / 2) / factor
        sy = (sy - (factor - 1) / 2) / factor
    # In bands of rows, to bound the temporary arrays for very large faces.
    step = max(1, (1 << 19) // max(ow, 1))
    return np.concatenate([_bilinear(part, sx[r : r + step], sy[r : r + step], padding)
                           for r in range(0, oh, step)])


def extract(image: np.ndarray, transform: np.ndarray, crop_size: int) -> np.ndarray:
    """Resample the face crop: ``(crop_size, crop_size, 3)`` float32 in [0, 255].

    Crop pixel ``(u, v)`` takes the photo at ``transform^-1 (u, v)``, bilinearly (after a
    box filter when the crop is more than 2x smaller than the face). Outside the photo
    the image is mirrored at its edge. The identity transform returns the pixels as
    they are.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    out = _sample(img, invert_transform(transform), (crop_size, crop_size), (0, 0),
                  "reflection")
    return out.astype(np.float32)


def extract_at(image: np.ndarray, transform: np.ndarray, crop_size: int,
               size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`extract` of the crop of ``transform`` (made for ``crop_size``) at another
    resolution ``size``, sampled straight from the photo (sharper than a resized crop);
    returns it and its photo -> crop transform."""
    f = size / crop_size
    sharp = np.asarray(transform, np.float64) * f
    sharp[:, 2] += 0.5 * f - 0.5  # pixel centres stay aligned
    return extract(image, sharp, size), sharp


def footprint(
    alpha: np.ndarray, transform: np.ndarray, image_shape: Sequence[int]
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """A crop-space ``alpha`` warped into the photo, where it is non-zero.

    Returns:
        ``(warped, (rows, cols))``: the warped alpha, float ``[0, 1]``, over the photo
        window ``rows, cols`` (slices) outside which the warped alpha is 0.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    size = np.asarray(alpha).shape[0]
    inv = invert_transform(transform)
    # The crop reaches one crop pixel past its border centres under bilinear sampling.
    corners = apply_transform(inv, [[-1, -1], [size, -1], [-1, size], [size, size]])
    x0 = max(0, int(math.floor(corners[:, 0].min())) - 1)
    y0 = max(0, int(math.floor(corners[:, 1].min())) - 1)
    x1 = min(w, int(math.ceil(corners[:, 0].max())) + 2)
    y1 = min(h, int(math.ceil(corners[:, 1].max())) + 2)
    window = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float64), window
    a = np.clip(np.asarray(alpha, dtype=np.float64), 0.0, 1.0)[:, :, None]
    warped = _sample(a, transform, (y1 - y0, x1 - x0), (x0, y0), "zeros")[:, :, 0]
    return warped, window


def paste(
    image: np.ndarray, crop: np.ndarray, transform: np.ndarray, alpha: np.ndarray,
    colour: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Warp ``crop`` back into ``image`` and blend it in where the warped ``alpha`` > 0.

    Args:
        image: ``HxWx3`` uint8 photo.
        crop: ``(S, S, 3)`` float in [0, 255], crop space.
        transform: the ``(2, 3)`` photo -> crop affine the crop was extracted with.
        alpha: ``(S, S)`` in [0, 1], crop space.
        colour: ``(larger crop, its transform)`` to take the colour from instead of
            ``crop`` (a magnified version of it); where pixels change is still decided
            by ``alpha`` and ``transform`` alone.

    Returns:
        A new uint8 image, ``round(a * warped + (1 - a) * image)`` where the warped alpha
        ``a`` is positive; every other pixel is byte-identical to ``image``. Call once per
        face, in sequence, for several (even overlapping) faces.
    """
    img = np.asarray(image)
    out = img.copy()
    a, (rows, cols) = footprint(alpha, transform, img.shape)
    if a.size == 0 or not np.any(a > 0):
        return out
    y0, x0 = rows.start, cols.start
    src, src_transform = (crop, transform) if colour is None else colour
    warped = _sample(np.asarray(src, dtype=np.float64), src_transform, a.shape, (x0, y0),
                     "border")
    region = out[rows, cols]
    blend = a[:, :, None] * warped + (1 - a[:, :, None]) * region
    new = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    sel = a > 0
    region[sel] = new[sel]
    return out


def paste_reach(scale: float) -> int:
    """How far (crop pixels) from a photo pixel's crop position :func:`paste` reads, for a
    crop ``scale`` times larger than the photo: the bilinear neighbour, or, from 2x on,
    two box-filter blocks of ``floor(scale)`` pixels (see :func:`_sample`)."""
    if scale == 1:  # pixel centres on pixel centres: each photo pixel reads one crop pixel
        return 0
    f = math.floor(scale)
    return 1 if f < 2 else math.ceil(1.5 * f) + 1
