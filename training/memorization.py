"""Memorization check: do a model's samples sit closer to its training faces than
unseen real faces do?

For ``--samples`` faces sampled from a model (deterministic DDIM, fixed seeds), the
nearest training face of the real-face cache (``celeba.py``; the held-out tail is not
searched) is found by dlib's 128-D face descriptor (``faceveil.identity.embed``, the
L2 distance; the same person is under 0.6) and by pixels (RMS difference over the 64 px
crop in 0..255, training faces flipped too, as training flips them). The same search
is done for two sets of real faces that were never trained on, aligned the same way:

* the FRL portraits (``../shared/data/frl``, aligned by ``celeba.align_photo``),
* the cache's held-out CelebA faces (the same distribution as the training faces; some
  show people who also appear in the training split, so their distances are lower).

Every face, sample or photo, is described in the same box: where the model's framing
puts dlib's detector box (``faces.framing_box``), so no detector decides differently
for a blurry sample and a sharp photo.

The model passes when the median nearest-training distance of its samples is not
smaller than that of the FRL faces (and the closest pairs, written side by side to
``OUT/closest_by_embedding.png`` and ``OUT/closest_by_pixels.png``, show no copy of a
training face: look at them). ``OUT/report.json`` holds the numbers::

    python training/memorization.py --model /work/train-v3/export \\
        --real /work/train-v3/celeba64.npy --frl ../shared/data/frl --out /work/train-v3/mem

``--checkpoint`` takes a training checkpoint (its EMA weights) instead of ``--model``.
The training faces' descriptors are cached beside the cache (``*.emb.npy``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import celeba  # noqa: E402
import train  # noqa: E402

from faceveil import faces, identity  # noqa: E402

#: Starting noise of the samples (apart from the grids' 2024).
SAMPLE_SEED = 777


def load_unet(model: Path | None, checkpoint: Path | None
              ) -> tuple[UNet2DModel, DDPMScheduler, faces.Framing | None]:
    """The model to check: an exported folder (with its framing) or a checkpoint's EMA."""
    if model is not None:
        info = train.load_exported(model)
        unet = UNet2DModel(**info["unet_config"])
        unet.load_state_dict(info["unet"])
        return (unet.eval(), DDPMScheduler.from_config(info["scheduler_config"]),
                celeba.load_framing(model))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    unet = UNet2DModel(**state["unet_config"])
    unet.load_state_dict(state["ema"])
    return unet.eval(), DDPMScheduler.from_config(state["scheduler_config"]), None


def sample_faces(unet: UNet2DModel, scheduler: DDPMScheduler, count: int, steps: int,
                 batch: int = 64) -> np.ndarray:
    """``count`` samples as ``(count, 64, 64, 3)`` uint8 (DDIM, eta 0, fixed noise)."""
    noise = train.sample_noise(count, SAMPLE_SEED)
    out = []
    for i in range(0, count, batch):
        x = train.ddim_sample(unet, scheduler, noise[i:i + batch], steps)
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                   .permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def embeddings(crops: np.ndarray, framing: faces.Framing) -> np.ndarray:
    """dlib descriptors ``(N, 128)`` of aligned crops, each in the framing's detector box."""
    box = faces.framing_box(framing, crops.shape[2], crops.shape[1])
    return np.stack([identity.embed(np.ascontiguousarray(c), box) for c in crops])


def nearest(query: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``query``, the L2 distance to its nearest row of ``bank`` and that
    row's index (searched in float32, in chunks; the distance recomputed exactly)."""
    b = bank.reshape(len(bank), -1).astype(np.float32)
    bn = (b * b).sum(1)
    dist, index = [], []
    for i in range(0, len(query), 64):
        q = query[i:i + 64].reshape(-1, b.shape[1]).astype(np.float32)
        d2 = (q * q).sum(1)[:, None] + bn[None, :] - 2.0 * q @ b.T
        j = d2.argmin(1)
        dist.append(np.linalg.norm(q.astype(np.float64) - b[j], axis=1))
        index.append(j)
    return np.concatenate(dist), np.concatenate(index)


def pixel_nearest(query: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest training face by RMS pixel difference (0..255), flips included; the index
    is ``k`` for face ``k`` and ``len(bank) + k`` for its mirror image."""
    both = np.concatenate([bank, bank[:, :, ::-1]])
    d, j = nearest(query, both)
    return d / np.sqrt(np.prod(query.shape[1:])), j


def align_frl(folder: Path, framing: faces.Framing) -> np.ndarray:
    """The FRL portraits (``*.jpg``, sorted), aligned like the training faces."""
    crops = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as im:
            crop, _ = celeba.align_photo(np.asarray(im.convert("RGB")), framing, upsample=1)
        if crop is not None:
            crops.append(crop)
    return np.stack(crops)


def stats(d: np.ndarray) -> dict:
    """Median, quartiles and minimum of distances, and the share under dlib's 0.6 and 0.5."""
    return {"n": int(len(d)), "median": float(np.median(d)), "q25": float(np.quantile(d, .25)),
            "q75": float(np.quantile(d, .75)), "min": float(d.min()),
            "under_0.6": float(np.mean(d < 0.6)), "under_0.5": float(np.mean(d < 0.5))}


def pairs_sheet(a: np.ndarray, b: np.ndarray, labels: list[str], path: Path,
                scale: int = 2) -> None:
    """Pairs ``a[i] | b[i]`` side by side, four pairs a row, each captioned (PNG)."""
    from PIL import ImageDraw

    s = a.shape[1] * scale
    cols = 4
    rows = -(-len(a) // cols)
    sheet = Image.new("RGB", (cols * (2 * s + 8), rows * (s + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (x, y, label) in enumerate(zip(a, b, labels)):
        r, c = divmod(i, cols)
        ox, oy = c * (2 * s + 8), r * (s + 14)
        for k, img in enumerate((x, y)):
            sheet.paste(Image.fromarray(img).resize((s, s), Image.Resampling.NEAREST),
                        (ox + k * s, oy))
        draw.text((ox + 2, oy + s), label, fill="black")
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit 0 when it passes, 1 when it fails."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="exported model folder")
    src.add_argument("--checkpoint", type=Path, help="training checkpoint (EMA weights)")
    p.add_argument("--framing", type=Path, default=Path("src/faceveil/weights/face64-v2"),
                   help="model folder whose framing a checkpoint uses")
    p.add_argument("--real", type=Path, required=True, help="the training cache (.npy)")
    p.add_argument("--frl", type=Path, required=True, help="FRL portraits folder")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    unet, scheduler, framing = load_unet(args.model, args.checkpoint)
    framing = framing or celeba.load_framing(args.framing)
    crops = celeba.load_cache(args.real)
    train_idx, held_idx = celeba.split(len(crops))
    emb_path = args.real.with_suffix(".emb.npy")
    if emb_path.exists() and len(np.load(emb_path)) == len(crops):
        emb_all = np.load(emb_path)
    else:
        emb_all = embeddings(crops, framing)
        np.save(emb_path, emb_all)
    train_faces, train_emb = crops[train_idx.start:train_idx.stop], emb_all[:train_idx.stop]

    sets = {"samples": sample_faces(unet, scheduler, args.samples, args.steps),
            "frl": align_frl(args.frl, framing),
            "celeba_heldout": crops[held_idx.start:held_idx.stop]}
    report: dict = {"model": str(args.model or args.checkpoint), "training_faces": len(train_idx),
                    "samples": args.samples, "ddim_steps": args.steps}
    found = {}
    for name, imgs in sets.items():
        emb = emb_all[held_idx.start:] if name == "celeba_heldout" else embeddings(imgs, framing)
        d_emb, j_emb = nearest(emb, train_emb)
        d_px, j_px = pixel_nearest(imgs, train_faces)
        report[name] = {"embedding": stats(d_emb), "pixels_rms": {
            k: v for k, v in stats(d_px).items() if not k.startswith("under")}}
        found[name] = (imgs, d_emb, j_emb, d_px, j_px)

    imgs, d_emb, j_emb, d_px, j_px = found["samples"]
    flipped = np.concatenate([train_faces, train_faces[:, :, ::-1]])
    order = np.argsort(d_emb)[:16]
    pairs_sheet(imgs[order], train_faces[j_emb[order]], [f"{d_emb[i]:.3f}" for i in order],
                args.out / "closest_by_embedding.png")
    order = np.argsort(d_px)[:16]
    pairs_sheet(imgs[order], flipped[j_px[order]], [f"{d_px[i]:.1f}" for i in order],
                args.out / "closest_by_pixels.png")
    passed = (report["samples"]["embedding"]["median"]
              >= report["frl"]["embedding"]["median"])
    report["passed"] = bool(passed)
    report["rule"] = "median nearest-training dlib distance: samples >= FRL (unseen real faces)"
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    for name in sets:
        e, q = report[name]["embedding"], report[name]["pixels_rms"]
        print(f"{name:15s} dlib nearest: median {e['median']:.3f} (q25 {e['q25']:.3f}, min "
              f"{e['min']:.3f}, <0.6 {e['under_0.6']:.1%}, <0.5 {e['under_0.5']:.1%}) | pixels "
              f"RMS nearest: median {q['median']:.1f} min {q['min']:.1f}")
    print("PASS" if passed else "FAIL", report["rule"])
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
