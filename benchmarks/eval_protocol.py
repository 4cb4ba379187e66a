"""The paper's evaluation protocol with ``faceveil.evaluation``, on whatever data is at hand.

    OMP_NUM_THREADS=1 python benchmarks/eval_protocol.py --synthetic 20 --out out/eval

Datasets (each gets its own report folder under ``--out`` and a summary table on stdout;
all tables also go to ``OUT/SUMMARY.md``):

* ``--celebahq DIR``: CelebA-HQ images (already aligned crops, any resolution), evaluated
  with ``aligned=True`` like the paper's CelebA-HQ runs.
* ``--lfw DIR --pairs pairs.txt``: LFW (``DIR/name/name_0001.jpg``) with an LFW-style
  pairs file (the G2Face protocol's or LFW's own ``pairs.txt``): photos, faces found and
  aligned by faceveil, TAR at FAR = 1e-3 on the pairs.
* ``--synthetic N`` (default 100): held-out synthetic faces, 64x64, from the DCGAN of
  ``gan-face-generate`` with evaluation seeds ``0 .. N-1`` (``training/dcgan.py``; the
  built-in model trains on seeds from 1,000,000 on, so these faces are unseen).
* the test photos of ``tests/data`` (portraits and collages; ``--photos`` picks some,
  ``--photos none`` skips them).

The protocol: DDIM 50 steps, JPEG 100/90/75/50, a random and a one-bit wrong key,
3 keys for diversity; FaceNet/ArcFace join dlib when their weights are given. The paper's
own inversion is ``--method plain --context own``; by default faceveil's (near-exact)
defaults are measured. Runs are resumable: run the same command again after an
interruption. FID is not computed.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from faceveil.evaluation import evaluate  # noqa: E402
from faceveil.evaluation.report import summary_table  # noqa: E402

PHOTOS = ["obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.jpg", "group.jpg", "crowd.jpg",
          "hard.jpg"]


def _dcgan():
    spec = importlib.util.spec_from_file_location("dcgan", ROOT / "training" / "dcgan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_faces(folder: Path, count: int, start: int = 0) -> Path:
    """Write DCGAN faces of evaluation seeds ``start .. start+count-1`` as PNGs (kept
    between runs; only missing ones are generated)."""
    folder.mkdir(parents=True, exist_ok=True)
    dcgan = _dcgan()
    wanted = {f"seed_{s:05d}.png" for s in dcgan.evaluation_seeds(count, start)}
    for old in folder.iterdir():  # the folder holds exactly the chosen seeds
        if old.name not in wanted:
            old.unlink()
    seeds = [s for s in dcgan.evaluation_seeds(count, start)
             if not (folder / f"seed_{s:05d}.png").exists()]
    if seeds:
        gen = dcgan.load_generator("cpu")
        x = dcgan.generate_faces(gen, seeds)
        pixels = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        for s, px in zip(seeds, pixels, strict=True):
            Image.fromarray(np.ascontiguousarray(px)).save(folder / f"seed_{s:05d}.png")
    return folder


def test_photos(folder: Path, names: list[str]) -> Path:
    """A folder holding (copies of) the chosen photos of tests/data."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # the folder holds exactly the chosen photos
        if old.name not in names:
            old.unlink()
    for name in names:
        if not (folder / name).exists():
            shutil.copyfile(ROOT / "tests" / "data" / name, folder / name)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "out" / "eval")
    p.add_argument("--synthetic", type=int, default=100, help="DCGAN faces (0: none)")
    p.add_argument("--synthetic-start", type=int, default=0)
    p.add_argument("--photos", default=",".join(PHOTOS),
                   help="comma-separated tests/data photos to use ('none': no photos)")
    p.add_argument("--celebahq", type=Path, help="folder of CelebA-HQ images")
    p.add_argument("--lfw", type=Path, help="LFW root folder (name/name_0001.jpg)")
    p.add_argument("--pairs", type=Path, help="LFW-style pairs file for --lfw")
    p.add_argument("--model", default=None, help="model (default: the built-in one)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--limit", type=int, default=None, help="images per dataset")
    p.add_argument("--jpeg", default="100,90,75,50")
    p.add_argument("--diversity-keys", type=int, default=3)
    p.add_argument("--facenet-weights")
    p.add_argument("--arcface-weights")
    p.add_argument("--method", choices=["exact-steps", "plain"], default=None,
                   help="inversion (default: faceveil's); the paper's: --method plain "
                        "--context own")
    p.add_argument("--context", choices=["masked", "own"], default=None)
    p.add_argument("--lossless", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    if args.lfw and not args.pairs:
        p.error("--lfw needs --pairs (LFW's pairs.txt or the G2Face pairs)")

    runs: list[tuple[str, Path, dict]] = []
    if args.celebahq:
        runs.append(("CelebA-HQ (aligned)", args.celebahq, {"aligned": True}))
    if args.lfw:
        runs.append(("LFW (photos, pairs)", args.lfw, {"pairs": args.pairs}))
    if args.synthetic > 0:
        folder = synthetic_faces(args.out / "synthetic-data", args.synthetic,
                                 args.synthetic_start)
        runs.append((f"synthetic DCGAN faces, seeds {args.synthetic_start}.."
                     f"{args.synthetic_start + args.synthetic - 1} (aligned 64x64)", folder,
                     {"aligned": True}))
    photos = [n for n in args.photos.split(",") if n.strip() and n.strip() != "none"]
    if photos:
        runs.append(("tests/data photos", test_photos(args.out / "photos-data", photos), {}))

    jpeg = tuple(int(q) for q in args.jpeg.split(",") if q.strip())
    tables = []
    for label, data, extra in runs:
        slug = label.split(" ")[0].lower().replace("/", "-")
        report = args.out / f"report-{slug}"
        m = evaluate(data, report, model=args.model, steps=args.steps, limit=args.limit,
                     jpeg=jpeg, diversity_keys=args.diversity_keys,
                     recognizers=["dlib", "facenet", "arcface"],
                     facenet_weights=args.facenet_weights, arcface_weights=args.arcface_weights,
                     device=args.device, progress=not args.quiet, method=args.method,
                     context=args.context, lossless=args.lossless, **extra)
        sampler = m.get("sampler") or {}
        head = (f"## {label}\n\nmodel `{m['model']['id']}`, {m['steps']} steps, inversion "
                f"{sampler.get('inversion', '?')}, recovery {sampler.get('default_recovery', '?')}"
                f", {m['time']['device']}; report: `{report / 'report.md'}`\n\n")
        tables.append(head + summary_table(m))
        print(tables[-1], flush=True)
    (args.out / "SUMMARY.md").write_text("\n".join(tables))


if __name__ == "__main__":
    main()
