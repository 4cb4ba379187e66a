"""Faces found and time per dlib detector setting, on the test photos in tests/data.

    OMP_NUM_THREADS=1 python benchmarks/detectors.py

Ground truth is ``tests/data/faces.json``: the collages list each face's centre and
width; the portraits hold one face each. A detection is a hit when a face centre lies
inside its box (each face counted once); every other detection is a false alarm.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from faceveil import faces  # noqa: E402

NO_TURN: tuple[float, ...] = ()
TURNS = (-35.0, 35.0)
SETTINGS = [
    ("hog", 0, NO_TURN), ("hog", 1, NO_TURN), ("hog", 2, NO_TURN), ("hog", 1, TURNS),
    ("hog", 2, TURNS), ("cnn", 0, NO_TURN), ("cnn", 1, NO_TURN), ("both", 1, NO_TURN),
    ("both", 1, TURNS),
]
PHOTOS = [
    "obama.jpg", "biden.jpg", "obama2.jpg", "astronaut.jpg", "group.jpg", "crowd.jpg", "hard.jpg",
]


def score(dets: list, truth: dict) -> tuple[int, int, int, list[int]]:
    """(faces, hits, false alarms, widths of the faces missed)."""
    gt = truth["faces"]
    if isinstance(gt, int):
        hits = min(gt, len(dets))
        return gt, hits, len(dets) - hits, [0] * (gt - hits)
    found = [False] * len(gt)
    false = 0
    for (x, y, w, h), _, _ in dets:
        for i, f in enumerate(gt):
            cx, cy = f["centre"]
            if not found[i] and x <= cx < x + w and y <= cy < y + h:
                found[i] = True
                break
        else:
            false += 1
    missed = [f["width"] for f, ok in zip(gt, found, strict=True) if not ok]
    return len(gt), sum(found), false, missed


def main() -> None:
    truth = json.loads((ROOT / "tests/data/faces.json").read_text())
    images = {p: np.asarray(Image.open(ROOT / "tests/data" / p).convert("RGB")) for p in PHOTOS}
    print("| detector | upsample | HOG also turned | faces found | false alarms "
          "| missed (face width px) | time, 7 photos |")
    print("|---|---|---|---|---|---|---|")
    for det, up, turns in SETTINGS:
        total = hits = false = 0
        missed: list[int] = []
        t0 = time.perf_counter()
        for p, img in images.items():
            dets = faces.detect(img, detector=det, upsample=up, rotations=turns)
            n, h, f, m = score(dets, truth[p])
            total, hits, false = total + n, hits + h, false + f
            missed += m
        dt = time.perf_counter() - t0
        turned = ", ".join(f"{a:+g}" for a in turns) if det != "cnn" else "-"
        print(f"| {det} | {up} | {turned or 'no'} | {hits}/{total} | {false} | {sorted(missed)} "
              f"| {dt:.1f} s |")


if __name__ == "__main__":
    main()
