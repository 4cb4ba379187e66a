"""Video tracks from synthetic detections: faces link only where they could have moved,
false positives stay in their own frames, and nothing is painted between two places."""

from __future__ import annotations

import numpy as np

from faceveil import faces
from faceveil.video.tracking import Tracker, spatially_consistent

PIXELS = np.zeros((8, 8, 3), np.uint8)  # the embedding below never reads it


def _face(x: float, y: float, w: float = 40) -> faces.FaceRegion:
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 18:46] = 1.0
    transform = np.array([[64 / w, 0, -64 * x / w], [0, 64 / w, -64 * y / w]])
    return faces.FaceRegion(box=(int(x), int(y), int(w), int(w)), transform=transform,
                            crop_size=64, mask=mask, landmarks=None, source="detector",
                            score=0.9)


def _same_person(pixels, box):
    """Every detection looks like the same person: only geometry can keep them apart."""
    return np.zeros(128)


def _run(detections: dict[int, list[faces.FaceRegion]], frames: int, gap: int):
    tracker = Tracker(gap, embed=_same_person)
    shown: dict[int, list] = {}
    for f in range(frames):
        tracker.update(f, detections.get(f, []), PIXELS)
    for f in range(frames):
        shown[f] = tracker.faces_at(f)
    return tracker, shown


def test_a_far_detection_starts_a_new_track_and_nothing_is_filled_between():
    # A face walks right 10 px a frame; frame 8 has a false positive on a railing at the
    # far left, frame 9 one on a dress 9 box widths from it. Before, the embedding joined
    # the two and faces slid across the frames between.
    walk = {f: [_face(300 + 10 * f, 100)] for f in range(12)}
    walk[8].append(_face(20, 300))
    walk[9].append(_face(380, 300))
    tracker, shown = _run(walk, 12, gap=3)
    assert tracker.count == 3  # the walker, the railing, the dress: none joined
    for f, found in shown.items():
        boxes = [r.box for _, r, _ in found]
        # every frame holds the walker; a false positive only next to its own frame
        assert any(abs(b[0] - (300 + 10 * f)) <= 1 for b in boxes)
        for t, r, kind in found:
            if t.id != tracker.tracks[0].id:
                assert kind != "interpolated"  # never a face between two places
                assert r.box[0] in (20, 380)  # only where it was detected
    # Every detection is still anonymized in its own frame.
    assert any(r.box == (20, 300, 40, 40) for _, r, _ in shown[8])
    assert any(r.box == (380, 300, 40, 40) for _, r, _ in shown[9])


def test_every_track_moves_at_most_one_box_width_per_frame():
    rng = np.random.default_rng(0)
    detections: dict[int, list] = {}
    for f in range(30):  # a pan: two faces slide 15 px a frame, false positives anywhere
        found = [_face(50 + 15 * f, 80), _face(400 + 15 * f, 120, 60)]
        if f % 4 == 1:
            found.append(_face(*rng.uniform(0, 900, 2), w=rng.uniform(20, 80)))
        if f not in (6, 7):  # the detector misses both faces for two frames
            detections[f] = found
        else:
            detections[f] = found[2:]
    tracker, shown = _run(detections, 30, gap=3)
    path: dict[int, dict[int, tuple]] = {}
    for f, found in shown.items():
        for t, r, _ in found:
            path.setdefault(t.id, {})[f] = r.box
    for boxes in path.values():
        frames = sorted(boxes)
        for a, b in zip(frames, frames[1:], strict=False):
            assert spatially_consistent(boxes[a], boxes[b], b - a)
            (xa, ya, wa, _), (xb, yb, wb, _) = boxes[a], boxes[b]
            assert np.hypot(xb + wb / 2 - xa - wa / 2, yb + wb / 2 - ya - wa / 2) <= max(
                wa, wb) * (b - a)
    # The missed frames of both walkers are filled in (one track each, not three).
    walkers = [t for t in path if 0 in path[t] and 29 in path[t]]
    assert len(walkers) == 2 and all(6 in path[t] and 7 in path[t] for t in walkers)


def test_a_face_that_reappears_elsewhere_is_a_new_identity():
    # Seen at x=100 in frames 0-4, missed in 5-6, then at x=700 (15 box widths in 3
    # frames): a new track with its own nonce, and frames 5-6 show no face between.
    detections = {f: [_face(100, 100)] for f in range(5)}
    detections.update({f: [_face(700, 100)] for f in range(7, 12)})
    tracker, shown = _run(detections, 12, gap=3)
    assert tracker.count == 2
    first, second = tracker.tracks
    assert first.nonce != second.nonce
    for f in (5, 6):
        assert all(kind == "carried" for _, _, kind in shown[f])  # only where each was
        assert all(r.box[0] in (100, 700) for _, r, _ in shown[f])
    # The same gap with a plausible move (2 box widths in 3 frames) links and fills.
    near = {f: [_face(100, 100)] for f in range(5)}
    near.update({f: [_face(180, 100)] for f in range(7, 12)})
    tracker, shown = _run(near, 12, gap=3)
    assert tracker.count == 1
    assert [k for _, _, k in shown[6]] == ["interpolated"]
    assert 100 < shown[6][0][1].box[0] < 180


def test_consistency_rule():
    assert spatially_consistent((0, 0, 40, 40), (40, 0, 40, 40), 1)
    assert not spatially_consistent((0, 0, 40, 40), (41, 0, 40, 40), 1)
    assert spatially_consistent((0, 0, 40, 40), (80, 0, 40, 40), 2)
    assert not spatially_consistent((0, 0, 40, 40), (0, 0, 90, 90), 1)  # grew 2.25x
    assert spatially_consistent((0, 0, 40, 40), (0, 0, 90, 90), 2)
