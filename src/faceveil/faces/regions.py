"""Face regions: every face to anonymize in a photo, aligned to a model's framing, with
its soft mask; hand-drawn boxes and aligned inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..options import Detection
from .align import Framing, framing_box
from .detectors import (
    DEFAULT_DETECTOR,
    DEFAULT_MIN_FACE,
    DEFAULT_ROTATIONS,
    DEFAULT_UPSAMPLE,
    find_detections,
)
from .geometry import (
    DEDUP_IOU,
    Box,
    apply_transform,
    as_rgb,
    clip_box,
    overlap,
    similarity_transform,
)
from .landmarks import dlib_model, landmarks68, points5_of
from .masks import crop_mask, crop_transform, facial_mask, soften, template_mask
from .occluders import Occlusion, occlusion
from .warp import extract_at


@dataclass
class FaceRegion:
    """One face to anonymize: where it is and how its crop is made.

    ``transform`` maps photo ``(x, y)`` to crop pixels; ``mask`` is the soft facial mask
    in crop space (``mask > 0`` is the hard mask); ``landmarks`` are in the photo.
    ``index`` numbers detections left to right (then top to bottom) as ``exclude`` and
    the preview count them; user boxes follow the detections. ``occlusion`` says what
    the mask leaves out as occluders in front of the face (None: the rule did not run).
    """

    box: Box
    transform: np.ndarray
    crop_size: int
    mask: np.ndarray
    landmarks: np.ndarray | None
    source: str
    score: float | None
    index: int | None = None
    occlusion: Occlusion | None = None


def _region(
    image: np.ndarray, box: Box, source: str, score: float | None, framing: Framing,
    crop_size: int, index: int | None, angle: float = 0.0, fit_box: Box | None = None,
) -> FaceRegion:
    lm = landmarks68(image, box if fit_box is None else fit_box, angle)
    transform = crop_transform(lm, framing, crop_size)
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
    img = as_rgb(image)
    h, w = img.shape[:2]
    found, low = find_detections(img, detector, upsample, rotations, threshold)
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
    img = as_rgb(image)
    h, w = img.shape[:2]
    x, y, bw, bh = (int(v) for v in box)
    clipped = clip_box(x, y, x + bw - 1, y + bh - 1, w, h) if bw > 0 and bh > 0 else None
    if clipped is None:
        raise InputError(f"--box {x},{y},{bw},{bh} is empty or outside the {w}x{h} image")
    return _region(img, (x, y, bw, bh), "box", None, framing, crop_size, index)


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
    img = as_rgb(image)
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
    rects, scores, _ = dlib_model("hog").run(work, 1, _ALIGNED_HOG_THRESHOLD)
    best = None
    for r, score in zip(rects, scores, strict=True):
        box = (r.left(), r.top(), r.width(), r.height())
        if overlap(box, expected)[0] >= DEDUP_IOU and (best is None
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


PARSER_FEATHER = 0.04  # soft edge of parser masks, as a fraction of the crop side


def _parsed_face(parser, pixels: np.ndarray, region: FaceRegion) -> np.ndarray | None:
    """The parser's face classes in ``region``'s crop (hard), None when it sees none."""
    from .parsing import INPUT_SIZE, parse_mask

    # Parse a sharp crop at the parser's own resolution, straight from the photo, and
    # bring the labels down to the model's crop.
    sharp = extract_at(pixels, region.transform, region.crop_size, INPUT_SIZE)[0]
    hard = parse_mask(parser, sharp, size=region.crop_size)
    return hard if hard.any() else None


def _keep_occluders(pixels: np.ndarray, region: FaceRegion, face: np.ndarray | None) -> None:
    """Cut what lies in front of the face out of ``region``'s mask (:mod:`.occluders`);
    with a parser's ``face`` classes, the mask is those and the landmark outline, less
    what is kept."""
    occ = occlusion(pixels, region, face)
    region.occlusion = occ
    if face is None:
        region.mask = occ.carve(region.mask)
    else:
        hard = ((face > 0) | (region.mask > 0)) & ~occ.kept
        region.mask = soften(hard, PARSER_FEATHER * region.crop_size)


def find_regions(pixels: np.ndarray, *, framing: Framing, crop_size: int,
                 detection: Detection, mask: np.ndarray | None = None
                 ) -> tuple[list[FaceRegion], list[dict]]:
    """The face regions to anonymize in ``pixels`` for a model's crop framing and size,
    and what was left out (see :func:`find_faces`).

    ``detection`` holds the options (:class:`faceveil.options.Detection`). With its
    face-parser weights the masks come from the parser's segmentation instead of the
    landmarks; a user ``mask`` (white = replace) overrides both and implies an aligned
    input.
    """
    if detection.aligned or mask is not None:
        regions = [aligned_region(pixels, framing=framing, crop_size=crop_size, mask=mask)]
        skipped: list[dict] = []
    else:
        regions, skipped = find_faces(
            pixels, framing=framing, crop_size=crop_size,
            detector=detection.detector or DEFAULT_DETECTOR, threshold=detection.threshold,
            min_face=detection.min_face, boxes=detection.boxes, exclude=detection.exclude)
    parser = None
    if detection.parser_weights and mask is None:
        from .parsing import parser_for

        parser = parser_for(detection.parser_weights)
    for r in regions:
        face = None if parser is None else _parsed_face(parser, pixels, r)
        if face is not None and not detection.occluders:
            r.mask = soften(face, PARSER_FEATHER * crop_size)
        elif detection.occluders and mask is None:
            _keep_occluders(pixels, r, face)
    return regions, skipped


def face_number(region: FaceRegion, position: int) -> int:
    """A face's number in messages: its detection number (as ``--exclude`` and the
    preview count), else its position."""
    return position if region.index is None else region.index


def resolution_notes(regions: Sequence[FaceRegion], crop_size: int) -> list[str]:
    """One note when faces are much larger than the model's crops (they come out soft),
    naming them; none otherwise (what to do about it depends on the models on this
    machine: :func:`faceveil.pipeline.anonymize.resolution_notes` adds it)."""
    shrunk = []
    for i, r in enumerate(regions):
        scale = float(np.sqrt(abs(np.linalg.det(np.asarray(r.transform)[:, :2]))))
        if scale < 0.5:
            shrunk.append((face_number(r, i), 1 / scale))
    if not shrunk:
        return []
    names = ", ".join(str(n) for n, _ in shrunk)
    most = max(f for _, f in shrunk)
    which = f"face {names} is" if len(shrunk) == 1 else f"faces {names} are"
    return [f"{which} shrunk up to {most:.1f}x to fit the {crop_size} px model, so "
            "the new faces look soft"]
