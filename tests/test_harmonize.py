"""Harmonization reads the skin around a face, not whatever surrounds its mask: synthetic
portraits with hair, a backdrop and a red shirt, side light, grey photos, tiny faces and
faces at the border."""

from __future__ import annotations

import numpy as np
import pytest

from faceveil import faces
from faceveil.pipeline import harmonize

SKIN = (205, 160, 135)
SHIRT = (150, 90, 50)  # a tan shirt: skin-like to a crude colour rule
HAIR = (95, 65, 45)
BACKDROP = (120, 160, 200)


def _portrait(width: float = 120, at=(160, 150), size=(360, 320), noise: float = 3.0,
              seed: int = 0):
    """A synthetic portrait and its face region (64 px crop): landmarks of dlib's mean
    face, skin a little past the facial mask (as forehead, temples and jaw are) and down
    the neck, hair framing it, a tan collar close under the chin, a blue backdrop. Hair
    and collar are skin-like to a crude colour rule, and fill most of the band around the
    mask."""
    lm = faces.dlib_mean_shape68() * width + np.asarray(at, float) - width / 2
    crop = 64
    face_w = np.hypot(*(lm[16] - lm[0]))
    scale = crop / (2.0 * face_w)
    centre = lm.mean(axis=0)
    transform = np.array([[scale, 0, crop / 2 - scale * centre[0]],
                          [0, scale, crop / 2 - scale * centre[1]]])
    mask = faces.facial_mask(faces.apply_transform(transform, lm), crop)
    h, w = size
    footprint, (rows, cols) = faces.footprint((mask > 0).astype(np.float32), transform, (h, w))
    inside = np.zeros((h, w), np.float32)
    inside[rows, cols] = footprint > 0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    cx = lm[:, 0].mean()
    img = np.empty((h, w, 3), np.float64)
    img[:] = BACKDROP
    img[(faces.dilate(inside, int(0.3 * face_w)) > 0) & (ys < lm[8, 1])] = HAIR
    skin = (faces.dilate(inside, int(0.08 * face_w)) > 0) | (
        (np.abs(xs - cx) <= 0.3 * face_w) & (ys >= lm[30, 1]))
    img[skin] = SKIN
    img[ys > lm[8, 1] + 0.14 * face_w] = SHIRT
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    photo = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    box = tuple(int(v) for v in (lm[:, 0].min(), lm[:, 1].min(), face_w, face_w))
    region = faces.FaceRegion(box=box, transform=transform, crop_size=crop, mask=mask,
                              landmarks=lm, source="test", score=None)
    return photo, region


def _delta(lab, rgb) -> float:
    return float(np.linalg.norm(np.asarray(lab) - harmonize.rgb_to_lab(np.asarray(rgb, float))))


def test_colour_comes_from_skin_not_shirt_hair_or_backdrop():
    photo, region = _portrait()
    stats = harmonize.skin_stats(photo, region)
    assert stats.rule == "skin"
    assert _delta(stats.median, SKIN) < 3
    # The band just outside the mask (the rule without landmarks) is mostly shirt, hair
    # and backdrop: its skin-like pixels' median is pulled away from the skin, their
    # lightest large cluster is the skin.
    band = harmonize.skin_pixels(photo, faces.FaceRegion(**{**region.__dict__,
                                                            "landmarks": None}))
    assert band.rule == "band-skin" and _delta(np.median(band.lab, axis=0), SKIN) < 3
    # Every pixel read lies outside the face's footprint (published pixels only).
    picked = harmonize.skin_pixels(photo, region)
    footprint, (rows, cols) = faces.footprint((region.mask > 0).astype(np.float32),
                                              region.transform, photo.shape)
    inside = np.zeros(photo.shape[:2], bool)
    inside[rows, cols] = footprint > 0
    assert not inside[picked.rows, picked.cols].any()
    # A new face of another colour is moved onto the skin (its own skin's median).
    crop = np.full((64, 64, 3), (90.0, 140.0, 150.0), np.float32)
    crop += np.random.default_rng(1).normal(0, 3, crop.shape).astype(np.float32)
    out = harmonize.match(crop, region, photo)
    m = region.mask > 0
    assert _delta(np.median(harmonize.rgb_to_lab(out[m]), axis=0), SKIN) < 3
    assert np.array_equal(out[~m], crop[~m])


CURTAIN = (178, 82, 73)  # a red curtain: L* 47, a* 38, b* 24 (hue and chroma of skin)
BLOND = (186, 156, 103)  # blond hair: L* 66, a* 4, b* 32
SUIT = (30, 35, 60)


def _faces_lab(out: np.ndarray, region) -> np.ndarray:
    return np.median(harmonize.rgb_to_lab(out[region.mask > 0]), axis=0)


def test_a_red_curtain_beside_the_face_does_not_make_it_red():
    """A red curtain next to the temples (where a tight portrait's mask leaves the skin
    zones little but backdrop): the new face takes the forehead's and neck's skin, not
    the curtain's red."""
    photo, region = _portrait()
    lm = region.landmarks
    ys, xs = np.mgrid[0:photo.shape[0], 0:photo.shape[1]]
    face_w = region.box[2]
    skin_lab = harmonize.rgb_to_lab(np.asarray(SKIN, float))
    near_skin = np.linalg.norm(harmonize.rgb_to_lab(photo.astype(float)) - skin_lab,
                               axis=-1) < 15
    sides = (np.abs(xs - lm[:, 0].mean()) > 0.45 * face_w) & (ys < lm[8, 1]) & ~near_skin
    photo[sides] = CURTAIN
    crop = np.full((64, 64, 3), (90.0, 140.0, 150.0), np.float32)
    out = _faces_lab(harmonize.match(crop, region, photo), region)
    curtain_lab = harmonize.rgb_to_lab(np.asarray(CURTAIN, float))
    assert _delta(out, SKIN) < 6
    assert out[1] < skin_lab[1] + 5 < curtain_lab[1] - 15


def test_a_face_with_no_skin_in_sight_gets_a_typical_skin_colour_not_its_hair():
    """A mask that covers all the skin, framed by blond hair and a dark suit (no skin in
    sight, as under a helmet or a tight crop): the new face is not matched to the hair's
    yellow or the suit's blue but to a typical skin colour, and the report says so."""
    photo, region = _portrait()
    alpha, (rows, cols) = faces.footprint(region.mask, region.transform, photo.shape)
    touched = np.zeros(photo.shape[:2], bool)
    touched[rows, cols] = alpha > 0
    ys = np.mgrid[0:photo.shape[0], 0:photo.shape[1]][0]
    photo[~touched] = BLOND
    photo[~touched & (ys > region.landmarks[8, 1])] = SUIT
    stats = harmonize.skin_stats(photo, region)
    assert stats.rule == "typical"
    assert any("typical skin colour" in n for n in harmonize.colour_notes([region],
                                                                           [stats.rule]))
    crop = np.full((64, 64, 3), (90.0, 140.0, 150.0), np.float32)  # a cyan new face
    out = _faces_lab(harmonize.match(crop, region, photo), region)
    hue = np.degrees(np.arctan2(out[2], out[1]))
    assert harmonize.SKIN_HUE[0] <= hue <= harmonize.SKIN_HUE[1]  # skin's hue, not hair's
    assert _delta(out, BLOND) > 15 and _delta(out, SUIT) > 30


def test_a_shining_forehead_does_not_set_the_whole_faces_light():
    """A high forehead with a highlight in its middle (15 L* lighter, the same colour),
    which splits the skin into two lights, each outnumbered by the hair: the new face
    takes the skin's light as a whole, neither the highlight's nor the hair's."""
    photo, region = _portrait(noise=1.0)
    lm, width = region.landmarks, region.box[2]
    ys, xs = np.mgrid[0:photo.shape[0], 0:photo.shape[1]]
    brows, across = lm[17:27, 1].mean(), np.abs(xs - lm[27, 0])
    forehead = (ys < brows) & (ys > brows - 0.4 * width) & (across < 0.3 * width)
    photo[forehead] = SKIN
    lab = harmonize.rgb_to_lab(photo.astype(float))
    skin_lab = harmonize.rgb_to_lab(np.asarray(SKIN, float))
    shine = forehead & (across < 0.22 * width)
    lab[shine, 0] += 15.0
    photo = np.clip(np.rint(harmonize.lab_to_rgb(lab)), 0, 255).astype(np.uint8)
    stats = harmonize.skin_stats(photo, region)
    assert stats.rule == "skin"
    assert abs(stats.median[0] - skin_lab[0]) < 6  # the highlight is 15 lighter


def test_side_light_becomes_a_gain_across_the_new_face():
    photo, region = _portrait(noise=1.0)
    ramp = np.linspace(1.25, 0.8, photo.shape[1])[None, :, None]  # lit from the left
    lit = np.clip(photo * ramp, 0, 255).astype(np.uint8)
    stats = harmonize.skin_stats(lit, region)
    assert stats.rule == "skin" and stats.slope < -5  # darker to the right
    assert harmonize.skin_stats(photo, region).slope == pytest.approx(0, abs=2)
    crop = np.full((64, 64, 3), (190.0, 150.0, 130.0), np.float32)  # flat new face
    out = harmonize.rgb_to_lab(harmonize.match(crop, region, lit))
    m = region.mask > 0
    cols = np.nonzero(m.any(axis=0))[0]
    left = out[:, cols[0]: cols[0] + 8][m[:, cols[0]: cols[0] + 8]][:, 0].mean()
    right = out[:, cols[-1] - 7: cols[-1] + 1][m[:, cols[-1] - 7: cols[-1] + 1]][:, 0].mean()
    assert left - right > 5


def test_fallbacks_grey_tiny_border_and_coloured_light():
    photo, region = _portrait()
    grey = np.repeat(photo.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    assert harmonize.skin_stats(grey, region).rule == "grey"
    crop = np.full((64, 64, 3), (200.0, 120.0, 100.0), np.float32)
    out = harmonize.rgb_to_lab(harmonize.match(crop, region, grey))
    assert np.hypot(*out[region.mask > 0][:, 1:].mean(axis=0)) < 3  # a grey face
    assert any("black-and-white" in n for n in harmonize.colour_notes(
        [region], [harmonize.skin_stats(grey, region).rule]))
    assert harmonize.colour_notes([region], [harmonize.skin_stats(photo, region).rule]) == []
    assert harmonize.colour_notes([region], [None]) == []  # a crop made elsewhere
    # Tiny faces (< 24 px) are matched to their band's skin, and say so.
    small_photo, small = _portrait(width=20, at=(40, 40), size=(90, 80))
    assert harmonize.skin_stats(small_photo, small).rule in ("band-skin", "typical")
    assert harmonize.colour_notes([small], [harmonize.skin_stats(small_photo, small).rule])
    harmonize.match(crop, small, small_photo)
    # Strong blue light: no skin-coloured pixel anywhere; the band, said so.
    blue = (photo * np.array([0.3, 0.5, 1.0])).astype(np.uint8)
    assert harmonize.skin_stats(blue, region).rule != "skin"
    # A face cut by the photo's border: no crash, still a rule.
    cut = photo[:, 110:]
    shifted = faces.FaceRegion(**{**region.__dict__, "landmarks": region.landmarks - [110, 0],
                                  "transform": region.transform + np.array(
                                      [[0, 0, 110 * region.transform[0, 0]], [0, 0, 0]])})
    assert harmonize.skin_stats(np.ascontiguousarray(cut), shifted) is not None
    harmonize.match(crop, shifted, np.ascontiguousarray(cut))


def test_the_seam_at_the_edge_closes():
    """A flat new face 40 grey levels darker than the flat grey photo around it (no skin
    colour: a black-and-white photo): the paste brings its edge to the photo's level (no
    band darker than both sides) and leaves its middle about as made."""
    photo = np.full((160, 160, 3), 180, np.uint8)
    m = np.zeros((64, 64), np.float32)
    m[12:52, 12:52] = 1.0
    mask = faces.soften(m > 0, 4)
    region = faces.FaceRegion(box=(40, 40, 80, 80), transform=np.array(
        [[0.5, 0, -16], [0, 0.5, -16]]), crop_size=64, mask=mask, landmarks=None,
        source="box", score=None)
    crop = np.full((64, 64, 3), 140.0, np.float32)
    plain = faces.paste(photo, crop, region.transform, region.mask)
    out = harmonize.paste(photo, crop, region, lambda n: np.zeros(n))
    row = 80  # through the middle, left edge of the face at x = 56
    edge = slice(57, 61)
    assert plain[row, edge, 0].mean() < 165
    assert out[row, edge, 0].mean() > plain[row, edge, 0].mean() + 10
    assert abs(float(out[row, 80, 0]) - 140) <= 5  # the middle (24 px in) about as made
    assert np.array_equal(out[plain == photo], photo[plain == photo])  # nothing else


def _border_and_grain(original: np.ndarray, out: np.ndarray, region) -> tuple[float, float,
                                                                             float]:
    """A replaced face's border step (median L* of the ring just inside its soft edge
    minus the ring just outside), the original's on the same rings, and the replaced
    core's fine detail (3x3 high-pass variance of L*) over the original's."""
    alpha, window = faces.footprint(region.mask, region.transform, original.shape)
    core, touched = alpha >= 0.999, (alpha > 0).astype(np.float32)
    w = max(2, round(0.04 * region.box[2]))
    inner = core & ~faces.erode(core, w, False)
    outer = (faces.dilate(touched, w + 1) > 0) & ~(faces.dilate(touched, 1) > 0)
    light = [harmonize.rgb_to_lab(p[window].astype(np.float64))[..., 0] for p in (original,
                                                                                   out)]
    step = [float(np.median(x[inner]) - np.median(x[outer])) for x in light]
    detail = [float(harmonize.highpass(x)[core].var()) for x in light]
    return step[1], step[0], detail[1] / detail[0]


@pytest.mark.slow
def test_a_replaced_portrait_face_has_the_photos_grain_and_border():
    """On a real portrait the new face has the photo's fine detail (grain), not a smooth
    patch (the 64 px face alone has a tenth to a third of it), and its edge steps about
    as the original's did."""
    from pathlib import Path

    from faceveil import api, images, keys
    from faceveil.options import FixedKeys

    pixels = images.load_image(Path(__file__).parent / "data" / "biden.jpg").pixels
    regions, _ = api.find_regions(pixels)
    key = keys.KeySource.from_bytes(bytes(range(32)))
    # Five new faces (one draw of the model's face alone can put a dark blotch on the
    # edge): the median's grain and border step.
    measured = []
    for k in range(5):
        result = api.anonymize(pixels, key, regions=regions[:1],
                               fixed=FixedKeys(salt=bytes(16), nonces=(bytes([k] * 16),)))
        assert not any("colour matched" in n for n in result.notes)  # its colour from skin
        step, own, detail = _border_and_grain(pixels, result.pixels, regions[0])
        measured.append((abs(step - own), detail))
    off, detail = np.median(np.array(measured), axis=0)
    assert 0.6 <= detail <= 1.6
    assert off <= 5.0
    # The same photo in black and white: the fallback rule is said in the notes (--report).
    grey = np.repeat(pixels.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    notes = api.anonymize(grey, key, regions=regions[:1], fixed=FixedKeys(
        salt=bytes(16), nonces=(bytes(range(16)),))).notes
    assert any("face 0: colour matched to the grey band" in n for n in notes)


def test_the_edge_takes_the_light_of_the_skin_next_to_it_not_the_backdrop():
    """A new face 20 L* lighter than the skin, on a portrait whose mask is flanked by a
    light backdrop and hair: its edge comes to the skin's light (no lighter oval), as
    the original's edge was, and the backdrop does not pull it lighter."""
    photo, region = _portrait(noise=1.0)
    skin_light = harmonize.rgb_to_lab(np.asarray(SKIN, float))[0]
    lighter = harmonize.lab_to_rgb(harmonize.rgb_to_lab(np.asarray(SKIN, float))
                                   + [20.0, 0, 0])
    crop = np.broadcast_to(lighter, (64, 64, 3)).astype(np.float32)
    out = harmonize.paste(photo, crop, region, lambda n: np.zeros(n))
    alpha, window = faces.footprint(region.mask, region.transform, photo.shape)
    core = alpha >= 0.999
    rim = core & ~faces.erode(core, max(2, round(0.04 * region.box[2])), False)
    light = harmonize.rgb_to_lab(out[window].astype(np.float64))[..., 0]
    assert abs(np.median(light[rim]) - skin_light) < 5  # was 20 lighter
    deep = faces.erode(core, round(0.3 * region.box[2]), False)
    assert np.median(light[deep]) > skin_light + 12  # the middle keeps the made level


def test_a_little_skin_next_to_the_edge_sets_the_light_only_near_it():
    """Bangs or hair all round leave a patch of skin by the jaw alone next to the mask:
    the edge takes its light there, the rest of the face keeps the level it was made
    with (a few pixels of skin do not relight the whole face)."""
    photo, region = _portrait(noise=1.0)
    alpha, (rows, cols) = faces.footprint(region.mask, region.transform, photo.shape)
    touched, core = np.zeros(photo.shape[:2], bool), np.zeros(photo.shape[:2], bool)
    touched[rows, cols], core[rows, cols] = alpha > 0, alpha >= 0.999
    lm = region.landmarks
    ys, xs = np.mgrid[0:photo.shape[0], 0:photo.shape[1]]
    patch = np.hypot(xs - lm[4, 0], ys - lm[4, 1]) < 0.15 * region.box[2]
    photo[~touched & ~patch] = BACKDROP  # no skin around the mask but the patch
    skin = harmonize.rgb_to_lab(np.asarray(SKIN, float))
    made = harmonize.lab_to_rgb(skin + [15.0, 0, 0])
    crop = np.broadcast_to(made, (64, 64, 3)).astype(np.float32)
    out = harmonize.paste(photo, crop, region, lambda n: np.zeros(n))
    light = harmonize.rgb_to_lab(out.astype(np.float64))[..., 0]
    inner = core & ~faces.erode(core, 3, False)  # the new face alone, no blend
    near = inner & (np.hypot(xs - lm[4, 0], ys - lm[4, 1]) < 0.1 * region.box[2])
    far = inner & (ys < lm[19, 1])  # the top of the mask, over the brows
    assert np.median(light[near]) < skin[0] + 8  # brought down towards the patch's skin
    assert abs(np.median(light[far]) - (skin[0] + 15)) < 3  # as made


def test_a_small_face_in_a_busy_ring_gets_light_grain_not_speckle():
    """On a small face whose ring is busy (strands, a window: here strong per-pixel
    texture), the grain added is capped relative to the face's width, and it is the
    same on every channel (light, no colour speckle); some grain is still added."""
    photo, region = _portrait(width=44, at=(70, 66), size=(140, 130), noise=30.0)
    crop = np.empty((64, 64, 3), np.float32)
    crop[:] = SKIN
    rng = np.random.default_rng(1)
    plain = harmonize.paste(photo, crop, region, lambda n: np.zeros(n)).astype(float)
    grainy = harmonize.paste(photo, crop, region, rng.standard_normal).astype(float)
    footprint, window = faces.footprint(region.mask, region.transform, photo.shape)
    core = footprint >= 0.999
    added = (grainy - plain)[window][core]
    assert np.abs(added - added.mean(axis=1, keepdims=True)).max() <= 1.0  # no chroma
    cap = harmonize.GRAIN_CAP * region.box[2]
    assert 0.5 * cap <= added.mean(axis=1).std() <= 1.1 * cap + 0.5
    # Outside the footprint nothing changes.
    outside = np.ones(photo.shape[:2], bool)
    outside[window] &= ~(footprint > 0)
    assert (grainy[outside] == photo[outside]).all()
