"""Faces per second: the paper's method as a naive diffusers loop, beside faceveil.

Usage::

    python benchmarks/speed.py [--faces 4] [--steps 50] [--model face64-v1] [--batch 8]

On the same held-out synthetic faces (DCGAN evaluation seeds; ``tests/data/gan_faces.png``
when ``gan-face-generate`` is not installed), in one run, on the CPU and on CUDA when
present:

* **naive**: one face per call, fp32, diffusers ``DDIMInverseScheduler`` to invert
  (keeping the trajectory), the key's signs flipped inside the facial mask, then
  ``DDIMScheduler`` to denoise, re-injecting the face's own trajectory outside the mask
  after every step (Labarbarie et al., the reference code's loop);
* **faceveil** through the public API (``api.anonymize``, everything included: masks,
  keys, compositing, the metadata record), one face per call, with the paper's method
  (``--method plain --context own``) and with the default (exact-steps, masked context);
* the same two through the API with all faces in one call (one mosaic image, so the
  engine batches them ``--batch`` at a time).

It prints faces per second and the ratio to the naive loop, and checks that the naive
loop and faceveil's engine give the same latents on the same face, signs and mask (so
the baseline implements the same method). Model loading is excluded from every timing.
On CUDA the accelerated call (``FACEVEIL_ACCELERATE``, see the README) is timed too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from recovery_methods import mosaic  # noqa: E402

from faceveil import api, keys  # noqa: E402
from faceveil.diffusion.engine import Engine  # noqa: E402
from faceveil.diffusion.models import Backbone, load_model  # noqa: E402
from faceveil.options import Options  # noqa: E402


def held_out_faces(n: int) -> tuple[list[np.ndarray], str]:
    """``n`` aligned 64x64 faces: DCGAN evaluation seeds, or the test strip."""
    try:
        from recovery_methods import synthetic_faces

        return synthetic_faces(n), f"DCGAN evaluation seeds 0..{n - 1}"
    except ImportError:
        strip = np.asarray(Image.open(ROOT / "tests" / "data" / "gan_faces.png").convert("RGB"))
        tiles = [strip[:, i * 64:(i + 1) * 64] for i in range(strip.shape[1] // 64)]
        return [tiles[i % len(tiles)] for i in range(n)], "tests/data/gan_faces.png"


class NaiveLoop:
    """The paper's anonymization, written as a diffusers user would: one face per call."""

    def __init__(self, backbone: Backbone, steps: int) -> None:
        from diffusers import DDIMInverseScheduler, DDIMScheduler

        config = {k: v for k, v in backbone.scheduler_config.items() if not k.startswith("_")}
        config.update(clip_sample=False, thresholding=False, timestep_spacing="leading")
        self.inverse = DDIMInverseScheduler.from_config(config)
        self.forward = DDIMScheduler.from_config(config)
        self.inverse.set_timesteps(steps)
        self.forward.set_timesteps(steps)
        self.backbone = backbone

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, signs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: one face (1, 3, S, S) in [-1, 1]; signs: +-1 latents; mask: (1, 1, s, s)."""
        unet, b = self.backbone.unet, self.backbone
        z = b.encode(x)
        trajectory = [z]
        for t in self.inverse.timesteps:
            out = unet(z, t).sample
            z = self.inverse.step(out, t, z).prev_sample
            trajectory.append(z)
        z = torch.where(mask, z * signs, z)  # flip the signs inside the mask
        for i, t in enumerate(self.forward.timesteps):
            out = unet(z, t).sample
            z = self.forward.step(out, t, z).prev_sample
            z = torch.where(mask, z, trajectory[-(i + 2)])  # re-inject outside the mask
        return z


def face_inputs(backbone: Backbone, tile: np.ndarray, seed: int):
    """The tensors the naive loop needs for one aligned face: image, signs, latent mask."""
    region = api.find_regions(tile, options=Options.of(aligned=True), model=backbone)[0][0]
    x = torch.from_numpy(tile).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    mask = backbone.latent_mask(torch.from_numpy(region.mask > 0)[None, None])
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (1, *backbone.latent_shape), generator=g).float() * 2 - 1
    return x.to(backbone.device), signs.to(backbone.device), mask.to(backbone.device)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_device(device: str, model: str | None, tiles: list[np.ndarray], steps: int,
                 batch: int, accelerate: dict | None = None) -> list[tuple[str, float]]:
    backbone = load_model(model, device=device)
    if accelerate:
        backbone.accelerate(**accelerate)
    key = keys.KeySource.from_bytes(bytes(range(32)))
    n = len(tiles)
    rows = []

    naive = NaiveLoop(backbone, steps)
    inputs = [face_inputs(backbone, t, i) for i, t in enumerate(tiles)]
    naive(*inputs[0])  # warm-up (first-call allocations, CUDA kernels)
    rows.append(("naive diffusers loop, 1 face per call (paper's method)",
                 n / timed(lambda: [naive(*a) for a in inputs])))

    # Same face, signs and mask through faceveil's engine: the baseline must agree.
    x, signs, mask = inputs[0]
    engine = Engine(backbone, steps=steps)
    ours = engine.transform(backbone.encode(x), signs, mask, method="plain", context="own").z0
    gap = float((ours - naive(x, signs, mask)).abs().max())

    for label, options in (("paper's method (plain, own)", dict(method="plain", context="own")),
                           ("default (exact-steps, masked)", {})):
        opts = dict(model=backbone, options=Options.of(aligned=True, steps=steps, **options))
        api.anonymize(tiles[0], key, **opts)  # warm-up
        rows.append((f"faceveil API, 1 face per call, {label}",
                     n / timed(lambda o=opts: [api.anonymize(t, key, **o) for t in tiles])))
        image, regions = mosaic(tiles, backbone)
        opts = dict(model=backbone, regions=regions,
                    options=Options.of(steps=steps, batch_size=batch, **options))
        rows.append((f"faceveil API, {n} faces per call (batch {min(batch, n)}), {label}",
                     n / timed(lambda o=opts, im=image: api.anonymize(im, key, **o))))
    rows.append((f"(check: naive vs engine latents, max abs difference {gap:.2e})", float("nan")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    tiles, source = held_out_faces(args.faces)
    runs = [("cpu", None)]
    if torch.cuda.is_available():
        runs += [("cuda", None), ("cuda", {"cuda_graphs": True})]
    print(f"{args.faces} held-out faces ({source}), {args.steps} DDIM steps, "
          f"model {args.model or 'face64-v1'}, fp32, torch threads {torch.get_num_threads()}")
    for device, accelerate in runs:
        rows = bench_device(device, args.model, tiles, args.steps, args.batch, accelerate)
        name = device + (" + CUDA graphs" if accelerate else "")
        if device == "cuda":
            name += f" ({torch.cuda.get_device_name()})"
        base = rows[0][1]
        print(f"\n{name}")
        print("| pipeline | faces/s | x naive |")
        print("|---|---|---|")
        for label, fps in rows:
            if np.isnan(fps):
                print(f"| {label} | | |")
            else:
                print(f"| {label} | {fps:.3f} | {fps / base:.2f} |")


if __name__ == "__main__":
    main()
