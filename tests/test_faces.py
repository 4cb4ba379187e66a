"""Detection, alignment, masks and warping on real photos (tests/data, see its README)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil import faces
from faceveil.errors import InputError
from faceveil.faces import landmarks as LM

DATA = Path(__file__).parent / "data"
TRUTH = json.loads((DATA / "faces.json").read_text())
FFHQ = faces.Framing.ffhq()


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name).convert("RGB"))


def hits(dets: list, truth: list[dict]) -> int:
    """How many true faces have their centre inside a detected box."""
    return sum(
        any(x <= f["centre"][0] < x + w and y <= f["centre"][1] < y + h
            for (x, y, w, h), *_ in dets)
        for f in truth
    )


def rotation(angle_deg: float, scale: float, centre_photo, centre_crop) -> np.ndarray:
    """Photo -> crop similarity: rotate by ``angle`` and scale about ``centre_photo``."""
    a = math.radians(angle_deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    t = np.asarray(centre_crop, float) - r @ np.asarray(centre_photo, float)
    return np.hstack([r, t[:, None]])


# --- framing and alignment ------------------------------------------------------------


def test_dlib_mean_shape_is_a_symmetric_face_in_its_box():
    lm = faces.dlib_mean_shape68()
    assert lm.shape == (68, 2)
    assert lm[LM.CHIN, 0] == pytest.approx(0.5, abs=1e-3)
    assert np.allclose(lm[0, 0] + lm[16, 0], 1.0, atol=1e-3)  # jaw ends mirror each other
    assert lm[LM.BROWS, 1].max() < lm[LM.NOSE_TIP, 1] < lm[LM.CHIN, 1]


def test_ffhq_framing_places_eyes_and_mouth_like_ffhq():
    p5 = FFHQ.points5()
    eyes, mouth = p5[:2], p5[3:]
    assert eyes[:, 1] == pytest.approx([0.473, 0.473], abs=0.01)
    assert eyes[:, 0].mean() == pytest.approx(0.5, abs=1e-3)
    # FFHQ: the eye-to-eye distance is half the crop side over the 2x rule... about 1/4.
    assert eyes[1, 0] - eyes[0, 0] == pytest.approx(0.25, abs=0.01)
    assert mouth[:, 1].mean() == pytest.approx(0.74, abs=0.02)
    # Hair and background: the face outline stays well inside the crop.
    assert FFHQ.landmarks68.min() > 0.15 and FFHQ.landmarks68.max() < 0.95


def test_framing_from_dict_round_trip_and_validation():
    again = faces.Framing.from_dict(FFHQ.to_dict())
    assert np.allclose(again.landmarks68, FFHQ.landmarks68, atol=1e-6)
    with pytest.raises(ValueError):
        faces.Framing.from_dict({"landmarks68": [[0.5, 0.5]] * 5})
    with pytest.raises(ValueError):
        faces.Framing.from_dict({})


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.random((5, 2)) * 100
    t = rotation(25, 0.7, (50, 50), (30, 40))
    assert np.allclose(faces.similarity_transform(src, faces.apply_transform(t, src)), t)


def test_alignment_puts_the_eyes_where_the_framing_says():
    img = load("group.jpg")
    regions, _ = faces.find_faces(img, framing=FFHQ, crop_size=256)
    assert len(regions) == 6
    target = FFHQ.points5() * 256
    eye_dist = target[1, 0] - target[0, 0]
    for r in regions:
        p5 = faces.points5_of(faces.apply_transform(r.transform, r.landmarks))
        err = np.hypot(*(p5[:2] - target[:2]).T)
        assert err.max() < 0.12 * eye_dist, (r.box, err)
        # Rotated faces (the collage has two) come out upright: the eyes are level.
        assert abs(p5[1, 1] - p5[0, 1]) < 0.1 * eye_dist


# --- detection ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["group.jpg", "crowd.jpg"])
def test_default_detector_finds_every_face_of_40px_and_more(name):
    truth = TRUTH[name]["faces"]
    assert min(f["width"] for f in truth) <= 44
    dets = faces.detect(load(name))
    assert hits(dets, truth) == len(truth)
    assert len(dets) == len(truth)


def test_hog_without_upsampling_misses_small_faces():
    # Why the default upsamples once: HOG alone stops at about 80 px faces.
    truth = TRUTH["crowd.jpg"]["faces"]
    assert hits(faces.detect(load("crowd.jpg"), detector="hog", upsample=0), truth) < len(truth)


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg", "obama2.jpg"])
def test_one_face_per_portrait(name):
    assert len(faces.detect(load(name))) == 1


def test_cnn_and_union_find_the_portrait_face_once():
    img = load("obama.jpg")
    (cnn,) = faces.detect(img, detector="cnn", upsample=0)
    assert cnn[2] == "cnn"
    both = faces.detect(img, detector="both", upsample=0)
    assert len(both) == 1 and both[0][2] == "hog"  # the CNN box is the same face
    with pytest.raises(ValueError):
        faces.detect(img, detector="retina")


def test_find_faces_numbering_exclude_min_face_and_user_boxes():
    img = load("group.jpg")
    regions, skipped = faces.find_faces(img, framing=FFHQ, crop_size=64)
    assert skipped == []
    xs = [r.box[0] for r in regions]
    assert xs == sorted(xs) and [r.index for r in regions] == list(range(6))

    regions2, skipped2 = faces.find_faces(img, framing=FFHQ, crop_size=64, exclude=[0],
                                          min_face=60)
    reasons = {s["index"]: s["reason"] for s in skipped2}
    assert reasons[0] == "excluded"
    small = [s for s in skipped2 if s["reason"].startswith("smaller than min_face")]
    assert len(small) >= 2 and all(s["box"][2] < 60 for s in small)
    assert all(r.box[2] >= 60 for r in regions2)
    assert len(regions2) == 6 - len(skipped2)

    box = regions[0].box
    regions3, _ = faces.find_faces(img, framing=FFHQ, crop_size=64, exclude=[0], boxes=[box])
    added = regions3[-1]
    assert added.source == "box" and added.index == 6 and added.box == box
    assert np.allclose(added.transform, regions[0].transform, atol=1e-6)

    with pytest.raises(InputError):
        faces.find_faces(img, framing=FFHQ, crop_size=64, exclude=[6])
    with pytest.raises(InputError):
        faces.find_faces(img, framing=FFHQ, crop_size=64, boxes=[(5000, 0, 50, 50)])


def test_no_face_gives_no_region():
    flat = np.full((200, 300, 3), 128, np.uint8)
    assert faces.find_faces(flat, framing=FFHQ, crop_size=64) == ([], [])


# --- masks ----------------------------------------------------------------------------


def check_soft_inside_hard(mask: np.ndarray) -> None:
    assert mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
    hard = mask > 0
    assert np.any((mask > 0) & (mask < 1)), "the mask has a feathered edge"
    assert mask.max() == 1.0
    # The soft edge lies inside the hard mask: its outermost ring is below 1, and no
    # value between 0 and 1 lies outside it (trivially) - check the ring explicitly.
    ring = hard & ~np.pad(hard, 1)[2:, 1:-1] | hard & ~np.pad(hard, 1)[:-2, 1:-1]
    assert np.all(mask[ring] < 1)


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg", "obama2.jpg", "astronaut.jpg"])
def test_mask_covers_the_face_and_leaves_hair_and_background(name):
    size = 128
    regions, _ = faces.find_faces(load(name), framing=FFHQ, crop_size=size)
    r = max(regions, key=lambda r: r.box[2])  # astronaut.jpg has a false alarm on a badge
    m = r.mask
    check_soft_inside_hard(m)
    lm = faces.apply_transform(r.transform, r.landmarks)
    for p in (lm[LM.NOSE_TIP], lm[LM.EYE_LEFT].mean(0), lm[LM.EYE_RIGHT].mean(0),
              lm[62]):  # inner upper lip
        assert m[int(round(p[1])), int(round(p[0]))] == 1.0
    # FFHQ framing keeps hair above and background around the face: none of it is masked.
    assert not m[: int(0.17 * size)].any()
    c = int(0.15 * size)
    for corner in (m[:c, :c], m[:c, -c:], m[-c:, :c], m[-c:, -c:]):
        assert not corner.any()
    # Left and right of the face at eye height (ears, hair, background) stay out too.
    assert not m[int(0.47 * size), : int(0.12 * size)].any()
    assert not m[int(0.47 * size), -int(0.12 * size):].any()
    assert 0.2 < (m > 0).mean() < 0.45


def test_template_mask_matches_the_framing():
    m = faces.template_mask(FFHQ, 64)
    check_soft_inside_hard(m)
    nose = FFHQ.landmarks68[LM.NOSE_TIP] * 64
    assert m[int(round(nose[1])), int(round(nose[0]))] == 1.0
    assert not m[:10].any() and not m[:, :8].any() and not m[:, -8:].any()


def test_mask_cut_by_the_crop_fades_out_at_the_border():
    # The built-in model's framing puts the chin on the crop's bottom edge: the mask must
    # fade out there (a straight hard line across the chin otherwise), and still cover
    # every pixel of the face it covered before.
    lm = FFHQ.landmarks68 * 64
    lm = lm + [0.0, 64 - lm[LM.CHIN][1]]  # chin on the last row
    soft = faces.facial_mask(lm, 64)
    check_soft_inside_hard(soft)
    bottom = soft[-1][soft[-1] > 0]
    assert bottom.size > 10 and bottom.max() < 0.2  # cut by the border, faded there
    assert soft[-6:-3].max() > 0.9  # and solid a few pixels further in
    depth = faces.masks._polygon_depth(faces.masks.face_outline(lm), 64)
    width = np.hypot(*(lm[16] - lm[0]))
    assert np.array_equal(soft > 0, depth + faces.masks.MASK_DILATE * width >= 0)


def builtin_framing() -> faces.Framing:
    from faceveil.diffusion.hub import DEFAULT_MODEL, WEIGHTS_DIR

    meta = json.loads((WEIGHTS_DIR / DEFAULT_MODEL / "faceveil.json").read_text())
    return faces.Framing.from_dict(meta["framing"])


def outline_extent(transform: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hard mask's bounding box in crop pixels (outline grown as the mask is)."""
    crop = faces.apply_transform(transform, lm)
    grow = faces.masks.MASK_DILATE * np.hypot(*(crop[16] - crop[0]))
    outline = faces.masks.face_outline(crop)
    return outline.min(0) - grow, outline.max(0) + grow


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "group.jpg"])
def test_the_chin_below_a_tight_crop_is_still_replaced(name):
    # The built-in model's framing puts the chin on the crop's bottom edge, so the chin
    # of a real face runs past it; the crop must move so that every photo pixel of the
    # face's outline lies under the mask (else the original chin is left as it was).
    img, framing = load(name), builtin_framing()
    regions, _ = faces.find_faces(img, framing=framing, crop_size=64)
    overflow = 0.0
    for r in regions:
        plain = faces.align_transform(r.landmarks, framing, 64)
        overflow = max(overflow, outline_extent(plain, r.landmarks)[1][1] - 63)
        lo, hi = outline_extent(r.transform, r.landmarks)
        assert lo.min() >= -1e-6 and hi.max() <= 63 + 1e-6
        # In the photo: every pixel centre a pixel deep inside the grown outline (drawn
        # in crop units, wherever it falls) is under the mask.
        alpha, (rows, cols) = faces.footprint(r.mask, r.transform, img.shape)
        ys, xs = np.mgrid[rows, cols]
        pts = faces.apply_transform(r.transform, np.stack([xs.ravel(), ys.ravel()], 1))
        lm = faces.apply_transform(r.transform, r.landmarks)
        grow = faces.masks.MASK_DILATE * np.hypot(*(lm[16] - lm[0])) - 1.0
        depth = faces.masks._convex_depth(faces.masks.face_outline(lm), pts[:, 0], pts[:, 1])
        deep = depth.reshape(alpha.shape) >= -grow
        assert deep.sum() > 100 and (alpha[deep] > 0).all()
    assert overflow > 1  # the plain alignment does run past the crop on these photos


def test_fit_crop_moves_the_face_only_as_far_as_needed():
    framing = builtin_framing()
    lm = framing.landmarks68 * 100 + [20.0, 30.0]  # a face in a photo
    plain = faces.align_transform(lm, framing, 64)
    # Room enough once moved: the same scale, a pure shift.
    fitted = faces.fit_crop(plain, lm, 64)
    assert np.allclose(fitted[:, :2], plain[:, :2])
    lo, hi = outline_extent(fitted, lm)
    assert lo.min() >= -1e-6 and abs(hi.max() - 63) < 1e-6  # touches the edge, no more
    # A loose framing that already holds the outline: unchanged.
    assert np.array_equal(faces.fit_crop(faces.align_transform(lm, FFHQ, 64), lm, 64),
                          faces.align_transform(lm, FFHQ, 64))
    # An outline taller than the crop (a long chin): scaled down to fit, no further.
    long = lm.copy()
    long[LM.JAW.start + 3: LM.JAW.stop - 3, 1] += 40
    fitted = faces.fit_crop(faces.align_transform(long, framing, 64), long, 64)
    lo, hi = outline_extent(fitted, long)
    assert lo.min() >= -1e-6 and hi.max() <= 63 + 1e-6
    assert abs((hi - lo).max() - 63) < 1e-6


def test_soften_feathers_any_hard_mask_inwards():
    hard = np.zeros((40, 40), np.float32)
    hard[5:35, 10:20] = 1
    hard[20:35, 10:35] = 1  # not convex
    soft = faces.soften(hard, 4)
    assert np.array_equal(soft > 0, hard > 0)
    check_soft_inside_hard(soft)
    assert soft[27, 15] == 1.0 and soft[5, 15] < 0.5


def test_mask_pooling_is_torch_pooling_index_for_index():
    # The masks once pooled with torch; now numpy does it (no torch for the default path),
    # and every mask must come out as it did.
    import torch
    import torch.nn.functional as F

    def dilate(m, r):
        return F.max_pool2d(torch.from_numpy(m)[None, None], 2 * r + 1, stride=1,
                            padding=r)[0, 0].numpy()

    def resize(t, size):
        rows = (F.adaptive_max_pool2d(t, (size, t.shape[-1])) if t.shape[-2] >= size
                else F.interpolate(t, size=(size, t.shape[-1]), mode="nearest"))
        return (F.adaptive_max_pool2d(rows, (size, size)) if t.shape[-1] >= size
                else F.interpolate(rows, size=(size, size), mode="nearest"))

    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(3, 90, 2))
        soft = (rng.random((h, w)) * (rng.random((h, w)) < 0.3)).astype(np.float32)
        r = int(rng.integers(1, 25))
        assert np.array_equal(faces.dilate(soft, r), dilate(soft, r))
        hard = rng.random((h, w)) < 0.4
        t = torch.from_numpy(hard.astype(np.float32))[None, None]
        depth, cur = torch.zeros_like(t), t
        for _ in range(3):  # soften's 3x3 erosions
            depth += cur
            cur = -F.max_pool2d(-F.pad(cur, (1, 1, 1, 1), value=0.0), 3, stride=1)
        want = np.where(hard, faces.masks._smoothstep(depth[0, 0].numpy() / 3), 0.0)
        assert np.array_equal(faces.soften(hard, 2.5), want.astype(np.float32))
        for size in (16, 33, 64, int(rng.integers(5, 200))):
            ry, rx = (faces.paste_reach(size / n) for n in (h, w))
            grown = F.max_pool2d(resize(t, size), (2 * ry + 1, 2 * rx + 1), stride=1,
                                 padding=(ry, rx))[0, 0].numpy() > 0
            assert np.array_equal(faces.crop_mask(hard, size), grown.astype(np.float32))


def test_the_hog_detector_is_cached_as_the_same_detector(tmp_path, monkeypatch):
    import dlib

    monkeypatch.setenv("FACEVEIL_CACHE", str(tmp_path))
    img = np.asarray(Image.open(DATA / "group.jpg").convert("RGB"))
    want = dlib.get_frontal_face_detector().run(img, 1, -0.5)
    built = faces.landmarks._frontal_face_detector()  # builds it and saves it
    (cached,) = tmp_path.glob("dlib-*-frontal_face_detector.svm")
    loaded = faces.landmarks._frontal_face_detector()  # from the file
    for detector in (built, loaded):
        rects, scores, kinds = detector.run(img, 1, -0.5)
        assert [(r.left(), r.top(), r.right(), r.bottom()) for r in rects] == [
            (r.left(), r.top(), r.right(), r.bottom()) for r in want[0]]
        assert (scores, kinds) == (want[1], want[2])
    cached.write_bytes(b"not a detector")  # damaged: rebuilt, and saved again
    rects, _, _ = faces.landmarks._frontal_face_detector().run(img, 1, -0.5)
    assert len(rects) == len(want[0]) and cached.stat().st_size > 1000


# --- warping --------------------------------------------------------------------------


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_extract_with_identity_and_integer_shift_is_exact():
    img = random_image(64, 64)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    crop = faces.extract(img, ident, 64)
    assert crop.dtype == np.float32 and np.array_equal(crop, img.astype(np.float32))
    shift = np.array([[1.0, 0, -7], [0, 1.0, -3]])  # crop (0, 0) = photo (7, 3)
    big = random_image(90, 80, seed=1)
    assert np.array_equal(faces.extract(big, shift, 48), big[3:51, 7:55].astype(np.float32))


def test_paste_with_identity_is_exact():
    img = random_image(64, 64)
    crop = random_image(64, 64, seed=1).astype(np.float32)
    alpha = np.zeros((64, 64), np.float32)
    alpha[10:50, 20:40] = 1.0
    alpha[30:40, 20:30] = 0.25
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    out = faces.paste(img, crop, ident, alpha)
    expect = np.rint(alpha[..., None] * crop + (1 - alpha[..., None]) * img).astype(np.uint8)
    assert np.array_equal(out, expect)
    assert np.array_equal(out[alpha == 0], img[alpha == 0])


@pytest.mark.parametrize(
    "angle, scale, centre",
    [
        (0.0, 1.0, (100, 80)),
        (33.0, 0.8, (100, 80)),  # rotated face
        (-20.0, 1.7, (10, 150)),  # face cut by the left and bottom borders
        (90.0, 0.5, (195, 5)),  # mostly outside, top right corner
        (10.0, 0.05, (100, 80)),  # a face 20x the crop's size, beyond the photo
        (-40.0, 6.0, (150, 40)),  # a tiny face: the crop is 6x finer than the photo
    ],
)
def test_paste_changes_nothing_outside_the_warped_mask(angle, scale, centre):
    img = random_image(160, 200)
    size = 64
    t = rotation(angle, scale, centre, (size / 2, size / 2))
    alpha = faces.template_mask(FFHQ, size)
    crop = random_image(size, size, seed=2).astype(np.float32)
    out = faces.paste(img, crop, t, alpha)
    warped, window = faces.footprint(alpha, t, img.shape)
    inside = np.zeros(img.shape[:2], bool)
    inside[window] = warped > 0
    assert np.array_equal(out[~inside], img[~inside])
    if inside.any():
        # Where the alpha is (close to) 1 the pixels came from the crop.
        full = np.zeros(img.shape[:2], bool)
        full[window] = warped > 0.99
        assert (out[full] != img[full]).mean() > 0.9


def test_overlapping_faces_pasted_in_sequence_touch_only_their_masks():
    img = random_image(120, 160)
    size = 32
    alpha = faces.template_mask(FFHQ, size)
    transforms = [rotation(0, 0.5, (60, 60), (16, 16)), rotation(25, 0.45, (80, 55), (16, 16))]
    out = img
    inside = np.zeros(img.shape[:2], bool)
    for k, t in enumerate(transforms):
        out = faces.paste(out, random_image(size, size, seed=k + 5).astype(np.float32), t,
                          alpha)
        warped, window = faces.footprint(alpha, t, img.shape)
        inside[window] |= warped > 0
    both = [faces.footprint(alpha, t, img.shape) for t in transforms]
    assert all(w.size and (w > 0).any() for w, _ in both)
    assert np.array_equal(out[~inside], img[~inside])


def test_extract_then_paste_puts_the_face_back_in_place():
    # Up- and downsampling round trip: the crop must land where it was taken from.
    img = load("obama.jpg")
    regions, _ = faces.find_faces(img, framing=FFHQ, crop_size=256)
    r = regions[0]
    crop = faces.extract(img, r.transform, 256)
    hard = (r.mask > 0).astype(np.float32)
    out = faces.paste(img, crop, r.transform, hard)
    warped, window = faces.footprint(hard, r.transform, img.shape)
    core = warped > 0.99
    diff = np.abs(out[window][core].astype(float) - img[window][core].astype(float))
    assert diff.mean() < 4.0  # two bilinear resamplings of a JPEG
    small = faces.extract(img, faces.align_transform(r.landmarks, FFHQ, 32), 32)
    assert small.shape == (32, 32, 3) and small.min() >= 0 and small.max() <= 255


# --- aligned crops --------------------------------------------------------------------


def aligned_obama(size: int) -> np.ndarray:
    img = load("obama.jpg")
    (r,), _ = faces.find_faces(img, framing=FFHQ, crop_size=size)
    return np.clip(np.rint(faces.extract(img, r.transform, size)), 0, 255).astype(np.uint8)


def test_aligned_region_uses_landmarks_on_an_aligned_face():
    crop = aligned_obama(256)
    r = faces.aligned_region(crop, framing=FFHQ, crop_size=256)
    assert np.allclose(r.transform, [[1, 0, 0], [0, 1, 0]])
    assert r.landmarks is not None and r.box == (0, 0, 256, 256) and r.source == "aligned"
    check_soft_inside_hard(r.mask)
    nose = r.landmarks[LM.NOSE_TIP]
    assert r.mask[int(nose[1]), int(nose[0])] == 1.0
    assert not r.mask[:40].any()
    # A larger input for a 64 px model: plain scaling, same face outline.
    r64 = faces.aligned_region(crop, framing=FFHQ, crop_size=64)
    assert np.allclose(r64.transform, [[0.25, 0, -0.375], [0, 0.25, -0.375]])
    small = r.mask[1::4, 1::4] > 0
    assert ((r64.mask > 0) == small).mean() > 0.95


def test_aligned_region_without_a_face_falls_back_to_the_template():
    noise = random_image(64, 64)
    r = faces.aligned_region(noise, framing=FFHQ, crop_size=64)
    assert r.landmarks is None
    assert np.array_equal(r.mask, faces.template_mask(FFHQ, 64))


def test_aligned_region_with_a_user_mask_is_hard_and_resized():
    user = np.zeros((128, 128), bool)
    user[32:96, 40:88] = True
    r = faces.aligned_region(random_image(128, 128), framing=FFHQ, crop_size=64, mask=user)
    assert set(np.unique(r.mask)) == {0.0, 1.0}
    # The 2x smaller rectangle, grown by the one crop pixel bilinear pasting reads.
    assert r.mask[15:49, 19:45].all() and r.mask.sum() == 34 * 26


def test_crop_mask_keeps_every_white_pixel():
    thin = np.zeros((128, 128), bool)
    thin[5:100, 77] = True  # 1 px wide, 4x smaller in the crop: an area threshold loses it
    assert faces.crop_mask(thin, 32)[2:25, 19].all()
    spot = np.zeros((8, 8), bool)
    spot[5, 2] = True  # 4x larger in the crop
    assert faces.crop_mask(spot, 32)[20:24, 8:12].all()
    same = np.zeros((32, 32), bool)
    same[3, 4] = True  # same size: pixel for pixel
    assert np.array_equal(faces.crop_mask(same, 32) > 0, same)
    with pytest.raises(InputError, match="no white pixel"):
        faces.crop_mask(np.zeros((8, 8), bool), 32)


# --- preview --------------------------------------------------------------------------


def test_preview_marks_faces_and_skipped_ones():
    img = load("group.jpg")
    regions, skipped = faces.find_faces(img, framing=FFHQ, crop_size=64, min_face=50)
    assert skipped
    prev = faces.draw_preview(img, regions, skipped)
    assert prev.shape == img.shape and prev.dtype == np.uint8
    for r in regions:
        x, y, w, h = r.box
        assert not np.array_equal(prev[y : y + h, x : x + w], img[y : y + h, x : x + w])
    x, y, w, h = skipped[0]["box"]
    edge = prev[y, x : x + w]
    assert (edge[:, 0] > 200).mean() > 0.8  # red outline


@pytest.mark.parametrize("detector", ["hog", "centerface"])
def test_tilted_heads_are_found_and_turned_upright(detector):
    # HOG by its passes on the photo turned by +-35 degrees; CenterFace by its five points,
    # whose tilt turns the face upright before the landmarks are predicted.
    img = load("hard.jpg")
    tilted = [f for f in TRUTH["hard.jpg"]["faces"] if abs(f["angle"]) >= 30]
    assert len(tilted) == 3
    if detector == "hog":
        upright_only = faces.detect(img, detector="hog", rotations=())
        assert hits(upright_only, [f for f in tilted if abs(f["angle"]) > 40]) == 0
    regions, _ = faces.find_faces(img, framing=FFHQ, crop_size=128, detector=detector)
    found = [r for r in regions if hits([(r.box,)], tilted)]
    assert len(found) == len(tilted)
    target = FFHQ.points5() * 128
    for r in found:
        # Landmarks come from an upright patch: the aligned crop has level eyes in place.
        p5 = faces.points5_of(faces.apply_transform(r.transform, r.landmarks))
        assert np.hypot(*(p5[:2] - target[:2]).T).max() < 0.12 * (target[1, 0] - target[0, 0])


def test_large_faces_give_one_note_naming_them():
    """Faces far larger than the 64 px crops: a single note for the photo, naming every
    shrunk face (what to do about it: tests/test_default_model.py)."""
    img = np.zeros((600, 900, 3), np.uint8)
    regions = [faces.box_region(img, box, framing=FFHQ, crop_size=64, index=i)
               for i, box in enumerate([(20, 20, 300, 300), (400, 20, 400, 400)])]
    notes = faces.resolution_notes(regions, 64)
    assert len(notes) == 1
    assert "faces 0, 1 are shrunk" in notes[0]
    small = faces.box_region(img, (20, 20, 40, 40), framing=FFHQ, crop_size=64, index=0)
    assert faces.resolution_notes([small], 64) == []
