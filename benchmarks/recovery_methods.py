"""Recovery methods side by side: plain (the paper's), exact-steps, lossless.

Usage::

    python benchmarks/recovery_methods.py [--faces 32] [--model face64-v1] [--steps 50]

For held-out synthetic aligned faces (DCGAN evaluation seeds, never used in training)
and the multi-face test photos, one row per method: face-region PSNR and SSIM of the
recovered image, share of recovered faces that are the same person for dlib (distance
<= 0.6), model calls and seconds per face (anonymize + recover), bytes the method adds
to the file per face; then the same after JPEG re-encoding at quality 95 and 90 (with
the metadata passed separately, as ``recover --meta`` does).

Aligned faces are processed as a mosaic: one image holding a grid of faces, each its
own region, so the API batches them through the model like faces of one photo.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

from faceveil import api, faces, identity, images, keys  # noqa: E402
from faceveil.evaluation.harness import aligned_face_box  # noqa: E402
from faceveil.evaluation.measures import psnr, ssim  # noqa: E402
from faceveil.options import Options  # noqa: E402
from faceveil.pipeline.generate import framing as model_framing  # noqa: E402
from faceveil.pipeline.pixels import face_window  # noqa: E402

# (label, anonymize options, recover options, measure after JPEG). After JPEG the residual
# no longer applies and lossless falls back to exact-steps, so those rows would repeat.
# The diffusion rows say lossless=False: recovery would otherwise use any sealed originals.
METHODS = [
    ("plain (paper)", dict(method="plain", context="own", lossless=False),
     dict(residual=False), True),
    ("plain + residual", dict(method="plain", context="own", lossless=False), {}, False),
    ("exact-steps (default)", dict(method="exact-steps", context="masked", lossless=False), {},
     True),
    ("lossless", dict(method="exact-steps", context="masked", lossless=True), {}, False),
]


def synthetic_faces(n: int) -> list[np.ndarray]:
    import dcgan  # training/dcgan.py

    g = dcgan.load_generator()
    x = dcgan.generate_faces(g, dcgan.evaluation_seeds(n))
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return list(arr)


def mosaic(tiles: list[np.ndarray], backbone) -> tuple[np.ndarray, list[faces.FaceRegion]]:
    """A grid image of aligned faces and one region per face (a pure translation)."""
    size = tiles[0].shape[0]
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    image = np.zeros((rows * size, cols * size, 3), np.uint8)
    regions = []
    framing = model_framing(backbone)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        image[r * size:(r + 1) * size, c * size:(c + 1) * size] = tile
        region = faces.aligned_region(tile, framing=framing, crop_size=backbone.image_size)
        region.transform = np.array([[1.0, 0, -c * size], [0, 1.0, -r * size]])
        region.box = (c * size, r * size, size, size)
        regions.append(region)
    return image, regions


def count_calls(backbone):
    """Wrap the backbone's predict to count model evaluations."""
    calls = {"n": 0}
    predict = backbone.predict

    def counted(z, t):
        calls["n"] += int(z.shape[0])  # one evaluation per face in the batch
        return predict(z, t)

    backbone.predict = counted
    return calls


def identity_box(region, backbone) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The window to embed a face in and its box there: the same for every version of
    the face, so dlib compares them at one place (aligned tiles: where the framing puts
    the face; photos: the detection box with some margin)."""
    x, y, w, h = region.box
    if region.source == "aligned":
        return (slice(y, y + h), slice(x, x + w)), aligned_face_box(backbone, (h, w))
    pad = w // 2
    x0, y0 = max(0, x - pad), max(0, y - pad)
    return (slice(y0, y + h + pad), slice(x0, x + w + pad)), (x - x0, y - y0, w, h)


def face_scores(original: np.ndarray, recovered: np.ndarray, regions, backbone) -> list[dict]:
    """Per face: PSNR/SSIM over the face's hard-mask footprint, dlib same person."""
    out = []
    for region in regions:
        inside, window = face_window(region.mask, region.transform, original.shape)
        a, b = original[window], recovered[window]
        crop, box = identity_box(region, backbone)
        e0 = identity.embed(np.ascontiguousarray(original[crop]), box)
        e1 = identity.embed(np.ascontiguousarray(recovered[crop]), box)
        same = None if e0 is None or e1 is None else identity.distance(e0, e1) <= 0.6
        out.append({"psnr": psnr(a, b, inside), "ssim": ssim(a, b, inside), "same": same})
    return out


def summarize(rows: list[dict]) -> dict:
    ps = [r["psnr"] for r in rows if r["psnr"] is not None]
    ss = [r["ssim"] for r in rows if r["ssim"] is not None]
    same = [r["same"] for r in rows if r["same"] is not None]
    return {
        "psnr_median": float(np.median(ps)) if ps else None,
        "psnr_min": float(np.min(ps)) if ps else None,
        "ssim_median": float(np.median(ss)) if ss else None,
        "same_person": float(np.mean(same)) if same else None,
        "faces": len(rows),
    }


def run_set(name, image, regions, backbone, key, steps, log, skip=()) -> list[dict]:
    results = []
    for label, anon_opts, rec_opts, with_jpeg in METHODS:
        if label in skip:
            continue
        calls = count_calls(backbone)
        t0 = time.perf_counter()
        anon = api.anonymize(image, key, model=backbone, regions=regions,
                             options=Options.of(steps=steps, **anon_opts))
        t1 = time.perf_counter()
        back = api.recover(anon.pixels, key, meta=anon.record, model=backbone, **rec_opts)
        t2 = time.perf_counter()
        del backbone.predict  # back to the class method
        n = len(anon.record.faces)
        regs = anon.regions
        plain_png = len(images.encode_image(anon.pixels, "PNG"))
        added = (len(anon.png_bytes()) - plain_png) / n
        row = {"set": name, "method": label, "calls_per_face": calls["n"] / n,
               "anonymize_s_per_face": (t1 - t0) / n, "recover_s_per_face": (t2 - t1) / n,
               "bytes_per_face": added,
               "bit_exact": bool(np.array_equal(back.pixels, image)),
               **summarize(face_scores(image, back.pixels, regs, backbone))}
        for quality in (95, 90) if with_jpeg else ():
            buf = io.BytesIO()
            Image.fromarray(anon.pixels).save(buf, "JPEG", quality=quality)
            jpeg = images.load_image(buf.getvalue()).pixels
            rec = api.recover(jpeg, key, meta=anon.record, model=backbone, **rec_opts)
            s = summarize(face_scores(image, rec.pixels, regs, backbone))
            row[f"jpeg{quality}"] = {"psnr_median": s["psnr_median"],
                                     "same_person": s["same_person"], "notes": rec.notes}
        results.append(row)
        log(row)
    return results


def table(results: list[dict]) -> str:
    lines = [
        "| set | method | PSNR median (min) | SSIM | same person | calls/face | s/face anon+rec |"
        " bytes/face | bit-exact | JPEG95 PSNR / same | JPEG90 PSNR / same |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    for r in results:
        none = {"psnr_median": None, "same_person": None}
        j95, j90 = r.get("jpeg95", none), r.get("jpeg90", none)
        lines.append(
            f"| {r['set']} | {r['method']} | {f(r['psnr_median'])} ({f(r['psnr_min'])}) | "
            f"{f(r['ssim_median'], '{:.3f}')} | {f(r['same_person'], '{:.2f}')} | "
            f"{r['calls_per_face']:.0f} | "
            f"{r['anonymize_s_per_face']:.1f}+{r['recover_s_per_face']:.1f} | "
            f"{r['bytes_per_face']:.0f} | {'yes' if r['bit_exact'] else 'no'} | "
            f"{f(j95['psnr_median'])} / {f(j95['same_person'], '{:.2f}')} | "
            f"{f(j90['psnr_median'])} / {f(j90['same_person'], '{:.2f}')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=32, help="held-out synthetic faces")
    ap.add_argument("--model", default=None, help="model (default: built-in)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--photos", nargs="*", default=["group.jpg", "obama.jpg"],
                    help="test photos from tests/data")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    ap.add_argument("--skip", nargs="*", default=[], help="method labels to leave out")
    args = ap.parse_args()

    backbone = api.get_model(args.model)
    key = keys.KeySource.from_bytes(os.urandom(32))
    log = lambda row: print(json.dumps(row, default=str), file=sys.stderr)  # noqa: E731
    results = []
    if args.faces:
        image, regions = mosaic(synthetic_faces(args.faces), backbone)
        results += run_set(f"synthetic x{args.faces}", image, regions, backbone, key,
                           args.steps, log, args.skip)
    for name in args.photos:
        photo = images.load_image(ROOT / "tests" / "data" / name).pixels
        results += run_set(name, photo, None, backbone, key, args.steps, log, args.skip)
    print(f"model {backbone.model_id} ({backbone.sha256[:12]}), {args.steps} DDIM steps, "
          f"CPU threads {os.cpu_count()}")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
