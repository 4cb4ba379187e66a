"""Quality of a face model for faceveil, measured the way the model card reports it.

Usage::

    python benchmarks/builtin_quality.py [--faces 200] [--samples 64] [--model face64-v1]

On held-out synthetic aligned faces (DCGAN evaluation seeds, never used in training)
and the real test photos, with dlib's detector and 128-D embedding (same person when
the distance is at most 0.6):

- share of the model's own samples (DDIM 50 steps from random noise) that dlib detects
  as a face, beside the share of the DCGAN training-style faces it detects;
- anonymization: share of faces at least 0.6 from the original, share still detected;
- recovery with the right key: share within 0.6 of the original, face-region PSNR;
- wrong key (files made with --deniable, so a wrong key yields a face): share at least
  0.6 from the original;
- CPU seconds per face for anonymize and for recover.

Small aligned crops are upsampled to 192 px for dlib, as :mod:`faceveil.identity` does.
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
from faceveil.engine import Engine  # noqa: E402
from faceveil.evaluation.measures import psnr  # noqa: E402


def detected(crop: np.ndarray) -> bool:
    big = np.asarray(Image.fromarray(crop).resize((192, 192), Image.BICUBIC))
    return bool(faces.detect(big, detector="hog", upsample=1))


def model_samples(backbone, n: int, seed: int = 1234) -> list[np.ndarray]:
    engine = Engine(backbone, steps=50)
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, 16):
        z = torch.randn(min(16, n - start), *backbone.latent_shape, generator=g)
        x = backbone.decode(engine.denoise(z.to(backbone.device)))
        out += list(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return out


def measure(name, image, regions, backbone, steps, method) -> dict:
    key = keys.KeySource.from_bytes(os.urandom(32))
    wrong = keys.KeySource.from_bytes(os.urandom(32))
    t0 = time.perf_counter()
    kw = dict(model=backbone, steps=steps, deniable=True, method=method,
              context="own" if method == "plain" else "masked")
    anon = (api.anonymize(image, key, regions=regions, **kw) if regions is not None
            else api.anonymize(image, key, **kw))
    t1 = time.perf_counter()
    back = api.recover(anon.pixels, key, meta=anon.record, model=backbone)
    t2 = time.perf_counter()
    other = api.recover(anon.pixels, wrong, meta=anon.record, model=backbone)
    rows = []
    for region in anon.regions:
        window, box = identity_box(region, backbone)
        crops = [np.ascontiguousarray(a[window])
                 for a in (image, anon.pixels, back.pixels, other.pixels)]
        emb = [identity.embed(c, box) for c in crops]
        dist = [None if emb[0] is None or e is None else identity.distance(emb[0], e)
                for e in emb[1:]]
        inside, window = api._face_window(region, image.shape)
        rows.append({
            "detected": [detected(c) for c in crops[:3]],
            "dist": dist,
            "psnr": psnr(image[window], back.pixels[window], inside),
        })
    n = len(rows)

    def share(values, pred):
        vals = [v for v in values if v is not None]
        return (sum(pred(v) for v in vals) / len(vals)) if vals else float("nan")

    return {
        "set": name, "faces": n,
        "detected original": share([r["detected"][0] for r in rows], bool),
        "detected anonymized": share([r["detected"][1] for r in rows], bool),
        "anonymized >= 0.6": share([r["dist"][0] for r in rows], lambda d: d >= 0.6),
        "recovered < 0.6": share([r["dist"][1] for r in rows], lambda d: d < 0.6),
        "wrong key >= 0.6": share([r["dist"][2] for r in rows], lambda d: d >= 0.6),
        "recovery PSNR median": float(np.median([r["psnr"] for r in rows])),
        "anonymize s/face": (t1 - t0) / n, "recover s/face": (t2 - t1) / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=200)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--method", default="exact-steps", choices=["exact-steps", "plain"],
                    help="inversion for anonymize and recover (plain: half the model calls)")
    ap.add_argument("--photos", nargs="*", default=["group.jpg", "obama.jpg", "biden.jpg",
                                                    "astronaut.jpg"])
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    backbone = api.get_model(args.model)
    print(f"model {backbone.model_id} ({backbone.sha256[:12]}), {args.steps} steps, "
          f"method {args.method}")
    if args.samples:
        samples = model_samples(backbone, args.samples)
        reference = synthetic_faces(args.samples)
        s_rate = np.mean([detected(s) for s in samples])
        r_rate = np.mean([detected(r) for r in reference])
        Image.fromarray(np.concatenate(samples[:8], axis=1)).save("/tmp/faceveil_samples.png")
        print(f"samples detected as faces: {s_rate:.2f} (DCGAN faces: {r_rate:.2f}), "
              f"{args.samples} each; first 8 in /tmp/faceveil_samples.png")
    results = []
    for start in range(0, args.faces, 50):  # mosaics of 50 faces keep memory small
        tiles = synthetic_faces(start + min(50, args.faces - start))[start:]
        image, regions = mosaic(tiles, backbone)
        results.append(measure("synthetic", image, regions, backbone, args.steps,
                               args.method))
    if results:
        merged = {"set": f"synthetic x{args.faces}", "faces": sum(r["faces"] for r in results)}
        for k in results[0]:
            if k not in ("set", "faces"):
                merged[k] = float(np.average([r[k] for r in results],
                                             weights=[r["faces"] for r in results]))
        results = [merged]
    for name in args.photos:
        photo = images.load_image(ROOT / "tests" / "data" / name).pixels
        results.append(measure(name, photo, None, backbone, args.steps, args.method))
    keys_ = [k for k in results[0] if k != "set"]
    print("| set | " + " | ".join(keys_[1:]) + " |")
    print("|---" * len(keys_) + "|")
    for r in results:
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys_[1:]]
        print(f"| {r['set']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
