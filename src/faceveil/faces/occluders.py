"""Occluders: what lies in front of a face inside its mask (a hand, a sleeve, a cloth, a
microphone, hair) is kept as it was; only the face behind it is replaced.

The rule, per face, on a crop sampled from the photo at :data:`WORK` px:

- the face's skin colour is learnt from small patches the landmarks point at (forehead,
  nose bridge, upper cheeks): median and spread of its rg chromaticity, which shading
  leaves alone, and its light;
- a pixel of the facial mask is an occluder candidate when it is not that skin and could
  be no one's skin (another chromaticity, outside skin's locus), or is far darker
  (black), or, with a face parser, when the parser does not call it face; shade on the
  face keeps its chromaticity and is not an occluder;
- above the brows, hair (a fringe, a hairline) has skin's chromaticity, so
  there a pixel is also a candidate when it is darker than :data:`HAIR_DARK` of the skin's
  light, or than :data:`HAIR_DARK_TEXTURED` and textured (the spread of its light over
  :data:`HAIR_TEXTURE` of the skin's): strands are, light shade on a forehead is smooth;
- below the nose tip, where beards, stubble and the jaw's shadow are, only a saturated
  colour (:data:`MIN_SATURATION`: a blue sleeve, a red cloth, a green glove) makes a
  candidate: black, grey and white there may be facial hair, which is face and is
  replaced (so black, grey and white occluders over the lower face are replaced too);
- only candidates that reach the mask's border through other candidates are kept
  (something in front of a face comes from outside it), after an opening that drops
  specks and threads thinner than :data:`MIN_WIDTH` of the face;
- privacy first: the eyes, brows, nose and mouth with a margin (:func:`protected_core`)
  are always replaced, whatever lies there, and at most :data:`MAX_SHARE` of the mask is
  kept (what lies deepest inside the face goes first). A face hidden behind a hand is
  still replaced wherever the rule does not keep it, its core always.

What is kept is removed from the crop mask with room for the paste's reach, so the
occluder's photo pixels stay byte for byte, and a soft edge on the face side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .geometry import apply_transform
from .landmarks import BROWS, EYE_LEFT, EYE_RIGHT, JAW, NOSE_BRIDGE_TOP, NOSE_TIP
from .masks import (
    dilate,
    erode,
    facial_mask,
    local_std,
    polygon_mask,
    shrink_to,
    soften,
)
from .warp import extract_at, paste_reach

if TYPE_CHECKING:
    from .regions import FaceRegion

WORK = 128  # px: the side of the crop the rule looks at (the model's crop when larger)
MAX_SHARE = 0.4  # of the facial mask: never more is kept
CORE_MARGIN = 0.04  # face widths around the eyes, brows, nose and mouth, always replaced
FEATHER = 0.03  # face widths: the soft edge between a kept occluder and the new face
MIN_WIDTH = 0.06  # face widths: thinner candidates (specks, threads, a face-edge band) are not kept
ZONE_RADIUS = 0.045  # face widths: the skin patches' radius
RG_TOL = (0.045, 0.08)  # rg-chromaticity distance from the skin that makes an occluder: bounds
DARK = 0.25  # darker than this share of the skin's light: an occluder (black hair, cloth)
SKIN_RED_OVER_GREEN = (0.03, 0.30)  # r - g of skin, any skin (rg chromaticity)
SKIN_GREEN = (0.24, 0.38)  # g of skin
# Above the brows: darker than HAIR_DARK of the skin's light, or than HAIR_DARK_TEXTURED
# with the light's spread over HAIR_TEXTURE of the skin's: hair.
HAIR_DARK = 0.45
HAIR_DARK_TEXTURED = 0.6
HAIR_TEXTURE = 0.06
TEXTURE_RADIUS = 0.03  # face widths: the neighbourhood of that spread
MIN_AGREE = 0.5  # share of the skin patches' pixels the skin model must describe
# rg-chromaticity distance from grey that a candidate below the nose tip needs: cloths,
# gloves and sleeves of a colour have it (blue 0.22, red 0.44, green 0.28), black, grey
# and white beards do not (brown, blond and red hair lie in skin's locus anyway).
MIN_SATURATION = 0.1


@dataclass(frozen=True)
class Occlusion:
    """What the occluder rule kept of one face.

    ``kept``: crop-space boolean mask of what stays as it was (the room for the paste's
    reach included); ``share``: the kept part of the facial mask; ``pixels``: about how
    many photo pixels that is; ``rule``: ``"colour"`` or ``"parser"`` when the rule ran,
    else why it did not (``"no-landmarks"``, ``"no-skin-model"``); ``feather``: the soft
    edge's width in crop pixels.
    """

    kept: np.ndarray = field(repr=False)
    share: float
    pixels: int
    rule: str
    feather: int = 1
    core: np.ndarray | None = field(default=None, repr=False)

    def carve(self, mask: np.ndarray) -> np.ndarray:
        """The soft crop ``mask`` with what is kept cut out: 0 there, rising to the mask's
        own value over :attr:`feather` pixels on the face's side; the core keeps the
        mask's own values (an occluder's edge against it is sharp)."""
        m = np.asarray(mask, np.float32)
        if not self.kept.any():
            return m
        carved = np.minimum(m, soften(~self.kept, self.feather, outside=True))
        return carved if self.core is None else np.where(self.core, m, carved)

    def as_json(self) -> dict:
        """The report's view of it."""
        return {"rule": self.rule, "kept_share": round(self.share, 4),
                "kept_px": self.pixels}


def protected_core(landmarks_crop: np.ndarray, size: int) -> np.ndarray:
    """The pixels that are always replaced: each eye with its brow, the nose and the
    mouth, each the convex hull of its landmarks grown by :data:`CORE_MARGIN` face widths;
    ``(size, size)`` boolean."""
    lm = np.asarray(landmarks_crop, np.float64)
    grow = CORE_MARGIN * max(float(np.hypot(*(lm[16] - lm[0]))), 1.0)
    left = np.vstack([lm[17:22], lm[EYE_LEFT]])
    right = np.vstack([lm[22:27], lm[EYE_RIGHT]])
    parts = (left, right, lm[NOSE_BRIDGE_TOP:36], lm[48:60])
    return np.logical_or.reduce([polygon_mask(p, size, grow) for p in parts])


def skin_zones(lm: np.ndarray) -> np.ndarray:
    """Centres of the patches whose colour is the face's skin: three on the forehead,
    two on the nose bridge, one high on each cheek."""
    up = lm[NOSE_BRIDGE_TOP] - lm[8]
    up /= max(float(np.hypot(*up)), 1e-9)
    nose = float(np.hypot(*(lm[NOSE_TIP] - lm[NOSE_BRIDGE_TOP])))
    brows = lm[BROWS]
    forehead = [brows[i] + up * 0.3 * nose for i in (2, 5, 7)]
    cheeks = [0.4 * lm[41] + 0.3 * lm[31] + 0.3 * lm[2],
              0.4 * lm[46] + 0.3 * lm[35] + 0.3 * lm[14]]
    return np.array(forehead + [lm[28], lm[29]] + cheeks)


def chromaticity(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rg, intensity)`` of ``HxWx3`` RGB: the normalized red and green ``R/(R+G+B)``,
    ``G/(R+G+B)``, which shading scales out (a shadow on skin keeps them, a hand or a
    cloth of another colour does not), and the mean of the channels."""
    rgb = np.asarray(rgb, np.float32)
    total = rgb.sum(axis=-1, keepdims=True)
    return rgb[..., :2] / np.maximum(total, 1.0), total[..., 0] / 3.0


def skin_locus(rg: np.ndarray) -> np.ndarray:
    """Whether an rg chromaticity could be anyone's skin, lit or in shade (red above
    green by :data:`SKIN_RED_OVER_GREEN`, green within :data:`SKIN_GREEN`): true for
    skin from pale to dark and for brown hair, false for white, grey, black and the
    colours of most cloths."""
    over = rg[..., 0] - rg[..., 1]
    return ((over >= SKIN_RED_OVER_GREEN[0]) & (over <= SKIN_RED_OVER_GREEN[1])
            & (rg[..., 1] >= SKIN_GREEN[0]) & (rg[..., 1] <= SKIN_GREEN[1]))


def non_skin(rgb: np.ndarray, lm: np.ndarray, face_width: float) -> np.ndarray | None:
    """Pixels of ``rgb`` that are not skin: outside :func:`skin_locus` and another
    chromaticity than the skin of the patches :func:`skin_zones` picks (by more than
    :data:`RG_TOL`, widened in the dark, where chromaticity is noise), or far darker than
    that skin (:data:`DARK`: black hair, a black cloth), or above the brows dark, or dark
    and textured (:data:`HAIR_DARK`, :data:`HAIR_DARK_TEXTURED`: hair). Shade on the face
    keeps its chromaticity and is smooth, so it is no occluder. Colours are read
    3x3-averaged (JPEG noise is no occluder). None when the patches show no consistent
    skin."""
    texture = local_std(chromaticity(rgb)[1], max(1, round(TEXTURE_RADIUS * face_width)))
    rgb = _box3(rgb)
    size = rgb.shape[0]
    ys, xs = np.mgrid[0:size, 0:size]
    zone = np.zeros((size, size), bool)
    r = max(ZONE_RADIUS * face_width, 1.5)
    for cx, cy in skin_zones(lm):
        zone |= np.hypot(xs - cx, ys - cy) <= r
    rg, light = chromaticity(rgb)
    if zone.sum() < 20:
        return None
    skin_rg = np.median(rg[zone], axis=0)
    skin_light = float(np.median(light[zone]))
    dist = np.hypot(rg[..., 0] - skin_rg[0], rg[..., 1] - skin_rg[1])
    tol = float(np.clip(4 * 1.4826 * np.median(dist[zone]), *RG_TOL))
    if skin_light < 20 or np.mean(dist[zone] <= tol) < MIN_AGREE:
        return None
    # In shade the tolerance grows as the light falls below 60% of the skin's.
    widen = np.maximum(1.0, 0.6 * skin_light / np.maximum(light, 1.0))
    other = (~skin_locus(rg) & (dist > tol * widen)) | (light < DARK * skin_light)
    # Below the nose tip (along the face's own up axis) only a saturated colour counts:
    # black, grey or white there may be a beard.
    down = lm[8] - lm[NOSE_BRIDGE_TOP]
    down /= max(float(np.hypot(*down)), 1e-9)
    below = (xs - lm[NOSE_TIP][0]) * down[0] + (ys - lm[NOSE_TIP][1]) * down[1] > 0
    saturated = np.hypot(rg[..., 0] - 1 / 3, rg[..., 1] - 1 / 3) >= MIN_SATURATION
    # Above the brows' highest point: beside the eyes the face turns away from the light
    # (darker) and creases, and that is face.
    brow_top = float(np.min(lm[BROWS] @ down))
    above = xs * down[0] + ys * down[1] < brow_top
    hair = above & ((light < HAIR_DARK * skin_light) | (
        (light < HAIR_DARK_TEXTURED * skin_light) & (texture > HAIR_TEXTURE * skin_light)))
    return (other & (saturated | ~below)) | hair


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 mean of each channel (edges repeated): JPEG noise is not an occluder."""
    p = np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = a.shape[:2]
    return sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def border_connected(candidates: np.ndarray, hull: np.ndarray, limit: int) -> np.ndarray:
    """The candidates that reach ``hull``'s border through candidates (8-connected); when
    they are more than ``limit`` pixels, only those nearest the border (in steps through
    candidates) that fit in it."""
    front = candidates & hull & ~erode(hull, 1)
    reached = front.copy()
    steps = np.where(front, 0, -1)
    k = 0
    while front.any():
        k += 1
        front = (dilate(front, 1) > 0) & candidates & ~reached
        reached |= front
        steps[front] = k
    if reached.sum() <= limit:
        return reached
    counts = np.cumsum(np.bincount(steps[reached]))
    last = int(np.searchsorted(counts, limit, side="right")) - 1
    return reached & (steps <= last) & (steps >= 0) if last >= 0 else np.zeros_like(reached)


def _upsampled(mask: np.ndarray, size: int) -> np.ndarray:
    idx = np.arange(size) * mask.shape[0] // size
    return np.asarray(mask)[np.ix_(idx, idx)]


def occlusion(pixels: np.ndarray, region: FaceRegion, face: np.ndarray | None = None
              ) -> Occlusion:
    """What to keep of ``region``'s face as occluders in ``pixels`` (see the module's
    docstring). ``face``: a face parser's crop-space face classes, which then decide what
    is face instead of the skin colour."""
    crop = region.crop_size
    none = np.zeros((crop, crop), bool)
    if region.landmarks is None:
        return Occlusion(none, 0.0, 0, "no-landmarks")
    size = max(crop, WORK)
    rgb, transform = extract_at(pixels, region.transform, crop, size)
    lm = apply_transform(transform, region.landmarks)
    width = max(float(np.hypot(*(lm[JAW][-1] - lm[JAW][0]))), 1.0)
    hull = facial_mask(lm, size) > 0
    if face is None:
        candidates = non_skin(rgb, lm, width)
        if candidates is None:
            return Occlusion(none, 0.0, 0, "no-skin-model")
        rule = "colour"
    else:
        candidates, rule = ~_upsampled(np.asarray(face) > 0, size), "parser"
    scale = math.sqrt(abs(np.linalg.det(np.asarray(region.transform, float)[:, :2])))
    feather = max(1, round(FEATHER * width * crop / size))
    core = protected_core(apply_transform(region.transform, region.landmarks), crop)
    guard = _upsampled(core, size)
    r = max(1, round(MIN_WIDTH * width / 2))
    # Opened inside the mask: a thin band of background along its edge goes too.
    inside = candidates & hull & ~guard
    opened = dilate(erode(inside, r, True).astype(np.float32), r) > 0
    hull_c = facial_mask(apply_transform(region.transform, region.landmarks), crop) > 0
    limit = MAX_SHARE * hull.sum()
    for _ in range(4):  # the bound holds for the crop mask, the paste's reach included
        kept_w = border_connected(opened & inside, hull, int(limit))
        if not kept_w.any():
            return Occlusion(none, 0.0, 0, rule, feather, core)
        # Grown by the paste's reach, so the occluder's photo pixels read no new face;
        # never into the core.
        kept = (dilate(shrink_to(kept_w, crop).astype(np.float32), paste_reach(scale)) > 0
                ) & ~core
        share = float((kept & hull_c).sum() / max(hull_c.sum(), 1))
        if share <= MAX_SHARE:
            photo_px = int(round(kept_w.sum() / (scale * size / crop) ** 2))
            return Occlusion(kept, share, photo_px, rule, feather, core)
        limit *= 0.9 * MAX_SHARE / share
    return Occlusion(none, 0.0, 0, rule, feather, core)
