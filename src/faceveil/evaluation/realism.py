"""Does a face model make faces? Realism measured with dlib's two face detectors.

* :func:`model_samples`: the model's own faces, deterministic DDIM (eta 0) from seeded
  Gaussian noise: what every anonymized face is made of.
* :func:`face_detected`: whether dlib sees a face in an aligned crop. Crops under 160 px
  are first resized to 192 px (bicubic), as the identity measures do; then HOG runs with
  one pyramid upsampling, the CNN (MMOD) with none (the face then spans about 150 px,
  well above the CNN's 80 px minimum).
* :func:`photo_detections` and :func:`found_at`: in a whole photo, whether a face is
  detected again at a known box (one box's centre inside the other), so an anonymized
  photo can be compared with its original face by face.

These numbers say whether a face reads as a face to a detector, not whether it looks
natural to a person: look at the grids the benchmark writes as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import faces
from ..diffusion.engine import Engine
from ..diffusion.models import Backbone
from .protocol import detections, found, work_image

DETECTORS = ("hog", "cnn")


def model_samples(
    backbone: Backbone, count: int, *, steps: int = 50, spacing: str = "leading",
    seed: int = 0, batch_size: int = 16,
) -> list[np.ndarray]:
    """``count`` faces the model makes from seeded noise, as ``HxWx3`` uint8 crops.

    Sample ``i`` depends only on ``seed`` and ``i`` (the noise is drawn in one stream
    and cut into batches), never on ``batch_size``.
    """
    engine = Engine(backbone, steps=steps, spacing=spacing)
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(count, *backbone.latent_shape, generator=g)
    out: list[np.ndarray] = []
    for start in range(0, count, batch_size):
        z = noise[start:start + batch_size].to(backbone.device, backbone.dtype)
        x = backbone.decode(engine.denoise(z)).float().cpu()
        out += list(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return out


def face_detected(crop: np.ndarray, detector: str = "hog") -> bool:
    """Whether dlib's ``detector`` (``"hog"`` or ``"cnn"``) finds a face in an aligned
    crop (small crops upsampled to 192 px first)."""
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}")
    img, _ = work_image(np.ascontiguousarray(crop, dtype=np.uint8))
    upsample = 1 if detector == "hog" else 0
    return bool(faces.detect(img, detector=detector, upsample=upsample, rotations=()))


def detection_rate(crops: Sequence[np.ndarray], detector: str = "hog") -> float:
    """Share of ``crops`` in which :func:`face_detected` finds a face (NaN for none)."""
    if not crops:
        return float("nan")
    return float(np.mean([face_detected(c, detector) for c in crops]))


def photo_detections(pixels: np.ndarray, detector: str = "hog") -> list[tuple[int, ...]]:
    """Face boxes in a photo: HOG or CNN with one upsampling, no turned passes."""
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}")
    return detections(pixels, detector)


def found_at(detections: Sequence[Sequence[int]], box: Sequence[int]) -> bool:
    """Whether one of ``detections`` is the face in ``box`` (one's centre in the other)."""
    return found(detections, box)
