"""Facial masks in crop space: the landmark outline, feathering, user masks, and the one
dilation and erosion every caller uses.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .align import Framing, align_transform
from .geometry import apply_transform
from .landmarks import BROWS, CHIN, JAW, NOSE_BRIDGE_TOP, NOSE_TIP
from .warp import paste_reach


def _convex_hull(points: np.ndarray) -> np.ndarray:
    # Andrew's monotone chain; counter-clockwise in a y-up frame.
    pts = sorted(map(tuple, np.asarray(points, dtype=np.float64)))

    def half(seq):
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def _polygon_depth(hull: np.ndarray, size: int) -> np.ndarray:
    """Signed distance of every pixel centre of a ``size`` square to the boundary of a
    convex polygon (:func:`_convex_depth`)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    return _convex_depth(hull, xs, ys)


def _convex_depth(hull: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Signed distance of the points ``(xs, ys)`` to the boundary of a convex polygon,
    positive inside (exact inside, a lower bound on the distance outside)."""
    depth = np.full(np.shape(xs), np.inf)
    centre = hull.mean(0)
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        edge = b - a
        length = np.hypot(*edge)
        if length < 1e-9:
            continue
        n = np.array([edge[1], -edge[0]]) / length
        if np.dot(centre - a, n) > 0:  # make n point outwards
            n = -n
        depth = np.minimum(depth, -((xs - a[0]) * n[0] + (ys - a[1]) * n[1]))
    return depth


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


# The facial mask's shape (see facial_mask): growth and soft ramp as fractions of the face
# width, forehead in nose lengths. The ramp trades realism against privacy. Wider ramps
# blend the new face in better: on the test photos' 20 faces with face64-v2 (format 1
# runs), anonymized faces that dlib finds again, HOG / CNN, relative to the originals:
# 0.55 / 0.63 at 0.08, 0.70 / 0.84 at 0.16 (benchmarks/builtin_quality.py). But the ramp
# publishes a blend of the new face and the original, which links the file to its
# original photo like any pixel comparison at the mask's edge: magnitude linking over the
# whole mask, 16 candidates, 75% at 0.08 and 94% at 0.16, at chance (6% and 12%) in the
# fully replaced core (benchmarks/attacks.py); and deniable files cannot publish a
# residual there, so their recovery worsens with the ramp. Privacy first: the narrower
# ramp.
MASK_DILATE = 0.03


MASK_FEATHER = 0.08


MASK_FOREHEAD = 0.6


def face_outline(landmarks68_crop: np.ndarray, *, forehead: float = MASK_FOREHEAD) -> np.ndarray:
    """Convex outline of the face: jaw from ear to ear, brows, and the brows raised
    along the face's vertical axis by ``forehead`` x the nose length for the forehead."""
    lm = np.asarray(landmarks68_crop, dtype=np.float64)
    up = lm[NOSE_BRIDGE_TOP] - lm[CHIN]
    up /= max(np.hypot(*up), 1e-9)
    raise_by = forehead * np.hypot(*(lm[NOSE_TIP] - lm[NOSE_BRIDGE_TOP]))
    return _convex_hull(np.vstack([lm[JAW], lm[BROWS], lm[BROWS] + up * raise_by]))


def facial_mask(
    landmarks68_crop: np.ndarray,
    size: int,
    *,
    dilate: float | None = None,
    feather: float | None = None,
    forehead: float | None = None,
) -> np.ndarray:
    """Soft facial mask in crop space, ``(size, size)`` float32 in [0, 1].

    The hard part (``mask > 0``) is the convex outline of the face from the raised brows
    (forehead) to the chin and from ear to ear, which holds the eyes, nose and mouth,
    dilated by ``dilate`` x the face width; hair above the forehead and the background
    beside the jaw stay out. The soft part ramps from the hard edge inwards over
    ``feather`` x the face width, so values in (0, 1) only occur where the hard mask is 1
    and the blend never reaches past the hard mask. Where the outline runs past the
    crop (the chin, in a tight framing), the crop's border is an edge of the ramp too:
    the pasted face fades out there instead of ending in a straight line.

    Args:
        landmarks68_crop: ``(68, 2)`` landmarks in crop pixel coordinates.
        size: crop side in pixels.
        dilate: outward growth, as a fraction of the face width (jaw end to jaw end).
        feather: width of the inner soft ramp, same unit.
        forehead: how far above the brows the mask reaches, in nose lengths.
        (Each defaults to ``MASK_DILATE``, ``MASK_FEATHER``, ``MASK_FOREHEAD``.)
    """
    dilate = MASK_DILATE if dilate is None else dilate
    feather = MASK_FEATHER if feather is None else feather
    forehead = MASK_FOREHEAD if forehead is None else forehead
    lm = np.asarray(landmarks68_crop, dtype=np.float64)
    face_width = max(np.hypot(*(lm[16] - lm[0])), 1.0)
    depth = _polygon_depth(face_outline(lm, forehead=forehead), size) + dilate * face_width
    ramp = max(feather * face_width, 1.0)
    # Pixels from the crop's border (0 for the outermost ones): the ramp's other edge.
    edge = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float64)
    inner = np.minimum(depth, np.minimum(edge[:, None], edge[None, :]))
    soft = np.where(depth >= 0, _smoothstep((inner + 0.5) / ramp), 0.0)
    return soft.astype(np.float32)


def fit_crop(transform: np.ndarray, landmarks68: np.ndarray, size: int) -> np.ndarray:
    """``transform`` (photo -> crop) changed as little as possible so that the hard
    facial mask of ``landmarks68`` (photo pixels) lies inside the ``size`` crop.

    The mask can only replace what the crop holds. A tight framing (face64's chin sits
    on the crop's bottom edge) would otherwise leave the original chin below the crop
    unreplaced, behind a mask that claims to cover it: a leak (4-7% of the outline's
    pixels on FRL portraits and the test photos with face64-v2). Moving the face costs
    the model least: its framing is then off by up to about 8 crop pixels, which the
    context around the face carries. Scaling it down about the eyes and mouth instead
    made the new faces much harder to find (dlib HOG found 53% of the test photos' new
    faces, against 79% moved and 89% cut; docs/measured.md), so the face is scaled only
    where its outline is larger than the crop. The transform is sealed in the record:
    recovery needs no change.
    """
    t = np.asarray(transform, dtype=np.float64)
    lm = apply_transform(t, landmarks68)
    width = max(np.hypot(*(lm[16] - lm[0])), 1.0)
    outline = face_outline(lm)
    lo = outline.min(0) - MASK_DILATE * width
    hi = outline.max(0) + MASK_DILATE * width
    last = size - 1.0  # the outermost pixel centres are 0 and size - 1
    if lo.min() >= 0 and hi.max() <= last:
        return t
    s = min(1.0, last / float((hi - lo).max()))
    centre = last / 2
    lo, hi = centre + s * (lo - centre), centre + s * (hi - centre)
    shift = np.maximum(0.0, -lo) - np.maximum(0.0, hi - last)
    out = t * s
    out[:, 2] = centre + s * (t[:, 2] - centre) + shift
    return out


def crop_transform(landmarks68: np.ndarray, framing: Framing, size: int) -> np.ndarray:
    """The photo -> crop transform of a face: its alignment to ``framing``
    (:func:`~faceveil.faces.align.align_transform`), moved so the crop holds its whole
    mask (:func:`fit_crop`). Every face is framed by it, in the pipeline and for
    training (``training/celeba.py``)."""
    return fit_crop(align_transform(landmarks68, framing, size), landmarks68, size)


def polygon_mask(points: np.ndarray, size: int, grow: float = 0.0) -> np.ndarray:
    """Boolean ``(size, size)`` mask of the convex hull of ``points`` (crop pixels), grown
    outwards by ``grow`` pixels."""
    return _polygon_depth(_convex_hull(points), size) + grow >= 0


def shrink_to(mask: np.ndarray, size: int) -> np.ndarray:
    """A square boolean mask brought to ``size`` by max pooling (enlarging: nearest), so a
    pixel is set when any pixel it covers is: nothing set is lost."""
    m = np.asarray(mask).astype(np.float32)
    return _resize_max(_resize_max(m, size, 0), size, 1) > 0


def template_mask(framing: Framing, size: int) -> np.ndarray:
    """:func:`facial_mask` of the framing's mean landmarks: the mask of a typical face."""
    return facial_mask(framing.landmarks68 * size, size)


def soften(hard: np.ndarray, feather_px: float, outside: bool = False) -> np.ndarray:
    """Feather any hard mask inwards: 1 from ``feather_px`` inside its edge, falling towards
    the edge (its outermost pixels keep a positive value), 0 outside.

    For masks that are not convex outlines (a face parser's, a user's). The distance to
    the edge is counted in 3x3 erosions; ``outside``: whether the pixels beyond the
    border count as inside (then the border is no edge).
    """
    hard_b = np.asarray(hard) > 0
    n = max(int(math.ceil(feather_px)), 1)
    depth = np.zeros(hard_b.shape, np.float32)
    cur = hard_b
    for _ in range(n):
        depth += cur
        cur = erode(cur, 1, outside)  # survives if its whole 3x3 neighbourhood is inside
    return np.where(hard_b, _smoothstep(depth / n), 0.0).astype(np.float32)


def crop_mask(mask: np.ndarray, crop_size: int) -> np.ndarray:
    """A user's photo mask (white = replace) as the hard crop mask of
    :func:`aligned_region`'s scaling, ``(crop_size, crop_size)`` float32 in {0, 1}.

    It never fails open: a crop pixel is inside when any photo pixel it covers is white
    (max pooling, not an area threshold), and the result is grown by the crop pixels
    that :func:`paste` reads around a photo pixel (its bilinear neighbours, and their
    box-filter blocks when the crop is 2x or more larger than the photo), so that every
    white photo pixel is taken from the new crop alone.

    Raises:
        InputError: the mask has no white pixel.
    """
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.any(axis=2) if m.dtype == bool else m.max(axis=2)
    if m.size == 0 or not (m > 0).any():
        raise InputError("the mask has no white pixel: nothing to anonymize")
    t = (m > 0).astype(np.float32)
    # Adaptive max pooling covers every source pixel when shrinking; nearest copies each
    # source pixel to at least one crop pixel when enlarging.
    both = _resize_max(_resize_max(t, crop_size, 0), crop_size, 1)
    ry, rx = (paste_reach(crop_size / n) for n in m.shape[:2])
    grown = _running_max(_running_max(both, ry, 0), rx, 1)
    return (grown > 0).astype(np.float32)


def _resize_max(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``a`` resized to ``size`` along ``axis`` as torch's ``adaptive_max_pool2d``
    (shrinking: bin ``i`` is ``[floor(i n / size), ceil((i + 1) n / size))``) or
    ``interpolate(mode="nearest")`` (enlarging: source ``floor(i * float32(n / size))``)
    does it, index for index."""
    n = a.shape[axis]
    if n >= size:
        starts = np.arange(size) * n // size
        ends = -(-(np.arange(1, size + 1) * n) // size)
        moved = np.moveaxis(a, axis, 0)
        out = np.stack([moved[s:e].max(axis=0) for s, e in zip(starts, ends, strict=True)])
        return np.moveaxis(out, 0, axis)
    scale = np.float32(n) / np.float32(size)
    src = np.minimum(np.floor(np.arange(size, dtype=np.float32) * scale).astype(np.int64), n - 1)
    return np.take(a, src, axis=axis)


def _running_max(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """The largest value within ``r`` along ``axis`` (the window clipped at the ends), by
    doubling: maxima over windows of 1, 2, 4, ... then two overlapping ones cover 2r+1."""
    if r <= 0:
        return a
    k = 2 * r + 1
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    m = np.moveaxis(np.pad(a, pad, constant_values=-np.inf), axis, 0)
    w = 1
    while 2 * w <= k:
        m = np.maximum(m[:-w], m[w:])
        w *= 2
    out = np.maximum(m[: a.shape[axis]], m[k - w: k - w + a.shape[axis]])
    return np.moveaxis(out, 0, axis)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Grey dilation of a (soft) mask: each pixel takes the largest value within ``r``
    pixels (Chebyshev). Any copy of ``mask`` shifted by up to ``r`` pixels lies under
    it, feathered edge included; a boolean mask is dilated as 0/1."""
    if r <= 0:
        return np.asarray(mask, np.float32).copy()
    a = np.asarray(mask, np.float32)
    return _running_max(_running_max(a, r, 0), r, 1)


def erode(mask: np.ndarray, r: int, outside: bool = False) -> np.ndarray:
    """Boolean erosion: the pixels whose whole ``(2r+1)^2`` neighbourhood is in ``mask``
    (``outside``: whether the pixels beyond the border count as in the mask)."""
    pad = np.pad(np.asarray(mask).astype(np.int32), r + 1, constant_values=int(outside))
    c = pad.cumsum(0).cumsum(1)
    k = 2 * r + 1
    total = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return total[: mask.shape[0], : mask.shape[1]] == k * k


def box_blur(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Mean over 2r + 1 samples along ``axis``, zero padding."""
    a = np.moveaxis(np.asarray(a, np.float64), axis, 0)
    c = np.cumsum(np.pad(a, [(r + 1, r)] + [(0, 0)] * (a.ndim - 1)), axis=0)
    return np.moveaxis((c[2 * r + 1:] - c[: -2 * r - 1]) / (2 * r + 1), 0, axis)


def local_std(a: np.ndarray, r: int) -> np.ndarray:
    """Standard deviation of ``a`` over each pixel's (2r + 1)^2 neighbourhood (clipped at
    the border): texture, such as hair's strands against skin."""
    ones = np.ones_like(a, dtype=np.float64)
    count = box_blur(box_blur(ones, r, 0), r, 1)
    mean = box_blur(box_blur(a, r, 0), r, 1) / count
    square = box_blur(box_blur(np.square(a, dtype=np.float64), r, 0), r, 1) / count
    return np.sqrt(np.maximum(square - mean * mean, 0.0))
