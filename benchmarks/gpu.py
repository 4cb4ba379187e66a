"""Faces per second of the built-in model, or of the full-size latent model, on a GPU, per
mode, precision and CUDA graphs, with a recovery check beside each; prepared to run in
one go (about 5 minutes on an H100 or H200 for the built-in model), and tested on a CPU
with tiny batches.

Usage::

    python benchmarks/gpu.py                       # CUDA: batches 1, 64, 512
    python benchmarks/gpu.py --model fullsize      # CUDA: the 256 px LDM, batches 1, 16, 64
    python benchmarks/gpu.py --device cpu --batches 1,2 --check-faces 2   # a CPU test
    python benchmarks/gpu.py --model fullsize --device cpu --batches 1 --check-faces 1 \
        --steps 2 --precisions fp32 --graphs off                          # a CPU test

``--model fullsize`` is a random-weight model with the exact architecture of
CompVis/ldm-celebahq-256 (``tests/fullsize.py``; 274M + 55M parameters, 256 px faces
through a VQ autoencoder), written once under ``--cache``: its speed is a real
checkpoint's, its faces are noise. The base faces are then the same 10 faces enlarged to
256 px.

For each inversion mode (the sealed default: fresh keyed noise, DPM-Solver++(2M) SDE over
12 trailing steps with the outside noised forward; the diffusion mode (``--no-lossless``):
exact-steps, 50 leading steps, the keyed mixing) x precision (fp32;
TF32 convolutions and matrix products; bf16 autocast of the network call, latents kept
in fp32) x CUDA graphs (on, off; :mod:`faceveil.diffusion.accelerate`), it times the
engine making ``batch`` new aligned faces from their crops in one call of the pipeline's
generator (keyed noise, encode, the chain, decode; the CPU work of pasting, harmonizing
and sealing is left out, it is the same for every setting) and prints faces per second.
Beside each row, a recovery check on ``--check-faces`` faces through the public API:

* sealed mode: each file recovered from its sealed originals, bit-exact (``yes n/n``:
  no model runs back, so no precision can change it);
* diffusion mode: the anonymized faces' PSNR against fp32 without graphs, the recovery's
  PSNR against the original faces with the same setting, and with the file recovered
  by plain fp32 (a file made on a GPU in bf16, recovered elsewhere).

Targets (issue 21): at least 10 faces/s at batch 1 and 600 faces/s batched. Rows are
skipped (and said so) once ``--budget`` seconds have passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from faceveil import api, faces, keys  # noqa: E402
from faceveil.diffusion.accelerate import GraphedCall, Precision  # noqa: E402
from faceveil.diffusion.engine import Engine  # noqa: E402
from faceveil.diffusion.models import load_model  # noqa: E402
from faceveil.options import DIFFUSION_SAMPLING, SEALED_SAMPLING, FixedKeys, Options  # noqa: E402
from faceveil.pipeline import generate as gen  # noqa: E402
from tests import fullsize  # noqa: E402

DATA = ROOT / "tests" / "data"
KEY = keys.KeySource.from_bytes(bytes(range(32)))
# name: (sampling, sealed originals?, what the row's mode is)
MODES = {"sealed": (SEALED_SAMPLING, True, f"sealed (fresh noise, {SEALED_SAMPLING.solver}, "
                                            f"{SEALED_SAMPLING.steps} trailing, eta 1)"),
         "diffusion": (DIFFUSION_SAMPLING, False, "diffusion (exact-steps, 50 leading)")}
PRECISIONS = ("fp32", "tf32", "bf16")


class Autocast:
    """A network call in bf16 (autocast), its output back in fp32 for the engine."""

    def __init__(self, call, device_type: str) -> None:
        self.call, self.device_type = call, device_type

    def __call__(self, z: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.call(z, timestep).float()


def configure(backbone, precision: str, graphs: bool):
    """Install the network call of this setting as the backbone's fast call."""
    call = Precision(backbone.network_call, precision == "tf32")
    if precision == "bf16":
        call = Autocast(call, backbone.device.type)
    backbone.fast_call = GraphedCall(call) if graphs else call
    return backbone


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def base_faces(backbone) -> tuple[list[np.ndarray], list[faces.FaceRegion]]:
    """The 10 aligned faces of gan_faces.png (enlarged to the model's size) and their
    regions (masks from dlib)."""
    strip = Image.open(DATA / "gan_faces.png").convert("RGB")
    size = backbone.image_size
    pixels = [np.asarray(strip.crop((64 * i, 0, 64 * i + 64, 64)).resize(
        (size, size), Image.BICUBIC)) for i in range(10)]
    framing = gen.framing(backbone)
    return pixels, [faces.aligned_region(p, framing=framing, crop_size=backbone.image_size)
                    for p in pixels]


def workload(backbone, n: int, pixels, regions, rng):
    """``n`` distinct crops (the base faces, jittered) with their face data."""
    secret = KEY.resolve({"type": "file", "salt": bytes(16)})
    crops, data = [], []
    for i in range(n):
        j = i % len(pixels)
        crop = np.clip(pixels[j].astype(np.float32) + rng.normal(0, 2, pixels[j].shape), 0, 255)
        crops.append(crop.astype(np.float32))
        data.append(gen.face_data(backbone, regions[j], i.to_bytes(16, "big"), secret))
    return crops, data


def throughput(backbone, sampling, hide: bool, crops, data, repeat: int) -> float:
    """Faces per second of the generator on these crops, in one batch."""
    def once() -> float:
        engine = Engine(backbone, steps=sampling.steps, spacing=sampling.spacing)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen.generate(backbone, engine, data, crops, hide=hide, batch_size=len(crops),
                     sampling=sampling)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()  # warm-up: kernels chosen, graphs captured
    return len(crops) / statistics.median(once() for _ in range(repeat))


def check(backbone, exact, sealed: bool, pixels, reference, steps: int | None = None
          ) -> tuple[str, list[np.ndarray]]:
    """The recovery check of one setting on the base faces (see the module docstring)."""
    extra = {"steps": steps} if steps else {}
    options = Options.of(aligned=True, lossless=sealed, **extra)
    made, exact_back, back = [], [], []
    for i, p in enumerate(pixels):
        fixed = FixedKeys(salt=bytes(16), nonces=(bytes([i + 1]) * 16,))
        result = api.anonymize(p, KEY, options=options.replace(device=str(backbone.device)),
                               model=backbone, fixed=fixed)
        made.append(result.pixels)
        back.append(api.recover(result.png_bytes(), KEY, model=backbone).pixels)
        if not sealed:
            exact_back.append(api.recover(result.png_bytes(), KEY, model=exact).pixels)
    if sealed:
        same = sum(np.array_equal(b, p) for b, p in zip(back, pixels, strict=True))
        return f"sealed recovery bit-exact: {'yes' if same == len(pixels) else 'NO'} " \
               f"{same}/{len(pixels)}", made
    if reference is None:
        reference = made
    anon = statistics.median(psnr(m, r) for m, r in zip(made, reference, strict=True))
    rec = statistics.median(psnr(b, p) for b, p in zip(back, pixels, strict=True))
    cross = statistics.median(psnr(b, p) for b, p in zip(exact_back, pixels, strict=True))
    return (f"anonymized vs fp32 {anon:.1f} dB; recovery {rec:.1f} dB; recovered by fp32 "
            f"{cross:.1f} dB", made)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="face64-v2",
                    help="a model to load, or fullsize: the random-weight 256 px LDM")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/faceveil-fullsize"),
                    help="where --model fullsize is written once")
    ap.add_argument("--batches", default=None,
                    help="comma-separated batch sizes [1,64,512; fullsize: 1,16,64]")
    ap.add_argument("--steps", type=int, default=None, help="override every mode's steps "
                    "(for a quick CPU test)")
    ap.add_argument("--graphs", default="off,on", help="CUDA graphs settings: off,on")
    ap.add_argument("--check-faces", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per cell (median)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: "
                    + ", ".join(MODES))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--budget", type=float, default=290.0, help="seconds for all rows")
    args = ap.parse_args()
    start = time.perf_counter()
    spec = args.model
    if spec == "fullsize":
        spec = args.cache / "snapshot"
        if not (spec / "model_index.json").exists():
            fullsize.write_snapshot(spec)
        spec = str(spec)
    batches = [int(b) for b in (args.batches or ("1,16,64" if args.model == "fullsize"
                                                 else "1,64,512")).split(",")]
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu and tiny --batches to test")
    backbone = load_model(spec, device=device)
    exact = load_model(spec, device=device)  # fp32, eager: the reference
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(f"faceveil benchmarks/gpu.py on {name}, torch {torch.__version__}; model "
          f"{args.model} ({backbone.image_size} px); batches {batches}; engine only (keyed "
          "noise, chain, decode)")
    pixels, regions = base_faces(backbone)
    check_pixels = pixels[: args.check_faces]
    rng = np.random.default_rng(0)
    work = {b: workload(backbone, b, pixels, regions, rng) for b in batches}
    print("| mode | precision | CUDA graphs | " + " | ".join(f"batch {b} faces/s" for b in batches)
          + " | recovery check |")
    print("|---|---|---|" + "---|" * len(batches) + "---|", flush=True)
    for mode in args.modes.split(","):
        sampling, sealed, label = MODES[mode]
        if args.steps:
            sampling = dataclasses.replace(sampling, steps=args.steps)
        reference = None
        for precision in args.precisions.split(","):
            for graphs in [g == "on" for g in args.graphs.split(",")]:
                if time.perf_counter() - start > args.budget:
                    print(f"| {label} | {precision} | {'on' if graphs else 'off'} | "
                          + " | ".join("skipped" for _ in batches) + " | over --budget |")
                    continue
                configure(backbone, precision, graphs)
                rates = [throughput(backbone, sampling, not sealed, *work[b], args.repeat)
                         for b in batches]
                said, made = check(backbone, exact, sealed, check_pixels, reference,
                                   args.steps)
                if precision == "fp32" and not graphs:
                    reference = made
                print(f"| {label} | {precision} | {'on' if graphs else 'off'} | "
                      + " | ".join(f"{r:.3g}" for r in rates) + f" | {said} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s in all. Targets: 10 faces/s at batch 1, "
          "600 faces/s batched.")


if __name__ == "__main__":
    main()
