"""Does a face model make faces, and do anonymized photos still look like photos?
Realism measured with dlib's detectors, colour and a two-sample test.

* :func:`model_samples`: the model's own faces, deterministic DDIM (eta 0) from seeded
  Gaussian noise: what every anonymized face is made of.
* :func:`face_detected`: whether dlib sees a face in an aligned crop. Crops under 160 px
  are first resized to 192 px (bicubic), as the identity measures do; then HOG runs with
  one pyramid upsampling, the CNN (MMOD) with none (the face then spans about 150 px,
  well above the CNN's 80 px minimum).
* :func:`photo_detections` and :func:`found_at`: in a whole photo, whether a face is
  detected again at a known box (one box's centre inside the other), so an anonymized
  photo can be compared with its original face by face.
* :func:`detection_scores` and :func:`score_at`: the same with the detector's score (how
  sure it is), not only yes or no: HOG from :data:`HOG_FLOOR` up (found: score >= 0,
  dlib's threshold), the CNN's confidence (it reports nothing below 0).
* :func:`region_delta_e`: the colour shift of a replaced face, CIE76 between the mean
  CIELAB colours of the original and the anonymized photo over the face's hard-mask
  footprint.
* :func:`ncm_two_sample`: can one simple rule tell anonymized faces from real ones?
  Leave-one-out nearest class mean on embeddings (chance 50%), and leave one person out.
* :func:`contact_sheet`: rows of versions (original, anonymized, recovered), one column
  per face, to look at.

These numbers say whether a face reads as a face to a detector, not whether it looks
natural to a person: look at the contact sheets as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import faces
from ..diffusion.engine import Engine
from ..diffusion.models import Backbone
from ..pipeline import harmonize
from ..pipeline.pixels import face_window as hard_footprint
from .protocol import detections, found, scale_box, work_image

DETECTORS = ("hog", "cnn")
HOG_FLOOR = -1.0  # HOG scores are reported from here; a face is found from 0
# dlib's CNN finds faces from about 80 px: narrower ones get one upsampling (4x the cost).
CNN_SMALL_FACE = 80


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


def cnn_upsample(boxes: Sequence[Sequence[int]]) -> int:
    """The CNN's upsampling for a photo with faces in ``boxes``: none when every face is
    at least :data:`CNN_SMALL_FACE` px wide, else one."""
    return 0 if boxes and min(b[2] for b in boxes) >= CNN_SMALL_FACE else 1


def detection_scores(pixels: np.ndarray, detector: str = "hog", upsample: int = 1
                     ) -> list[tuple[tuple[int, int, int, int], float]]:
    """Every upright detection in a photo with its score, ``(box, score)`` in the photo's
    coordinates (small images upsampled to 192 px first, as :func:`photo_detections`):
    HOG from :data:`HOG_FLOOR`, the CNN from its own 0."""
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}")
    img, s = work_image(np.ascontiguousarray(pixels, dtype=np.uint8))
    dets = faces.scored_detections(img, detector, upsample=upsample,
                                   floor=HOG_FLOOR if detector == "hog" else 0.0)
    return [(scale_box(d.box, 1 / s), d.score) for d in dets]


def score_at(scored: Sequence[tuple[Sequence[int], float]], box: Sequence[int]
             ) -> float | None:
    """The best score of a detection that is the face in ``box`` (None: none there)."""
    hits = [s for b, s in scored if found([b], box)]
    return float(max(hits)) if hits else None


def face_scores(versions: dict[str, np.ndarray], boxes: Sequence[Sequence[int]],
                cnn_versions: Sequence[str] | None = None
                ) -> list[dict[str, dict[str, float | None]]]:
    """Per face box: ``{detector: {version: score at the box or None}}`` for each of
    :data:`DETECTORS` and each photo in ``versions`` (the versions of one image, say
    original, anonymized and recovered; the CNN, 10 to 20 times slower than HOG, only on
    ``cnn_versions`` when given). Each detector runs once per version: HOG with one
    upsampling, the CNN with :func:`cnn_upsample` of the boxes as dlib sees them (small
    images are upsampled to 192 px first)."""
    _, scale = work_image(np.ascontiguousarray(next(iter(versions.values())), np.uint8))
    ups = {"hog": 1, "cnn": cnn_upsample([[v * scale for v in b] for b in boxes])}
    which = {"hog": list(versions), "cnn": list(versions if cnn_versions is None
                                                 else cnn_versions)}
    found_ = {d: {v: detection_scores(versions[v], d, ups[d]) for v in which[d]}
              for d in DETECTORS}
    return [{d: {v: score_at(found_[d][v], box) for v in which[d]} for d in DETECTORS}
            for box in boxes]


def footprint(mask: np.ndarray, transform: np.ndarray, shape: Sequence[int]
              ) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Where a face's hard mask (crop space; > 0 is the face) lands in a photo of
    ``shape``: ``(boolean footprint, its window)``."""
    return hard_footprint(mask, transform, shape)


def mean_lab(pixels: np.ndarray, mask: np.ndarray, transform: np.ndarray
             ) -> np.ndarray | None:
    """Mean CIELAB colour of the photo over a face's hard-mask footprint (None: empty)."""
    inside, window = footprint(mask, transform, pixels.shape)
    if not inside.any():
        return None
    return harmonize.rgb_to_lab(pixels[window][inside]).mean(axis=0)


def region_delta_e(original: np.ndarray, anonymized: np.ndarray, mask: np.ndarray,
                   transform: np.ndarray) -> float | None:
    """CIE76 colour shift of a replaced face: the distance between the mean CIELAB
    colours of ``original`` and ``anonymized`` over the face's hard-mask footprint
    (``mask`` and ``transform`` as a :class:`~faceveil.faces.FaceRegion` or an opened
    record's face holds them); None for an empty footprint."""
    inside, window = footprint(mask, transform, original.shape)
    if not inside.any():
        return None
    return harmonize.colour_shift(original[window], anonymized[window], inside)


def ncm_two_sample(a: np.ndarray, b: np.ndarray, groups_a: Sequence | None = None,
                   groups_b: Sequence | None = None) -> dict | None:
    """How well a nearest-class-mean rule tells embeddings ``a`` (say, real faces) from
    ``b`` (anonymized ones): each sample goes to the class whose mean, computed without
    it, is nearer (L2).

    Without groups that is leave-one-out. With ``groups_a`` and ``groups_b`` (a person
    per sample) every sample of the held-out sample's person is left out of both means
    (leave one person out): otherwise a person's other photo in the same class pulls
    the sample home, and a class holding two photos per person scores above chance for
    that alone. Returns ``accuracy`` (raw), ``balanced`` (the mean of the two classes'
    accuracies: 50% at chance whatever their sizes), ``class_a``, ``class_b``, ``n_a``,
    ``n_b``; None when a class has fewer than two samples.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    grouped = groups_a is not None and groups_b is not None

    def labels(groups: Sequence | None, n: int) -> np.ndarray:
        out = np.empty(n, object)  # 1-D whatever the labels are (strings, tuples)
        out[:] = list(groups) if grouped else [None] * n
        return out

    ga, gb = labels(groups_a, len(a)), labels(groups_b, len(b))

    def right(k: int, own: np.ndarray, own_g: np.ndarray, other: np.ndarray,
              other_g: np.ndarray) -> bool | None:
        if grouped:
            keep_own, keep_other = own_g != own_g[k], other_g != own_g[k]
        else:  # leave this sample out only
            keep_own, keep_other = np.arange(len(own)) != k, np.ones(len(other), bool)
        if not keep_own.any() or not keep_other.any():
            return None  # the person fills a class: no mean to compare with
        x = own[k]
        return bool(np.linalg.norm(x - own[keep_own].mean(0))
                    < np.linalg.norm(x - other[keep_other].mean(0)))

    ra = [r for k in range(len(a)) if (r := right(k, a, ga, b, gb)) is not None]
    rb = [r for k in range(len(b)) if (r := right(k, b, gb, a, ga)) is not None]
    if not ra or not rb:
        return None
    acc_a, acc_b = float(np.mean(ra)), float(np.mean(rb))
    return {"accuracy": float((sum(ra) + sum(rb)) / (len(ra) + len(rb))),
            "balanced": (acc_a + acc_b) / 2, "class_a": acc_a, "class_b": acc_b,
            "n_a": len(ra), "n_b": len(rb)}


def contact_sheet(columns: Sequence[Sequence[np.ndarray | None]], labels: Sequence[str],
                  tile: int = 128, label_width: int = 84) -> np.ndarray:
    """A contact sheet: one column per face, one row per version (``labels[r]`` written
    at the left of row ``r``); each picture fitted into a ``tile`` square (Lanczos),
    a missing one left white. Returns the RGB uint8 sheet."""
    from PIL import Image, ImageDraw

    rows = len(labels)
    sheet = Image.new("RGB", (label_width + tile * len(columns), tile * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for r, label in enumerate(labels):
        draw.text((4, r * tile + tile // 2 - 6), label, fill="black")
    for c, column in enumerate(columns):
        for r, picture in enumerate(list(column)[:rows]):
            if picture is None:
                continue
            img = Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8))
            scale = tile / max(img.width, img.height)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.Resampling.LANCZOS)
            sheet.paste(img, (label_width + c * tile + (tile - img.width) // 2,
                              r * tile + (tile - img.height) // 2))
    return np.asarray(sheet)


def sheet_window(box: Sequence[int], shape: Sequence[int], margin: float = 0.25
                 ) -> tuple[slice, slice]:
    """A square photo window around a face ``box`` with ``margin`` of its side on each
    side (cut at the photo's border): what a contact sheet shows of a face."""
    x, y, w, h = box
    side = int(max(w, h) * (1 + 2 * margin))
    x0, y0 = max(0, x + w // 2 - side // 2), max(0, y + h // 2 - side // 2)
    return slice(y0, min(int(shape[0]), y0 + side)), slice(x0, min(int(shape[1]), x0 + side))
