"""What the evaluation measures with, shared by the harness, the report and the realism
measures: file names of a run, the kinds of wrong key and of recognizer, and the working
resolution and detections dlib sees (so every measure looks at a face the same way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from .. import faces

RESULTS = "results.jsonl"
RUN = "run.json"
EXAMPLES = "examples"
WRONG_KINDS = ("random", "one_bit")
RECOGNIZER_NAMES = ("dlib", "facenet", "arcface")
EXAMPLE_KINDS = ("original", "anonymized", "recovered", "wrong_random", "other_key")

# As in faceveil.identity: crops under 160 px are upsampled to 192 px for dlib, whose
# detector and landmark predictor need faces of about 80 px.
_SMALL = 160
_UPSAMPLED = 192


def work_image(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """The image dlib works on (small crops upsampled to 192 px) and the scale used."""
    h, w = pixels.shape[:2]
    if max(h, w) >= _SMALL:
        return pixels, 1.0
    s = _UPSAMPLED / max(h, w)
    img = Image.fromarray(pixels).resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
    return np.asarray(img), s


def scale_box(box: Sequence[float], s: float) -> tuple[int, int, int, int]:
    return tuple(int(round(v * s)) for v in box)  # type: ignore[return-value]


def detections(pixels: np.ndarray, detector: str = "hog") -> list[tuple[int, int, int, int]]:
    """Face boxes found by dlib's HOG (or ``detector``; one upsampling, no turned passes),
    in the coordinates of ``pixels``."""
    img, s = work_image(pixels)
    dets = faces.detect(img, detector=detector, upsample=1, rotations=())
    return [scale_box(d[0], 1 / s) for d in dets]


def found(dets: Sequence[Sequence[int]], box: Sequence[int]) -> bool:
    """Whether a detection is the face in ``box``: one's centre lies inside the other."""
    def inside(p: tuple[float, float], b: Sequence[int]) -> bool:
        return b[0] <= p[0] <= b[0] + b[2] and b[1] <= p[1] <= b[1] + b[3]

    c = (box[0] + box[2] / 2, box[1] + box[3] / 2)
    return any(inside(c, d) or inside((d[0] + d[2] / 2, d[1] + d[3] / 2), box) for d in dets)
