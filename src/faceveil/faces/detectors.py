"""Face detection: CenterFace and dlib's HOG and CNN detectors, their unions, candidates.

CenterFace runs in :mod:`.centerface`; every detector's box is brought to dlib's (HOG's)
box convention here, where :mod:`.landmarks` predicts the 68 points.


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
accepts. The default (``DEFAULT_*`` below) is CenterFace (:mod:`.centerface`) at
a threshold of 0.2: it misses one face, a 55 px face darkened to near black, which it
lists as a candidate. Unions with dlib's detectors add time and false alarms, no face.
HOG (upsampled once, plus two passes on the photo turned by -35 and +35 degrees for
heads tilted beyond the +-35 degrees upright HOG tolerates) and dlib's CNN stay as
choices. Every detector's box is calibrated to dlib's (HOG's) box convention, in which
the 68-point shape predictor was trained (see :class:`DetectedFace`).

``DEFAULT_MIN_FACE`` is 16: CenterFace's box is at least 0.81x the width of every face
it found there, so every face of 24 px and more is anonymized.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..options import Detection as OptionsDetection
from .geometry import Box, apply_transform, as_rgb, clip_box, same_face, similarity_transform
from .landmarks import dlib_mean_shape68, dlib_model, points5_of

DEFAULT_DETECTOR = "centerface"


DEFAULT_UPSAMPLE = 1


DEFAULT_ROTATIONS = (-35.0, 35.0)


DEFAULT_MIN_FACE = OptionsDetection().min_face  # declared in faceveil.options


@dataclass(frozen=True)
class DetectedFace:
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
               angle: float, w: int, h: int) -> DetectedFace | None:
    x, y, bw, bh = (int(round(v)) for v in fit)
    box = clip_box(x, y, x + bw - 1, y + bh - 1, w, h) if bw > 0 and bh > 0 else None
    if box is None:
        return None
    return DetectedFace(box, (x, y, bw, bh), float(score), source, float(angle))


def _hog_pass(img: np.ndarray, upsample: int, angle: float, floor: float) -> list[DetectedFace]:
    """HOG on the photo turned by ``angle`` degrees (counter-clockwise on screen), scores
    from ``floor`` up; boxes mapped back: same size, centred where the face is."""
    from PIL import Image

    h, w = img.shape[:2]
    if angle == 0:
        rects, scores, _ = dlib_model("hog").run(img, upsample, floor)
        return [d for r, s in zip(rects, scores, strict=True)
                if (d := _detection((r.left(), r.top(), r.width(), r.height()), s, "hog", 0.0,
                                    w, h))]
    turned = Image.fromarray(img).rotate(angle, resample=Image.Resampling.BILINEAR,
                                         expand=True)
    rects, scores, _ = dlib_model("hog").run(np.asarray(turned), upsample, floor)
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


def _cnn_pass(img: np.ndarray, upsample: int, floor: float) -> list[DetectedFace]:
    h, w = img.shape[:2]
    out = []
    for d in dlib_model("cnn")(img, upsample):
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


def _centerface_pass(img: np.ndarray, floor: float) -> list[DetectedFace]:
    from . import centerface

    h, w = img.shape[:2]
    out = []
    for raw in centerface.centerface(img, floor):
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


def find_detections(
    img: np.ndarray, detector: str, upsample: int, rotations: Sequence[float],
    threshold: float | None = None,
) -> tuple[list[DetectedFace], list[tuple[DetectedFace, float]]]:
    """``(faces, candidates)``: the detections at or above the threshold, and those
    between the candidate floor and the threshold that overlap no face, each with the
    threshold it missed. Members of a union run in order; a box that overlaps one found
    before is the same face and dropped."""
    members = detector_members(detector)
    if threshold is not None and not math.isfinite(threshold):
        raise InputError(f"the detection threshold must be a finite number, not {threshold}")
    found: list[DetectedFace] = []
    low: list[tuple[DetectedFace, float]] = []
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
            elif not same_face(d.box, [f.box for f in found]):
                found.append(d)
    candidates: list[tuple[DetectedFace, float]] = []
    for d, own in sorted(low, key=lambda c: -c[0].score):
        if not same_face(d.box, [f.box for f in found] + [c.box for c, _ in candidates]):
            candidates.append((d, own))
    return found, candidates


def scored_detections(image: np.ndarray, detector: str, *, upsample: int = DEFAULT_UPSAMPLE,
                      floor: float | None = None) -> list[DetectedFace]:
    """Every upright detection of one detector (``"centerface"``, ``"hog"`` or ``"cnn"``)
    with its score, from ``floor`` up (default: the detector's candidate floor), boxes in
    dlib's convention: no threshold, turned passes or merging. For measuring how sure a
    detector is of a face (``faceveil eval``'s realism), not for choosing faces: that is
    :func:`detect`. dlib's CNN reports nothing below 0 whatever the floor."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r} (one of {', '.join(DETECTORS)})")
    spec = DETECTORS[detector]
    low = spec.candidate_floor(spec.threshold) if floor is None else float(floor)
    img = as_rgb(image)
    if detector == "centerface":
        return _centerface_pass(img, low)
    if detector == "cnn":
        return _cnn_pass(img, upsample, low)
    return _hog_pass(img, upsample, 0.0, low)


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
            points; its model ships inside faceveil, run with onnxruntime),
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
    found, _ = find_detections(as_rgb(image), detector, upsample, rotations, threshold)
    return [(d.box, d.score, d.source) for d in found]
