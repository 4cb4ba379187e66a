"""The new face in the photo's own colours, light and grain: its CIELAB statistics
matched to the skin around its mask (forehead, temples and neck, picked by the landmarks
and a skin test that leaves out hair and red cloth; the band's skin where they give too
little, a typical skin colour where no skin is in sight), then, as
it is pasted, the light near its edge brought to the skin just outside it and grain added
up to that skin's fine detail, so the replaced region does not read as a patch.

What it reads, for the privacy account: only photo pixels OUTSIDE the face's footprint
(what the anonymized photo publishes unchanged), so it tells an observer of the file
nothing they do not already see. Matching to the original's inner face would be closer
(measured: colour shift 0.6 against 3.1) but would publish a statistic of the replaced
face, and linking files to their originals by colour then succeeds 94% of the time among
16 portraits, against 31% with the surroundings (benchmarks/attacks.py --colour).

Colour is CIELAB (CIE 1976) of sRGB (IEC 61966-2-1) with the D65 white.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import faces

# sRGB primaries to CIE XYZ, D65 white.
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_EPS = 216 / 24389  # CIE's (6/29)^3
_KAPPA = 24389 / 27

# The band read around a face: from GAP photo pixels outside its footprint, BAND x the
# face's width wide (forehead, temples, ears, jaw and neck around a portrait).
GAP = 3
BAND = 0.15
MIN_PIXELS = 200  # fewer skin-like pixels than this: the whole band is used
STD_RANGE = (0.25, 4.0)  # how far the colour spread may be scaled
# ... under the ``skin`` rule, whose spread (skin alone) is narrower than a face's (lips,
# cheeks): the model's colour blotches shrink, the face's own colour stays.
SKIN_STD_RANGE = (0.6, 1.5)
CHROMA_SIGMA = 1.5  # crop pixels: the low-pass of the new face's colour (a*, b*)
UPSCALE = 4  # the new face is pasted from a crop this many times larger (bicubic)


def rgb_to_lab(rgb255: np.ndarray) -> np.ndarray:
    """CIELAB (L* 0..100) of sRGB values in [0, 255], any shape (..., 3)."""
    c = np.clip(np.asarray(rgb255, np.float64) / 255.0, 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE_D65
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """sRGB in [0, 255] (float, clipped to the gamut) of CIELAB values."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE_D65
    c = np.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
    return 255.0 * np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def skin_like(lab: np.ndarray) -> np.ndarray:
    """A crude, public skin-colour rule in CIELAB: chroma at least 6, hue 15 to 95
    degrees, L* 15 to 97. It leaves out grey backgrounds, white and black clothes and
    most dark hair; it only picks which band pixels describe skin."""
    lab = np.asarray(lab, np.float64)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1]))
    return (chroma >= 6) & (hue >= 15) & (hue <= 95) & (lab[..., 0] >= 15) & (lab[..., 0] <= 97)


def skin_locus(lab: np.ndarray) -> np.ndarray:
    """The stricter skin test the zones around a face are read with: :func:`skin_like`
    with chroma ``MIN_CHROMA`` to ``MAX_CHROMA``, hue within ``SKIN_HUE`` (blond and brown
    hair are yellower) and a* at most ``MAX_RED`` (red curtains, cloths and shirts are
    redder than skin; measured: skin's 99th percentile a* is under 30 even in the warm,
    saturated test portraits, 18 on FRL's studio ones)."""
    lab = np.asarray(lab, np.float64)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1]))
    return (skin_like(lab) & (hue >= SKIN_HUE[0]) & (hue <= SKIN_HUE[1])
            & (chroma >= MIN_CHROMA) & (chroma <= MAX_CHROMA) & (lab[..., 1] <= MAX_RED))


@dataclass(frozen=True)
class SkinStats:
    """What a new face is matched to: the CIELAB median and robust spread of the pixels
    ``rule`` picked, and the skin's left-to-right L* slope (per face width; 0 where it
    was not measured)."""

    median: np.ndarray
    spread: np.ndarray
    slope: float
    rule: str


# The rules, best first: the skin the landmarks point at around the face (forehead above
# the mask, temples beside the eyes, the neck under the chin), then the skin in the
# whole band, then a typical skin colour where no skin is in sight; "grey" where the
# band has no colour at all.
RULES = ("skin", "band-skin", "typical", "grey")
# The ``typical`` rule's colour and spread: the medians, over 17 FRL studio portraits
# (every third), of their faces' robust skin colour and spread (measured once; a
# constant, no photo's statistic).
TYPICAL_SKIN = (62.0, 10.0, 10.5)
TYPICAL_SPREAD = (8.0, 1.6, 1.9)
ZONE_BAND = 0.3  # the zones reach this x the face's width out (past the chin's shade)
MIN_CHROMA = 9.0  # skin in the zones is at least this colourful (warm white walls are not)
SKIN_HUE = (20.0, 72.0)  # CIELAB hue of skin in the zones (blond hair is yellower)
MIN_FACE = 24  # photo pixels: a narrower face is matched to its band (too few skin pixels)
MAX_CHROMA = 50.0  # skin is rarely more saturated; red shirts and cloths are
MAX_RED = 30.0  # a*: nor is it redder
GREY_CHROMA = 4.0  # a band whose median chroma is under this is black-and-white
MAX_SLOPE = 30.0  # L* per face width: a stronger measured side light is not followed


def _face_frame(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Origin (nose bridge), right and up unit vectors and width of a face from its 68
    landmarks, in whatever space they are given."""
    lm = np.asarray(lm, np.float64)
    up = lm[27] - lm[8]
    up /= max(np.hypot(*up), 1e-9)
    return lm[27], np.array([-up[1], up[0]]), up, max(np.hypot(*(lm[16] - lm[0])), 1.0)


def face_coords(lm: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray,
                                                                         np.ndarray]:
    """Pixel positions in the face's own frame: (across, up) in face widths from the top
    of the nose bridge (landmarks and pixels in the same space)."""
    origin, right, up, width = _face_frame(lm)
    dx, dy = xs - origin[0], ys - origin[1]
    return (dx * right[0] + dy * right[1]) / width, (dx * up[0] + dy * up[1]) / width


def _zones(lm: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where skin is expected around a face's mask: forehead over the brows (narrow, so
    temples' hair stays out), temples beside the eyes, and the neck straight under the
    chin (narrower than the jaw, so collars and shoulders stay out)."""
    _, lv = face_coords(lm, lm[:, 0], lm[:, 1])
    brows, nose_tip, chin = lv[17:27].mean(), lv[30], lv[8]
    forehead = (v > brows) & (np.abs(u) < 0.3)
    temples = (np.abs(u) > 0.35) & (v > nose_tip) & (v < brows + 0.1)
    neck = (v < chin - 0.1) & (np.abs(u) < 0.2)
    return forehead | temples | neck


def _robust(lab: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Which of ``lab`` lie near their dominant colour: within 2.5 robust deviations
    (1.4826 x MAD, at least 4 L* and 2.5 a*/b*) of the median on every channel."""
    keep = np.ones(len(lab), bool)
    for _ in range(rounds):
        if not keep.any():
            break
        med = np.median(lab[keep], axis=0)
        mad = np.maximum(1.4826 * np.median(np.abs(lab[keep] - med), axis=0),
                         [4.0, 2.5, 2.5])
        keep = (np.abs(lab - med) <= 2.5 * mad).all(axis=1)
    return keep


CLUSTER = np.array([8.0, 6.0, 6.0])  # L*, a*, b*: half-widths of a colour cluster
MIN_SHARE = 0.15  # a cluster (with its shade) holding less of the candidates is not the skin
SHADE = 20.0  # L*: how much darker than the lit skin its shaded part may be


def _lit_skin(lab: np.ndarray) -> np.ndarray:
    """Which of ``lab`` are the skin: the lightest colour cluster whose colour, lit and
    shaded, holds at least ``MIN_SHARE`` of them (and ``MIN_SKIN`` pixels). Mode
    seeking (a median within ``CLUSTER`` of the centre, five times) from seeds across
    the L* range finds the clusters; each is taken with its shade, the pixels of its
    colour (a*, b* within ``CLUSTER``) down to ``SHADE`` L* darker. Hair and the shade
    under the chin are darker than lit skin, so when they mix in, the skin is the
    lightest large cluster; its shade counts, as the lit part alone (a forehead's
    highlight) is lighter than the face's skin as a whole. (Reaching up as far
    instead lets a light wall's cluster win, with the darker pixels of its colour.)"""
    best, best_light = np.zeros(len(lab), bool), -np.inf
    if len(lab) < MIN_SKIN:
        return best
    for q in (20, 40, 60, 80, 95):
        centre = np.median(lab, axis=0)
        centre[0] = np.percentile(lab[:, 0], q)
        sel = np.zeros(len(lab), bool)
        for _ in range(5):
            sel = (np.abs(lab - centre) <= CLUSTER).all(axis=1)
            if not sel.any():
                break
            centre = np.median(lab[sel], axis=0)
        if not sel.any():
            continue
        shaded = (np.abs(lab[:, 1:] - centre[1:]) <= CLUSTER[1:]).all(axis=1) & (
            lab[:, 0] >= centre[0] - SHADE) & (lab[:, 0] <= centre[0] + CLUSTER[0])
        if shaded.sum() >= max(MIN_SKIN, MIN_SHARE * len(lab)) and centre[0] > best_light:
            best, best_light = shaded, centre[0]
    return best


def _spread(v: np.ndarray) -> np.ndarray:
    return 1.4826 * np.median(np.abs(v - np.median(v, axis=0)), axis=0)


@dataclass(frozen=True)
class Picked:
    """The pixels a face's colour is read from: their photo rows and columns, CIELAB
    values and, under the ``skin`` rule, their face-frame coordinates (across, up)."""

    rule: str
    rows: np.ndarray
    cols: np.ndarray
    lab: np.ndarray
    across: np.ndarray | None = None
    up: np.ndarray | None = None


def _with_occluders(region: faces.FaceRegion) -> np.ndarray:
    """The face's hard crop mask with what the occluder rule kept in front of it (a
    fringe of hair, a hand): the face whose surroundings are read, as what lies in front
    of a face is not around it."""
    hard = np.asarray(region.mask) > 0
    if region.occlusion is not None:
        hard = hard | region.occlusion.kept
    return hard.astype(np.float32)


def skin_pixels(photo: np.ndarray, region: faces.FaceRegion) -> Picked | None:
    """The published pixels a new face's colour is read from: outside the face's
    footprint, in the band around it (``GAP`` pixels out, ``BAND`` x the face's width
    wide). With landmarks and a face at least ``MIN_FACE`` pixels wide, the forehead,
    temple and neck zones of a wider band (``ZONE_BAND``), kept where skin-coloured
    (:func:`skin_locus`: chroma ``MIN_CHROMA`` to ``MAX_CHROMA``, hue within
    ``SKIN_HUE``, a* at most ``MAX_RED``), smooth (the smoother half: hair is strands)
    and in the lightest large colour cluster with its shade (:func:`_lit_skin`): rule
    ``skin``. Otherwise (fewer such pixels than ``MIN_SKIN`` and ``SKIN_AREA`` of the
    face box) the band's pixels that pass the same test, their lightest large cluster
    with its shade where it holds as many (``band-skin``, from ``MIN_PIXELS``
    candidates); where the band is colourless, ``grey``; where it holds too little skin,
    no pixel (``typical``: hair, backdrop and clothes are no guide to the face's
    colour). The band lies around the face's whole mask, occluders kept in front of it
    (a fringe of hair) included. None when the band holds no pixel (a face filling the
    photo)."""
    footprint, (rows, cols) = faces.footprint(_with_occluders(region), region.transform,
                                              photo.shape)
    if footprint.size == 0:
        return None
    zones = region.landmarks is not None and region.box[2] >= MIN_FACE
    width = max(1, int(round((ZONE_BAND if zones else BAND) * region.box[2])))
    # The window grown by the band, so the band is not cut at the footprint's edge.
    reach = GAP + width
    y0, x0 = max(0, rows.start - reach), max(0, cols.start - reach)
    y1 = min(photo.shape[0], rows.stop + reach)
    x1 = min(photo.shape[1], cols.stop + reach)
    inside = np.zeros((y1 - y0, x1 - x0), np.float32)
    inside[rows.start - y0: rows.stop - y0, cols.start - x0: cols.stop - x0] = footprint > 0
    near = ~(faces.dilate(inside, GAP) > 0)
    wide = (faces.dilate(inside, reach) > 0) & near
    band = wide if not zones else (faces.dilate(inside, GAP + max(
        1, int(round(BAND * region.box[2])))) > 0) & near
    if not band.any():
        return None
    lab = rgb_to_lab(photo[y0:y1, x0:x1])
    skin = band & skin_locus(lab)
    if zones:
        lm = np.asarray(region.landmarks, np.float64)
        ys, xs = np.nonzero(wide & skin_locus(lab))
        u, v = face_coords(lm, xs + x0, ys + y0)
        zone = _zones(lm, u, v)
        # Skin is smooth, hair is strands: keep the smoother half of the zones' pixels.
        rough = faces.local_std(lab[..., 0], max(1, int(round(0.015 * region.box[2]))))[ys, xs]
        if zone.sum() >= 2 * MIN_SKIN:
            zone &= rough <= max(SMOOTH_L, float(np.median(rough[zone])))
        ys, xs, u, v = ys[zone], xs[zone], u[zone], v[zone]
        keep = _lit_skin(lab[ys, xs])
        if keep.sum() >= max(MIN_SKIN, SKIN_AREA * region.box[2] ** 2):
            ys, xs = ys[keep], xs[keep]
            return Picked("skin", ys + y0, xs + x0, lab[ys, xs], u[keep], v[keep])
    if np.median(np.hypot(lab[band][:, 1], lab[band][:, 2])) < GREY_CHROMA:
        ys, xs = np.nonzero(band)
        return Picked("grey", ys + y0, xs + x0, lab[ys, xs])
    # The band's skin: its lightest large cluster and that colour's shade, enough of it.
    ys, xs = np.nonzero(skin)
    keep = np.zeros(len(ys), bool)
    if len(ys) >= MIN_PIXELS:
        keep = _lit_skin(lab[ys, xs])
    if keep.sum() >= max(MIN_SKIN, SKIN_AREA * region.box[2] ** 2):
        ys, xs = ys[keep], xs[keep]
        return Picked("band-skin", ys + y0, xs + x0, lab[ys, xs])
    # No skin in sight (hair, backdrop, clothes, coloured light): nothing to read.
    empty = np.zeros(0, np.int64)
    return Picked("typical", empty, empty, np.zeros((0, 3)))


def skin_stats(photo: np.ndarray, region: faces.FaceRegion) -> SkinStats | None:
    """What a new face is matched to (:func:`skin_pixels`): the median and spread of the
    pixels picked (robust under ``skin``, the standard deviation under the band rules,
    as the band mixes skin with what surrounds it), and under ``skin`` the left-to-right
    L* slope of the forehead and temples; under ``typical``, the constant
    ``TYPICAL_SKIN``. None where nothing is picked."""
    picked = skin_pixels(photo, region)
    if picked is None:
        return None
    v = picked.lab
    if picked.rule == "typical":
        return SkinStats(np.array(TYPICAL_SKIN), np.array(TYPICAL_SPREAD), 0.0, "typical")
    if picked.rule != "skin":
        return SkinStats(np.median(v, axis=0), v.std(axis=0), 0.0, picked.rule)
    lm = np.asarray(region.landmarks, np.float64)
    upper = _zones_above_nose(lm, picked.up)
    median = np.median(v, axis=0)
    if upper.sum() >= MIN_SKIN:  # the neck is shaded by the chin: L* from above if any
        median[0] = np.median(v[upper, 0])
    return SkinStats(median, _spread(v), _slope(v[:, 0], picked.across, picked.up, upper),
                     "skin")


MIN_SKIN = 30  # skin pixels the landmark zones must give for the ``skin`` rule
SKIN_AREA = 0.01  # ... and at least this share of the face box's area
SMOOTH_L = 2.0  # L*: local deviation under which a pixel always counts as smooth


_FALLBACK = {"band-skin": "the skin in the band around it (too little skin at its "
                          "forehead, temples and neck, or no landmarks)",
             "typical": "a typical skin colour (no skin in sight around it: its mask "
                        "covers it, or the light is coloured)",
             "grey": "the grey band around it (a black-and-white photo)"}


def colour_notes(regions, rules) -> list[str]:
    """One note naming the faces whose colour did not come from skin (``rules[i]``: the
    rule :func:`skin_stats` used for ``regions[i]``, "none" where nothing was picked),
    for ``--report``; none when every face's did. Faces whose rule is None (a crop made
    elsewhere, e.g. a video segment's keyframe) are left out."""
    by_rule: dict[str, list[str]] = {}
    for i, (r, rule) in enumerate(zip(regions, rules, strict=True)):
        if rule is not None and rule != "skin":
            by_rule.setdefault(rule, []).append(str(faces.face_number(r, i)))
    return [f"face {', '.join(n)}: colour matched to "
            + _FALLBACK.get(rule, "nothing (no published pixel around it); left as made")
            for rule, n in by_rule.items()]


def _zones_above_nose(lm: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The forehead and temple pixels (the neck is shaded by the chin: not a light cue)."""
    _, lv = face_coords(lm, lm[:, 0], lm[:, 1])
    return v > lv[30]


def _slope(light: np.ndarray, u: np.ndarray, v: np.ndarray, use: np.ndarray) -> float:
    """L* change per face width from the face's left to its right, fitted (least squares,
    L* = a + b u + c v) to the skin above the nose tip; 0 unless both sides give 10
    pixels. Clipped to ``MAX_SLOPE``."""
    if (use & (u < -0.15)).sum() < 10 or (use & (u > 0.15)).sum() < 10:
        return 0.0
    design = np.stack([np.ones(use.sum()), u[use], v[use]], axis=1)
    coef = np.linalg.lstsq(design, light[use], rcond=None)[0]
    return float(np.clip(coef[1], -MAX_SLOPE, MAX_SLOPE))


def surround_stats(photo: np.ndarray, region: faces.FaceRegion
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """CIELAB median and spread of what :func:`skin_stats` picks (None: nothing)."""
    stats = skin_stats(photo, region)
    return None if stats is None else (stats.median, stats.spread)


def smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """About a Gaussian blur of ``sigma`` pixels: three box passes per axis, each of
    width w with 3 (w^2 - 1) / 12 = sigma^2 (zero padding: divide by the blurred weights
    for a normalized convolution)."""
    r = max(1, int(round((math.sqrt(4 * sigma**2 + 1) - 1) / 2)))
    for axis in (0, 1):
        for _ in range(3):
            a = faces.box_blur(a, r, axis)
    return a


def match(crop: np.ndarray, region: faces.FaceRegion, photo: np.ndarray) -> np.ndarray:
    """:func:`match_to` the skin :func:`skin_stats` reads around the face in ``photo``."""
    return match_to(crop, region, skin_stats(photo, region))


def match_to(crop: np.ndarray, region: faces.FaceRegion, stats: SkinStats | None
             ) -> np.ndarray:
    """The new crop in the photo's colours, inside the face's hard mask only: its colour
    (a*, b*) low-passed (the model's colour speckle, to which the eye is more sensitive
    than to colour resolution, the reason codecs subsample chroma), then its colour moved
    to ``stats`` (what :func:`skin_stats` read around it) and its a* and b* spread scaled
    to theirs; L* keeps the face's own contrast (matching it too washed the features out on dark
    skin). Under the ``skin`` rule the new face's own skin (its pixels near their dominant
    colour, so not eyes, brows or lips) is what moves onto the surrounding skin's median,
    and its left-to-right L* slope becomes the surrounding skin's (the side the light
    comes from); under the band rules its mean moves to the band's median. Unchanged
    where the surroundings give nothing to match."""
    inside = np.asarray(region.mask) > 0
    out = np.asarray(crop, np.float64).copy()
    if stats is None or not inside.any():
        return out.astype(np.float32)
    lab = rgb_to_lab(out)
    weight = inside[..., None].astype(np.float64)
    ab = smooth(lab[..., 1:] * weight, CHROMA_SIGMA) / np.maximum(
        smooth(weight, CHROMA_SIGMA), 1e-9)
    lab[..., 1:] = np.where(inside[..., None], ab, lab[..., 1:])
    v = lab[inside]
    if stats.rule in ("skin", "typical"):
        # The centre is the new face's own skin; the spread its whole face's, so the
        # model's colour blotches (far from its skin) shrink with it.
        ref = v[_robust(v)]
        centre, spread = np.median(ref if len(ref) >= MIN_SKIN else v, axis=0), v.std(axis=0)
    else:
        centre, spread = v.mean(axis=0), v.std(axis=0)
    ratio = np.clip(stats.spread / np.maximum(spread, 1e-6),
                    *(SKIN_STD_RANGE if stats.rule in ("skin", "typical") else STD_RANGE))
    ratio[0] = 1.0
    moved = (v - centre) * ratio + stats.median
    if stats.slope and region.landmarks is not None:
        lm = faces.apply_transform(region.transform, region.landmarks)
        ys, xs = np.nonzero(inside)
        u, up = face_coords(lm, xs.astype(np.float64), ys.astype(np.float64))
        design = np.stack([np.ones(len(u)), u, up], axis=1)
        own = np.linalg.lstsq(design, moved[:, 0], rcond=None)[0][1]
        moved[:, 0] += np.clip(stats.slope - own, -MAX_SLOPE, MAX_SLOPE) * (u - np.median(u))
    out[inside] = lab_to_rgb(moved)
    return out.astype(np.float32)


def _extended(crop: np.ndarray, inside: np.ndarray, reach: int) -> np.ndarray:
    """The crop with the pixels up to ``reach`` outside ``inside`` replaced by the mean of
    their neighbours already filled, ring by ring: what a wider resampling filter reads
    near the mask's edge is then the new face's own colour, never the original's."""
    out = np.asarray(crop, np.float64).copy()
    filled = np.asarray(inside, bool).copy()
    for _ in range(reach):
        pad_v = np.pad(out * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        pad_n = np.pad(filled.astype(np.float64), 1)
        total = sum(pad_v[i:i + out.shape[0], j:j + out.shape[1]] for i in range(3)
                    for j in range(3))
        count = sum(pad_n[i:i + out.shape[0], j:j + out.shape[1]] for i in range(3)
                    for j in range(3))
        ring = ~filled & (count > 0)
        out[ring] = total[ring] / count[ring][:, None]
        filled |= ring
    return out


def upscaled(crop: np.ndarray, transform: np.ndarray, inside: np.ndarray,
             factor: int = UPSCALE) -> tuple[np.ndarray, np.ndarray]:
    """A bicubic magnification of the new face and its photo-to-crop transform (pixel
    centres kept: ``u' = (u + 0.5) k - 0.5``): pasting its colour replaces the bilinear
    magnification of a 64 px face into a large one, whose 4x4 cell grid shows. Only the
    new face is magnified (:func:`_extended` beyond ``inside``), so no original pixel of
    the crop reaches a pasted pixel."""
    from PIL import Image

    source = _extended(crop, inside, 4)
    size = crop.shape[0] * factor
    big = np.stack([np.asarray(Image.fromarray(np.asarray(source[..., c], np.float32), "F")
                               .resize((size, size), Image.Resampling.BICUBIC))
                    for c in range(crop.shape[2])], axis=-1)
    scale = np.array([[factor, 0.0, 0.5 * factor - 0.5], [0.0, factor, 0.5 * factor - 0.5],
                      [0.0, 0.0, 1.0]])
    t = (scale @ np.vstack([np.asarray(transform, np.float64), [0.0, 0.0, 1.0]]))[:2]
    return np.clip(big, 0, 255), t


RIM = 0.04  # face widths: the rings just inside and just outside the edge that are compared
LIGHT_SCALE = 0.1  # face widths: the light field's smoothness along the edge
LIGHT_REACH = 0.1  # face widths: how far in from the edge the field fades out
LIGHT_MAX = 30.0  # L*: the largest correction (light, not a repaint)
SKIN_WINDOW = (20.0, 12.0)  # L*, a*/b*: how far skin next to the edge may be from the new face's
MIN_RIM = 40  # skin pixels next to the edge below which the light is left as matched
# Share of the edge with skin next to it under which the field stays near that skin, and
# from which its mean step reaches the whole edge.
COVER = (0.1, 0.25)
GRAIN_CAP = 0.1  # grey levels per photo pixel of face width: the most grain added


def _skin_rim(lab: np.ndarray, outside: np.ndarray, face_lab: np.ndarray,
              below_chin: np.ndarray | None) -> np.ndarray:
    """The skin in the ring ``outside`` a pasted face: skin-like pixels within
    ``SKIN_WINDOW`` of the new face's own colour (``face_lab``, which :func:`match_to`
    moved onto the photo's skin; any colour near it in a grey photo), so not the backdrop,
    hair or clothes, nor the neck under the chin (``below_chin``: the chin's shadow is
    not the face's light)."""
    near = (np.abs(lab[..., 0] - face_lab[0]) <= SKIN_WINDOW[0]) & (
        np.abs(lab[..., 1:] - face_lab[1:]) <= SKIN_WINDOW[1]).all(axis=-1)
    # A grey new face (a black-and-white photo, the ``grey`` rule) has no skin colour.
    rim = outside & near & (skin_like(lab) | (np.hypot(*face_lab[1:]) < GREY_CHROMA))
    return rim if below_chin is None else rim & ~below_chin


def _light(lab: np.ndarray, alpha: np.ndarray, rim: np.ndarray, face_width: float
           ) -> np.ndarray:
    """The L* field that brings a pasted face's light to the skin next to it: along the
    edge, the local mean L* of the skin just outside (``rim``) minus that of the new face
    just inside, spread over the face as a smooth field (normalized Gaussian convolution,
    ``LIGHT_SCALE`` x the face width): its level, and the side and height the light comes
    from, are the neighbouring skin's; the new face keeps its own detail. Along stretches
    of edge with no skin outside (backdrop, hair) it tends to the mean step (less where
    little of the edge has skin next to it, ``COVER``); it fades out
    ``LIGHT_REACH`` x the face width in. Reads the new face and ``rim`` (published
    pixels) only."""
    core = alpha >= 0.999
    inner = core & ~faces.erode(core, max(1, int(round(RIM * face_width))), True)
    touched = alpha > 0
    # The means reach across the soft edge (its mean width: its area over its length).
    edge = (faces.dilate(touched.astype(np.float32), 1) > 0) & ~touched
    feather = float((touched & ~core).sum()) / max(float(edge.sum()), 1.0)
    reach = max(1.0, 0.5 * LIGHT_SCALE * face_width, feather + 1.0)
    light = lab[..., 0]
    in_w, out_w = smooth(inner.astype(np.float64), reach), smooth(rim.astype(np.float64), reach)
    in_mean = smooth(light * inner, reach) / np.maximum(in_w, 1e-9)
    out_mean = smooth(light * rim, reach) / np.maximum(out_w, 1e-9)
    # Samples where both sides are near: the edge, where the two means are compared.
    weight = np.where((in_w > 0.05) & (out_w > 0.05), np.minimum(in_w, out_w), 0.0)
    if weight.sum() <= 0:
        return np.zeros_like(light)
    step = np.where(weight > 0, out_mean - in_mean, 0.0)
    scale = max(2.0 * reach, LIGHT_SCALE * face_width)
    spread_w = smooth(weight, scale)
    # Far from every sample the field goes smoothly to the mean step (a prior of small
    # weight, so no seam where the blur's reach ends).
    prior = 0.002 * float(spread_w.max())
    overall = float((step * weight).sum() / weight.sum())
    # ... scaled by how much of the edge has skin next to it: a few pixels of skin (hair
    # or bangs all round, the chin below a short mask) do not set the whole face's light.
    cover = float((weight > 0).sum()) / max(float(((in_w > 0.05) & ~core).sum()), 1.0)
    overall *= float(np.clip((cover - COVER[0]) / (COVER[1] - COVER[0]), 0.0, 1.0))
    field = (smooth(step * weight, scale) + prior * overall) / (spread_w + prior)
    # Full at the edge (a smoothed core of 2/3 or less), none deep inside, where the
    # level :func:`match_to` took from the skin zones stays (a real face is lighter in
    # the middle than at its turning edge; the 64 px model's is the other way round).
    fade = np.clip(3.0 * (1.0 - smooth(core.astype(np.float64), LIGHT_REACH * face_width)),
                   0.0, 1.0)
    return np.clip(field, -LIGHT_MAX, LIGHT_MAX) * fade


def highpass(grey: np.ndarray) -> np.ndarray:
    """A 3x3 high-pass (the pixel minus its neighbourhood's mean): grain and fine detail."""
    pad = np.pad(grey, 1, mode="edge")
    return grey - sum(pad[i:i + grey.shape[0], j:j + grey.shape[1]] for i in range(3)
                      for j in range(3)) / 9


def paste(photo: np.ndarray, crop: np.ndarray, region: faces.FaceRegion,
          normals: Callable[[int], np.ndarray]) -> np.ndarray:
    """Paste a harmonized face: its colour from the magnified crop (:func:`upscaled`),
    where it goes from its own mask (so exactly the pixels :func:`faceveil.faces.paste`
    would change); its light brought to the skin next to its edge (:func:`_light`); then
    grain, drawn by ``normals(n)`` (the face's key stream), enough for the new face's
    fine detail to reach that of the skin next to it (the variance of a 3x3 high-pass:
    the photo's noise, its sharpness and the skin's texture together; at most
    ``GRAIN_CAP`` grey levels per pixel of face width, the same on every channel).
    Both read the skin within ``SKIN_WINDOW`` of the new face's colour. Reads only the
    new face and published pixels outside the footprint. Returns a new uint8 photo."""
    inside = np.asarray(region.mask) > 0
    out = faces.paste(photo, crop, region.transform, region.mask,
                      colour=upscaled(crop, region.transform, inside))
    footprint, window = faces.footprint(region.mask, region.transform, out.shape)
    touched = footprint > 0
    if footprint.size == 0 or not touched.any():
        return out
    part = out[window].astype(np.float32)
    width = float(region.box[2])
    lab = rgb_to_lab(part)
    ring = max(2, int(round(RIM * width)))
    # The ring around the face and what is kept in front of it (hair is no skin beside it).
    whole = touched if region.occlusion is None or not region.occlusion.kept.any() else (
        faces.footprint(_with_occluders(region), region.transform, out.shape)[0] > 0)
    outside = (faces.dilate(whole.astype(np.float32), ring + 1) > 0) & ~(
        faces.dilate(whole.astype(np.float32), 1) > 0)
    core = footprint >= 0.999
    face_lab = np.median(lab[core if core.any() else touched], axis=0)
    below_chin = None
    if region.landmarks is not None:
        lm = np.asarray(region.landmarks, np.float64)
        ys, xs = np.mgrid[window[0], window[1]]
        _, up = face_coords(lm, xs.astype(np.float64), ys.astype(np.float64))
        below_chin = up < face_coords(lm, lm[8:9, 0], lm[8:9, 1])[1][0]
    rim = _skin_rim(lab, outside, face_lab, below_chin)
    if rim.sum() >= MIN_RIM:
        lab[..., 0] += _light(lab, footprint, rim, width) * np.clip(footprint, 0, 1)
        part = np.where(touched[..., None], lab_to_rgb(lab), part)
    # Grain: the skin next to the edge (or the whole ring) against the new face alone.
    grey = part.mean(axis=-1)
    hp = highpass(grey)
    sel = rim if rim.sum() >= MIN_RIM else outside
    want = float(hp[sel].var()) if sel.any() else 0.0
    have = float(hp[core].var()) if core.any() else want
    # A 3x3 high-pass keeps 8/9 of white noise's variance; the same grain on every
    # channel, as a photo's is mostly in its light (chroma is subsampled). At most
    # ``GRAIN_CAP`` x the face's width: on a small face the ring's fine detail is
    # mostly the texture of what surrounds it (a window, strands of hair), which as
    # per-pixel grain reads as speckle the size of a pore on a 40 px face.
    sigma = min(math.sqrt(max(want - have, 0.0) / (8 / 9)), GRAIN_CAP * width)
    noise = normals(grey.size).reshape(grey.shape) * sigma
    noisy = np.clip(np.rint(part + (np.clip(footprint, 0, 1) * noise)[..., None]), 0, 255)
    region_pixels = out[window]
    region_pixels[touched] = noisy.astype(np.uint8)[touched]
    return out


def colour_shift(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """CIE76 colour difference of the mean CIELAB colours of two images over ``mask``."""
    sel = np.asarray(mask, bool)
    return float(np.linalg.norm(rgb_to_lab(a[sel]).mean(axis=0)
                                - rgb_to_lab(b[sel]).mean(axis=0)))
