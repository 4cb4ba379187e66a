"""Occluders kept: what lies in front of a face (synthetic strips, discs, a hand) stays as
it was, the eyes-nose-mouth core is always replaced, and the switch restores the old mask.

The fixtures are the test portraits (tests/data) with occluders pasted by the test, from
the face's own landmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceveil import faces
from faceveil.cli import main
from faceveil.faces import occluders
from faceveil.options import Detection

DATA = Path(__file__).parent / "data"
FFHQ = faces.Framing.ffhq()
CROP = 64
NEW = np.array([255.0, 0.0, 255.0])  # the "new face": a colour no photo pixel has here


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name).convert("RGB"))


def regions_of(pixels: np.ndarray, **detection) -> list[faces.FaceRegion]:
    found, _ = faces.find_regions(pixels, framing=FFHQ, crop_size=CROP,
                                  detection=Detection(**detection))
    return found


def shape_mask(shape: str, lm: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A strip across the mouth and chin, a disc on a cheek, a hand from below (palm up
    to the mouth, fingers to the nose), or a hand over the whole face."""
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    width = np.hypot(*(lm[16] - lm[0]))
    if shape == "strip":
        return (ys >= lm[51, 1] - 0.05 * width) & (ys <= lm[8, 1] + 0.05 * width)
    if shape == "disc":
        c = lm[3] * 0.6 + lm[31] * 0.4
        return np.hypot(xs - c[0], ys - c[1]) <= 0.22 * width
    if shape == "hand":
        cx = lm[8, 0] + 0.1 * width
        out = (ys >= lm[57, 1]) & (np.abs(xs - cx) <= 0.32 * width)
        for k in range(4):
            fx = cx - 0.24 * width + k * 0.16 * width
            out |= (np.abs(xs - fx) <= 0.065 * width) & (ys >= lm[33, 1]) & (ys <= lm[57, 1])
        return out
    if shape == "beard":  # the jaw below the mouth's corners, out to the face's edge
        return (ys >= lm[48, 1]) & (ys <= lm[8, 1] + 0.08 * width) & (
            np.abs(xs - lm[8, 0]) <= 0.55 * width)
    if shape == "high-disc":  # a disc on a cheek, above the nose tip
        c = lm[1] * 0.8 + lm[29] * 0.2
        return np.hypot(xs - c[0], ys - c[1]) <= 0.2 * width
    # "whole": a palm over the whole face, from the hairline to below the chin.
    c = lm[27:36].mean(0)
    return (np.abs(xs - c[0]) <= 0.75 * width) & (np.abs(ys - c[1]) <= 0.9 * width)


def with_occluder(pixels: np.ndarray, shape: str, colour) -> tuple[np.ndarray, np.ndarray]:
    lm = regions_of(pixels, occluders=False)[0].landmarks
    occ = shape_mask(shape, lm, pixels.shape[:2])
    noise = np.random.default_rng(0).normal(0, 5, pixels.shape)
    out = pixels.astype(np.float64)
    out[occ] = np.asarray(colour, float) + noise[occ]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), occ


def pasted(pixels: np.ndarray, region: faces.FaceRegion) -> np.ndarray:
    """The photo with ``region``'s mask filled by a flat new face, as anonymize pastes."""
    crop = np.broadcast_to(NEW, (CROP, CROP, 3)).astype(np.float32)
    return faces.paste(pixels, crop, region.transform, region.mask)


def photo_mask(crop_mask: np.ndarray, region: faces.FaceRegion, shape, full=False):
    a = np.zeros(shape[:2])
    warped, window = faces.footprint(crop_mask.astype(np.float32), region.transform, shape)
    a[window] = warped
    return a >= 0.999 if full else a > 0


def core_of(region: faces.FaceRegion) -> np.ndarray:
    return occluders.protected_core(faces.apply_transform(region.transform, region.landmarks),
                                    CROP)


@pytest.mark.parametrize(("name", "shape", "colour"), [
    ("obama.jpg", "strip", (40, 60, 170)), ("biden.jpg", "disc", (200, 30, 30)),
    ("obama.jpg", "hand", (30, 140, 60)), ("biden.jpg", "disc", (205, 40, 160)),
])
def test_a_coloured_occluder_stays_and_the_core_is_replaced(name, shape, colour):
    img, occ = with_occluder(load(name), shape, colour)
    r = regions_of(img)[0]
    hull = faces.facial_mask(faces.apply_transform(r.transform, r.landmarks), CROP)
    out = pasted(img, r)
    same = (out == img).all(axis=2)
    inside = occ & photo_mask(hull, r, img.shape) & ~photo_mask(core_of(r), r, img.shape)
    assert inside.sum() > 300
    assert same[inside].mean() >= 0.9, same[inside].mean()
    # The core (eyes, brows, nose, mouth) is replaced, occluder or not.
    core = photo_mask(core_of(r), r, img.shape, full=True) & photo_mask(hull, r, img.shape,
                                                                        full=True)
    assert (out[core] == NEW).all()
    lm = r.landmarks
    for p in (lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48:60].mean(0)):
        assert (out[int(round(p[1])), int(round(p[0]))] == NEW).all()
    assert r.occlusion.rule == "colour" and 0 < r.occlusion.share <= occluders.MAX_SHARE


def test_a_hand_over_the_whole_face_leaves_the_face_replaced():
    clean = load("biden.jpg")
    img, occ = with_occluder(clean, "whole", (30, 140, 60))
    # No detector finds that face: a person adds its box (--box), landmarks are guessed.
    assert not regions_of(img)
    r = regions_of(img, boxes=(regions_of(clean)[0].box,))[0]
    hull = faces.facial_mask(faces.apply_transform(r.transform, r.landmarks), CROP)
    assert (r.mask == hull)[core_of(r)].all()
    assert (r.mask > 0).sum() >= (1 - occluders.MAX_SHARE) * (hull > 0).sum()
    out = pasted(img, r)
    core = photo_mask(core_of(r), r, img.shape, full=True) & photo_mask(hull, r, img.shape,
                                                                        full=True)
    assert (out[core] == NEW).all()


def test_a_clean_face_keeps_almost_nothing():
    for name in ("obama.jpg", "biden.jpg"):
        r = regions_of(load(name))[0]
        assert r.occlusion.share < 0.08


def test_the_switch_restores_the_landmark_mask():
    img, _ = with_occluder(load("obama.jpg"), "strip", (40, 60, 170))
    on, off = regions_of(img)[0], regions_of(img, occluders=False)[0]
    hull = faces.facial_mask(faces.apply_transform(off.transform, off.landmarks), CROP)
    assert np.array_equal(off.mask, hull) and off.occlusion is None
    assert (on.mask <= off.mask).all() and (on.mask < off.mask).any()


def test_a_skin_coloured_hand_is_replaced_not_kept():
    """What the rule cannot see: a hand of the face's own colour (README says so)."""
    img = load("obama.jpg")
    r = regions_of(img)[0]
    crop, t = faces.extract_at(img, r.transform, CROP, 128)
    lm = faces.apply_transform(t, r.landmarks)
    skin = np.median(crop[occluders.skin_zones(lm)[:, 1].astype(int),
                          occluders.skin_zones(lm)[:, 0].astype(int)], axis=0)
    hand, occ = with_occluder(img, "hand", skin)
    kept = regions_of(hand)[0].occlusion
    assert kept.share < 0.05


def test_a_parser_decides_what_is_face_and_the_core_stays():
    img = load("obama.jpg")
    r = regions_of(img, occluders=False)[0]
    hull = r.mask > 0
    # The parser calls the lower part of the crop "not face" (say, a cloth).
    cut = int(0.6 * CROP)
    face = hull.copy()
    face[cut:] = False
    occ = occluders.occlusion(img, r, face=face.astype(np.float32))
    assert occ.rule == "parser"
    assert not (occ.kept & core_of(r)).any()
    lower = np.zeros_like(hull)
    lower[cut + 2:] = True
    assert occ.kept[lower & hull & ~(faces.dilate(core_of(r), 2) > 0)].mean() > 0.9
    # Nothing is face: at most MAX_SHARE of the mask is kept, never the core.
    none = occluders.occlusion(img, r, face=np.zeros_like(hull, np.float32))
    assert 0.2 < (none.kept & hull).sum() / hull.sum() <= occluders.MAX_SHARE
    assert not (none.kept & core_of(r)).any()


def test_detect_reports_the_pixels_kept(tmp_path):
    img, occ = with_occluder(load("obama.jpg"), "strip", (40, 60, 170))
    Image.fromarray(img).save(tmp_path / "o.png")
    r = CliRunner().invoke(main, ["detect", str(tmp_path / "o.png"), "-o",
                                  str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    face = json.loads(r.stdout)["faces"][0]
    reg = regions_of(img)[0]
    hull = faces.facial_mask(faces.apply_transform(reg.transform, reg.landmarks), CROP)
    truth = (occ & photo_mask(hull, reg, img.shape) & ~photo_mask(core_of(reg), reg,
                                                                  img.shape)).sum()
    assert face["occluders"]["rule"] == "colour"
    assert 0.6 * truth < face["occluders"]["kept_px"] < 1.4 * truth
    r = CliRunner().invoke(main, ["detect", str(tmp_path / "o.png"), "-o",
                                  str(tmp_path / "q.png"), "--no-occluders"])
    assert "occluders" not in json.loads(r.stdout)["faces"][0]


@pytest.mark.parametrize(("name", "darkness"), [("obama.jpg", 0.35), ("biden.jpg", 0.5)])
def test_a_fringe_of_hair_over_the_forehead_stays(name, darkness):
    """Brown hair has skin's own chromaticity (here exactly the skin's, at 35% or 50% of
    its light, with strands): only its darkness and texture tell it from the forehead."""
    img = load(name)
    r = regions_of(img)[0]
    crop, t = faces.extract_at(img, r.transform, CROP, 128)
    zones = occluders.skin_zones(faces.apply_transform(t, r.landmarks)).astype(int)
    skin = np.median(crop[zones[:, 1], zones[:, 0]], axis=0).astype(np.float64)
    lm = r.landmarks
    width = np.hypot(*(lm[16] - lm[0]))
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    fringe = (ys <= lm[17:27, 1].min() - 0.04 * width) & (np.abs(xs - lm[27, 0]) <= 0.6 * width)
    strands = 1 + 0.2 * np.sign(np.sin(xs * 2 * np.pi / max(4, round(0.05 * width))))
    out = img.astype(np.float64)
    out[fringe] = skin * darkness * strands[fringe, None]
    hair = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    r = regions_of(hair)[0]
    hull = faces.facial_mask(faces.apply_transform(r.transform, r.landmarks), CROP)
    inside = fringe & photo_mask(hull, r, hair.shape) & ~photo_mask(core_of(r), r, hair.shape)
    assert inside.sum() > 300
    same = (pasted(hair, r) == hair).all(axis=2)
    assert same[inside].mean() >= 0.8, same[inside].mean()
    assert r.occlusion.share <= occluders.MAX_SHARE


def test_shade_on_the_face_is_not_an_occluder():
    """Half the face in shade (half its light) is still face: replaced, not kept. (Nearly
    black shade, under a quarter of the skin's light, is kept where it reaches the
    mask's edge: the README says so.)"""
    img = load("biden.jpg").astype(np.float64)
    lm = regions_of(load("biden.jpg"))[0].landmarks
    img[:, : int(lm[30, 0])] *= 0.5
    r = regions_of(np.clip(np.rint(img), 0, 255).astype(np.uint8))[0]
    assert r.occlusion.rule == "colour" and r.occlusion.share < 0.03


@pytest.mark.parametrize("colour", [(25, 20, 18), (150, 150, 150), (235, 235, 230)])
def test_a_beard_is_face_and_is_replaced(colour):
    """Black, grey or white below the nose tip may be a beard: never kept (privacy first;
    a black, grey or white cloth there is replaced as well, the README says so)."""
    img, occ = with_occluder(load("obama.jpg"), "beard", colour)
    r = regions_of(img)[0]
    hull = photo_mask(faces.facial_mask(faces.apply_transform(r.transform, r.landmarks),
                                        CROP), r, img.shape)
    out = pasted(img, r)
    beard = occ & hull
    assert beard.sum() > 300
    assert (out != img).any(axis=2)[beard].mean() >= 0.95


def test_black_and_white_photos_keep_black_occluders_only():
    gray = np.repeat(load("obama.jpg").mean(axis=2, keepdims=True), 3, axis=2)
    gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    assert regions_of(gray)[0].occlusion.share < 0.08
    img, occ = with_occluder(gray, "high-disc", (15, 15, 15))
    r = regions_of(img)[0]
    out = pasted(img, r)
    hull = faces.facial_mask(faces.apply_transform(r.transform, r.landmarks), CROP)
    inside = occ & ~photo_mask(core_of(r), r, img.shape) & photo_mask(hull, r, img.shape)
    # Above the nose tip (an upright face): black below it may be a beard, and is replaced.
    inside[int(r.landmarks[30, 1]):] = False
    assert (out == img).all(axis=2)[inside].mean() >= 0.9
