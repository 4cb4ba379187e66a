"""Recall, false alarms and time per megapixel of each face detector and union.

    python benchmarks/detectors.py                # the table (a few minutes on 2 cores)
    python benchmarks/detectors.py --quick        # without dlib's CNN (slow)
    python benchmarks/detectors.py --calibrate    # the CNN -> HOG box calibration

Photos: the test photos in ``tests/data`` (portraits and collages) and the crowd
collage ``crowd_hard.jpg`` (44 faces of 21 to 60 px, tilted, blurred, dim, occluded,
turned), ground truth in ``tests/data/faces.json``. A true face is found when its centre
lies inside a detection whose width is under 3x the face's (one detection finds one
face); every other detection is a false alarm. Recall counts faces 24 px and wider
(the portraits count as found when a detection is there). "Listed" also counts the
faces missed but shown as low-score candidates (``faceveil detect``). Time is wall time
per megapixel after a warm-up run (model loading excluded), with this machine's
threads: onnxruntime uses every core, dlib's HOG one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from faceveil import faces  # noqa: E402

PHOTOS = [
    "obama.jpg", "biden.jpg", "obama2.jpg", "astronaut.jpg", "group.jpg", "crowd.jpg",
    "hard.jpg", "crowd_hard.jpg",
]
TURNS = (-35.0, 35.0)
MIN_WIDTH = 24  # the recall target's smallest face
# (label, detector, upsample, HOG turned by, threshold)
SETTINGS = [
    ("hog, upsample 1", "hog", 1, (), None),
    ("hog, upsample 1, turned +-35 (old default)", "hog", 1, TURNS, None),
    ("hog, upsample 2", "hog", 2, (), None),
    ("cnn, upsample 1", "cnn", 1, (), None),
    ("hog+cnn, upsample 1, turned (old 'both')", "hog+cnn", 1, TURNS, None),
    ("centerface, threshold 0.5 (default)", "centerface", 1, (), None),
    ("centerface, threshold 0.35", "centerface", 1, (), 0.35),
    ("centerface, threshold 0.2", "centerface", 1, (), 0.2),
    ("centerface+hog, upsample 1, turned", "centerface+hog", 1, TURNS, None),
    ("centerface+cnn, upsample 1", "centerface+cnn", 1, (), None),
]


def score(boxes: list, truth: dict) -> tuple[int, int, int, list[dict]]:
    """(faces counted, found, false alarms, the counted faces missed)."""
    gt = truth["faces"]
    if isinstance(gt, int):  # a portrait: any detection is taken for the face
        hits = min(gt, len(boxes))
        return gt, hits, len(boxes) - hits, [{"width": "?"}] * (gt - hits)
    found = [False] * len(gt)
    false = 0
    for x, y, w, h in boxes:
        for i, f in enumerate(gt):
            cx, cy = f["centre"]
            if not found[i] and x <= cx < x + w and y <= cy < y + h and w < 3 * f["width"]:
                found[i] = True
                break
        else:
            false += 1
    counted = [(f, ok) for f, ok in zip(gt, found, strict=True) if f["width"] >= MIN_WIDTH]
    return len(counted), sum(ok for _, ok in counted), false, [f for f, ok in counted if not ok]


def listed(missed: list[dict], candidates: list) -> int:
    """How many missed faces have their centre in a low-score candidate's box."""
    return sum(any(x <= f["centre"][0] < x + w and y <= f["centre"][1] < y + h
                   for x, y, w, h in candidates) for f in missed if "centre" in f)


def run(images: dict, truth: dict, detector: str, upsample: int, turns: tuple,
        threshold: float | None) -> dict:
    first = next(iter(images.values()))
    faces._detect(first, detector, upsample, turns, threshold)  # warm-up: load the models
    row = {"faces": 0, "found": 0, "false": 0, "listed": 0, "candidates": 0, "s": 0.0,
           "mp": 0.0, "missed": [], "crowd_hard": ""}
    for name, img in images.items():
        t0 = time.perf_counter()
        found, low = faces._detect(img, detector, upsample, turns, threshold)
        row["s"] += time.perf_counter() - t0
        row["mp"] += img.shape[0] * img.shape[1] / 1e6
        n, hits, false, missed = score([d.box for d in found], truth[name])
        row["faces"] += n
        row["found"] += hits
        row["false"] += false
        row["candidates"] += len(low)
        row["listed"] += listed(missed, [d.box for d, _ in low])
        row["missed"] += [f"{f['width']}" + (f"({','.join(f['effects'])})"
                                             if f.get("effects") else "") for f in missed]
        if name == "crowd_hard.jpg":
            row["crowd_hard"] = f"{hits}/{n}"
    return row


def calibrate(images: dict) -> None:
    """Median size and centre shift of HOG boxes relative to CNN boxes of the same face."""
    scale, dx, dy = [], [], []
    for img in images.values():
        hog, _ = faces._detect(img, "hog", 1, ())
        cnn_boxes = [tuple(d) for d in _raw_cnn(img)]
        for cx, cy, cw in cnn_boxes:
            for h in hog:
                x, y, w, _ = h.fit_box
                hx, hy = x + (w - 1) / 2, y + (w - 1) / 2
                if abs(hx - cx) < cw / 2 and abs(hy - cy) < cw / 2:
                    scale.append(w / cw)
                    dx.append((hx - cx) / cw)
                    dy.append((hy - cy) / cw)
    print(f"{len(scale)} faces: HOG side = {np.median(scale):.3f} x CNN side "
          f"(std {np.std(scale):.3f}); centre shift = ({np.median(dx):.3f}, {np.median(dy):.3f})"
          " x CNN side")


def _raw_cnn(img: np.ndarray) -> list[tuple[float, float, float]]:
    out = []
    for d in faces._dlib_model("cnn")(img, 1):
        r = d.rect
        out.append(((r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2, r.width()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip dlib's CNN")
    ap.add_argument("--calibrate", action="store_true", help="print the CNN box calibration")
    args = ap.parse_args()
    truth = json.loads((ROOT / "tests/data/faces.json").read_text())
    images = {p: np.asarray(Image.open(ROOT / "tests/data" / p).convert("RGB")) for p in PHOTOS}
    if args.calibrate:
        calibrate(images)
        return
    mp = sum(i.shape[0] * i.shape[1] for i in images.values()) / 1e6
    print(f"{len(images)} photos, {mp:.2f} MP; {os.cpu_count()} CPU threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})\n")
    print("| detector | recall (faces >= 24 px) | crowd_hard | false alarms / photo "
          "| + listed as candidates | candidates / photo | s / MP | missed (px, effects) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, det, up, turns, th in SETTINGS:
        if args.quick and "cnn" in det:
            continue
        r = run(images, truth, det, up, turns, th)
        print(f"| {label} | {r['found']}/{r['faces']} ({100 * r['found'] / r['faces']:.1f}%) "
              f"| {r['crowd_hard']} | {r['false'] / len(images):.2f} "
              f"| {r['found'] + r['listed']}/{r['faces']} | {r['candidates'] / len(images):.2f} "
              f"| {r['s'] / r['mp']:.2f} | {', '.join(r['missed'])} |", flush=True)


if __name__ == "__main__":
    main()
