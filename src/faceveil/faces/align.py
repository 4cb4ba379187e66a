"""Crop framing: where a model expects the landmarks in its square crop, and the
similarity that takes a face there.

A :class:`Framing` stores landmark positions normalized by the crop side,
``u = x / size``; ``x = u * size`` in a crop of ``size`` pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .geometry import Box, apply_transform, similarity_transform
from .landmarks import EYE_LEFT, EYE_RIGHT, MOUTH_LEFT, MOUTH_RIGHT, dlib_mean_shape68, points5_of


@dataclass(frozen=True, eq=False)
class Framing:
    """Where a model expects the facial landmarks in its square crop.

    ``landmarks68`` holds the mean positions of dlib's 68 landmarks, ``(68, 2)``, in
    crop units: ``u = x / size``, ``v = y / size``.
    """

    landmarks68: np.ndarray

    def __post_init__(self) -> None:
        lm = np.asarray(self.landmarks68, dtype=np.float64)
        if lm.shape != (68, 2) or not np.all(np.isfinite(lm)):
            raise ValueError("a framing needs 68 finite (u, v) landmark positions")
        lm.setflags(write=False)
        object.__setattr__(self, "landmarks68", lm)

    @classmethod
    @functools.lru_cache(maxsize=1)
    def ffhq(cls) -> Framing:
        """FFHQ-style framing (hair and some background), from dlib's mean face.

        The FFHQ alignment rule applied to :func:`dlib_mean_shape68`: with ``eye_avg``,
        ``eye_to_eye``, ``mouth_avg`` and ``eye_to_mouth`` from the landmarks,
        ``x = eye_to_eye - rot90(eye_to_mouth)``, scaled to
        ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``, ``y = rot90(x)``,
        ``c = eye_avg + 0.1 eye_to_mouth``; the crop is the square ``c +- x +- y``
        (side ``2 |x|``).
        """
        lm = dlib_mean_shape68()
        eye_l, eye_r = lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0)
        eye_avg = (eye_l + eye_r) / 2
        eye_to_eye = eye_r - eye_l
        mouth_avg = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) / 2
        eye_to_mouth = mouth_avg - eye_avg
        x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
        x /= np.hypot(*x)
        x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
        y = np.flipud(x) * [-1, 1]
        c = eye_avg + eye_to_mouth * 0.1
        origin = c - x - y
        side = 2 * np.hypot(*x)
        rel = lm - origin
        u = rel @ (x / np.hypot(*x)) / side
        v = rel @ (y / np.hypot(*y)) / side
        return cls(np.stack([u, v], axis=1))

    @classmethod
    def from_dict(cls, d: dict) -> Framing:
        """A framing from ``{"landmarks68": [[u, v], ...]}``, as in a model's faceveil.json."""
        try:
            return cls(np.asarray(d["landmarks68"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"invalid framing: {e}") from None

    def to_dict(self) -> dict:
        """The inverse of :meth:`from_dict`."""
        return {"landmarks68": np.round(self.landmarks68, 6).tolist()}

    def points5(self) -> np.ndarray:
        """Eye centres, nose tip and mouth corners, ``(5, 2)``, in crop units."""
        return points5_of(self.landmarks68)


def align_transform(landmarks68: np.ndarray, framing: Framing, crop_size: int) -> np.ndarray:
    """The ``(2, 3)`` affine taking photo ``(x, y)`` to crop pixels, for this framing.

    Least-squares similarity of the face's 5 derived points onto
    ``framing.points5() * crop_size``.
    """
    return similarity_transform(points5_of(landmarks68), framing.points5() * crop_size)


def framing_box(framing: Framing, width: int, height: int | None = None) -> Box:
    """Where a detector box would sit in an aligned crop of this framing, ``width`` x
    ``height`` pixels: dlib's mean shape lives in box units, so fitting it onto the
    framing's landmarks places the unit box."""
    height = width if height is None else height
    t = similarity_transform(dlib_mean_shape68(), framing.landmarks68)
    (x0, y0), (x1, y1) = apply_transform(t, [[0.0, 0.0], [1.0, 1.0]])
    return (int(round(x0 * width)), int(round(y0 * height)),
            max(1, int(round((x1 - x0) * width))), max(1, int(round((y1 - y0) * height))))
