"""Plane geometry of faces: similarity transforms, affine maps, boxes and their overlap.

Coordinates. Pixel ``(row i, column j)`` has its centre at ``(x, y) = (j, i)``, in the
photo and in a crop alike, so the identity transform maps every pixel onto itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[int, int, int, int]


# Two detections of one face (HOG and CNN boxes differ in size) are merged above these.
DEDUP_IOU = 0.3


DEDUP_OVERLAP_OF_SMALLER = 0.6


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking ``src`` to
    ``dst`` (Umeyama 1991), as a ``(2, 3)`` affine matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("degenerate landmarks: all points coincide")
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    refl = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ refl @ vt
    scale = float(np.trace(np.diag(sig) @ refl)) / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(N, 2)`` points through a ``(2, 3)`` affine."""
    a = np.asarray(transform, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ a[:, :2].T + a[:, 2]


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """The inverse of a ``(2, 3)`` affine."""
    m = np.vstack([np.asarray(transform, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(m)[:2]


def as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError("expected an HxWx3 uint8 RGB image")
    return np.ascontiguousarray(img)


def clip_box(left: int, top: int, right: int, bottom: int, w: int, h: int) -> Box | None:
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(w, right + 1), min(h, bottom + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def overlap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(IoU, intersection / smaller area)`` of two (x, y, w, h) boxes (0 for empty ones)."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    union, smaller = area_a + area_b - inter, min(area_a, area_b)
    return (inter / union if union > 0 else 0.0), (inter / smaller if smaller > 0 else 0.0)


def same_face(box: Box, others: Sequence[Box]) -> bool:
    return any(iou >= DEDUP_IOU or ov >= DEDUP_OVERLAP_OF_SMALLER
               for iou, ov in (overlap(box, o) for o in others))
