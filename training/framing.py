"""Measure the crop framing of the face model: dlib's 68 landmarks on average.

faceveil aligns a detected face to the framing its model was trained on. For
``face64-v1`` that framing is the one of the DCGAN faces, measured here as
the mean position of dlib's 68 landmarks over training-range DCGAN faces.

dlib's HOG detector misses many 64x64 faces, so each face is first
upsampled (bicubic, to 192 px by default). Two ways to get the face rectangle
the 68-point shape predictor (``shape_predictor_68_face_landmarks.dat`` from
``face_recognition_models``) needs:

* ``detector`` (default, used by ``export.py``): the HOG detector's rectangle,
  skipping faces it misses (roughly 40-50% of DCGAN faces) and drawing more faces
  until ``count`` are landmarked. This is how faceveil itself landmarks
  faces in photos, so the framing is expressed in the same landmark
  "dialect" as at run time.
* ``whole-frame``: the whole upsampled frame is the rectangle for every face.
  Measured on 314 faces that both methods landmark, it puts the eyes about
  3 px (of 64) higher and the jaw about 1.5 px wider on each side than the
  detector rectangle does, and on inspection the detector-rectangle
  landmarks fit the faces visibly better, hence not the default.

Landmarks are mapped back to the 64 px crop in pixel-index coordinates
(pixel ``i``'s centre is at ``i``; with an upsampling factor ``s``:
``x64 = (x_up + 0.5) / s - 0.5``) and normalized as ``u = x64 / 64``,
``v = y64 / 64``.

Run ``python training/framing.py`` to print the measurement as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dcgan  # noqa: E402


def predictor_path(name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """Path of a dlib model file shipped by ``face_recognition_models``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def _to_pil(faces: torch.Tensor) -> list[Image.Image]:
    """``(N, 3, H, W)`` images in [-1, 1] -> PIL RGB images."""
    arr = ((faces.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).numpy()]


def landmarks_of_faces(
    faces: torch.Tensor, upsample: int = 192, method: str = "detector"
) -> tuple[np.ndarray, np.ndarray]:
    """68 dlib landmarks of each face, in the crop's pixel-index coordinates.

    Args:
        faces: ``(N, 3, S, S)`` images in [-1, 1].
        upsample: side in pixels the faces are resized to (bicubic) first.
        method: ``"detector"``: the face rectangle comes from dlib's HOG
            detector (run with one pyramid upsampling) and faces where it does
            not find exactly one face are marked invalid; ``"whole-frame"``:
            the whole frame is the rectangle for every face (all valid).

    Returns:
        ``(points, valid)``: ``(N, 68, 2)`` array of ``(x, y)`` in the
        original crop's pixels (NaN where invalid) and an ``(N,)`` bool mask.
    """
    import dlib

    if method not in ("detector", "whole-frame"):
        raise ValueError(f"unknown method {method!r}")
    predictor = dlib.shape_predictor(str(predictor_path()))
    detector = dlib.get_frontal_face_detector() if method == "detector" else None
    scale = upsample / faces.shape[-1]
    frame = dlib.rectangle(0, 0, upsample - 1, upsample - 1)
    points = np.full((faces.shape[0], 68, 2), np.nan)
    valid = np.zeros(faces.shape[0], dtype=bool)
    for i, img in enumerate(_to_pil(faces)):
        big = np.ascontiguousarray(
            np.asarray(img.resize((upsample, upsample), Image.Resampling.BICUBIC))
        )
        rect = frame
        if detector is not None:
            found = detector(big, 1)
            if len(found) != 1:
                continue
            rect = found[0]
        shape = predictor(big, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        points[i] = (pts + 0.5) / scale - 0.5
        valid[i] = True
    return points, valid


def measure_landmarks68(
    count: int = 500,
    upsample: int = 192,
    method: str = "detector",
    max_faces: int = 5000,
) -> tuple[list[list[float]], dict[str, int]]:
    """Mean landmark positions over ``count`` training-range DCGAN faces.

    Faces are taken in order from the training seed stream
    (``1_000_000, 1_000_001, ...``) until ``count`` of them have landmarks
    (with ``method="detector"``, faces the HOG detector misses are skipped).

    Args:
        count: number of landmarked faces to average.
        upsample: side the faces are upsampled to before landmarking.
        method: see :func:`landmarks_of_faces`.
        max_faces: give up after this many faces.

    Returns:
        68 ``[u, v]`` pairs in [0, 1] crop coordinates (``u = x / 64``),
        rounded to 5 decimals, and ``{"faces_used", "faces_tried"}``.
    """
    generator = dcgan.load_generator("cpu")
    found: list[np.ndarray] = []
    tried = 0
    while sum(len(f) for f in found) < count and tried < max_faces:
        batch = min(256, max_faces - tried)
        faces = dcgan.generate_faces(generator, dcgan.training_seeds(tried, batch))
        pts, valid = landmarks_of_faces(faces, upsample, method)
        found.append(pts[valid])
        tried += batch
    pts = np.concatenate(found)[:count]
    if len(pts) == 0:
        raise RuntimeError("no face could be landmarked")
    mean = pts.mean(axis=0) / dcgan.IMAGE_SIZE
    landmarks = [[round(float(u), 5), round(float(v), 5)] for u, v in mean]
    return landmarks, {"faces_used": len(pts), "faces_tried": tried}


def mean_landmarks68(count: int = 500, upsample: int = 192) -> list[list[float]]:
    """The ``framing.landmarks68`` entry of ``faceveil.json`` (detector method)."""
    return measure_landmarks68(count, upsample)[0]


def main(argv: list[str] | None = None) -> int:
    """Print the mean landmarks as JSON."""
    p = argparse.ArgumentParser(description="Measure the mean dlib-68 framing of DCGAN faces.")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--upsample", type=int, default=192)
    p.add_argument("--method", choices=["detector", "whole-frame"], default="detector")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    landmarks, info = measure_landmarks68(args.count, args.upsample, args.method)
    print(json.dumps({"landmarks68": landmarks, **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
