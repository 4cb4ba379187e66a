"""Where the time of one face goes on CPU, and what each setting of the model call saves.

Usage::

    python benchmarks/cpu_breakdown.py [--repeat 3] [--calls 30] [--compile]

Part 1 runs, in fresh processes (as the command line does), the phases of anonymizing
one aligned face and of anonymizing the 6-face ``tests/data/group.jpg``: interpreter
start, ``import torch``, the diffusers import the model loader needs, loading the
built-in model (``from_pretrained`` and the weights hash), face detection, the model
calls of the engine and everything else; the median over ``--repeat`` processes.

Part 2 times one model call (batch 1 and batch 6, the built-in model) under each
setting, every setting in its own process so that OpenMP's wait policy (read when torch
loads) takes effect: threads 1 or 2, OpenMP wait policy active (libgomp's default) or
passive (what the command line sets), ``no_grad`` or ``inference_mode``, channels_last,
and with ``--compile`` torch.compile (its compile time beside the calls it would save).
A baseline (threads 2, active, no_grad) is rerun between settings, because this machine
is shared: compare each row with the baseline measured next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP = ROOT / "tests" / "data" / "group.jpg"
FACE = ROOT / "tests" / "data" / "gan_faces.png"  # the first 64x64 face of the strip

PHASES = r"""
import json, os, sys, time
t = {"start": time.perf_counter()}
T0 = float(sys.argv[1])
import torch
t["import torch"] = time.perf_counter()
from diffusers import UNet2DModel  # noqa: F401  (what models.load_folder imports)
t["import diffusers"] = time.perf_counter()
import numpy as np
from PIL import Image
from faceveil import api, keys
from faceveil.diffusion.models import load_folder, locate
from faceveil.options import Options
t["import faceveil"] = time.perf_counter()
import faceveil.diffusion.models as fm
real_hash = fm.weights_hash
spent = {"hash": 0.0, "predict": 0.0, "calls": 0}
def timed_hash(*a):
    s = time.perf_counter(); h = real_hash(*a); spent["hash"] += time.perf_counter() - s
    return h
fm.weights_hash = timed_hash
backbone = api.get_model(None, "cpu")
t["load model"] = time.perf_counter()
real_predict = backbone.predict
def timed_predict(z, step):
    s = time.perf_counter(); out = real_predict(z, step)
    spent["predict"] += time.perf_counter() - s; spent["calls"] += 1
    return out
backbone.predict = timed_predict
key = keys.KeySource.from_bytes(bytes(32))
mode = sys.argv[2]
if mode == "aligned":
    pixels = np.asarray(Image.open(sys.argv[3]).convert("RGB"))[:64, :64].copy()
    regions, _ = api.find_regions(pixels, options=Options.of(aligned=True), model=backbone)
else:
    pixels = np.asarray(Image.open(sys.argv[3]).convert("RGB"))
    regions, _ = api.find_regions(pixels, model=backbone)
t["find faces"] = time.perf_counter()
result = api.anonymize(pixels, key, model=backbone, regions=regions)
png = result.png_bytes()
t["anonymize"] = time.perf_counter()
out = {"interpreter": t["start"] - T0, "faces": len(regions)}
names = list(t)
for a, b in zip(names, names[1:]):
    out[b] = t[b] - t[a]
out["weights hash"] = spent["hash"]
out["load model"] -= spent["hash"]
out["model calls"] = spent["predict"]
out["calls"] = spent["calls"]
out["anonymize"] -= spent["predict"]
out["total"] = t["anonymize"] - T0
print(json.dumps(out))
"""

CALL = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
import torch
torch.set_num_threads(cfg["threads"])
from faceveil.diffusion.models import load_model
b = load_model("face64-v1")
if cfg.get("channels_last"):
    b.unet.to(memory_format=torch.channels_last)
ctx = torch.inference_mode if cfg.get("inference_mode") else torch.no_grad
res = {}
compile_s = 0.0
if cfg.get("compile"):
    s = time.perf_counter()
    b.unet = torch.compile(b.unet, dynamic=False)
    with ctx():
        b.predict(torch.randn(1, *b.latent_shape), 500)
        b.predict(torch.randn(6, *b.latent_shape), 500)
    compile_s = time.perf_counter() - s
for batch in (1, 6):
    z = torch.randn(batch, *b.latent_shape)
    if cfg.get("channels_last"):
        z = z.contiguous(memory_format=torch.channels_last)
    times = []
    with ctx():
        b.predict(z, 500)
        for _ in range(cfg["calls"]):
            s = time.perf_counter(); b.predict(z, 500); times.append(time.perf_counter() - s)
    res[f"b{batch}"] = sorted(times)[len(times) // 2]
res["compile_s"] = compile_s
print(json.dumps(res))
"""


def run_phases(mode: str, image: Path) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", PHASES, repr(time.perf_counter()), mode,
                          str(image)], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_call(cfg: dict) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["OMP_WAIT_POLICY"] = cfg["wait"]
    out = subprocess.run([sys.executable, "-c", CALL, json.dumps(cfg)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30, help="model calls timed per setting")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--part", choices=["all", "phases", "calls"], default="all")
    args = ap.parse_args()

    if args.part in ("all", "phases"):
        for mode, image in (("aligned", FACE), ("photo", GROUP)):
            runs = [run_phases(mode, image) for _ in range(args.repeat)]
            keys_ = [k for k in runs[0] if k not in ("faces", "calls")]
            print(f"\n{'one aligned face' if mode == 'aligned' else 'group.jpg'} "
                  f"({runs[0]['faces']} face(s), {runs[0]['calls']} model calls, exact-steps, "
                  f"50 steps; median of {args.repeat} processes, OMP_WAIT_POLICY=PASSIVE)")
            print("| phase | median s | runs |")
            print("|---|---|---|")
            for k in keys_:
                vals = [r[k] for r in runs]
                print(f"| {k} | {statistics.median(vals):.2f} | "
                      f"{', '.join(f'{v:.2f}' for v in vals)} |")
            per_call = statistics.median(r["model calls"] / r["calls"] for r in runs)
            print(f"(model call: {per_call * 1000:.1f} ms on average)")

    if args.part in ("all", "calls"):
        base = {"threads": 2, "wait": "ACTIVE", "calls": args.calls}
        settings = [
            ("threads 1", {"threads": 1}),
            ("OMP_WAIT_POLICY=PASSIVE", {"wait": "PASSIVE"}),
            ("PASSIVE, threads 1", {"wait": "PASSIVE", "threads": 1}),
            ("PASSIVE, inference_mode", {"wait": "PASSIVE", "inference_mode": True}),
            ("PASSIVE, inference_mode, channels_last",
             {"wait": "PASSIVE", "inference_mode": True, "channels_last": True}),
        ]
        if args.compile:
            settings.append(("PASSIVE, inference_mode, torch.compile",
                             {"wait": "PASSIVE", "inference_mode": True, "compile": True}))
        print("\none model call, built-in model (median ms; baseline = threads 2, OpenMP "
              "active wait, no_grad, rerun beside each setting)")
        print("| setting | batch 1 ms | baseline batch 1 ms | batch 6 ms | baseline batch 6 ms "
              "| compile s |")
        print("|---|---|---|---|---|---|")
        for name, change in settings:
            b = run_call(base)
            r = run_call({**base, **change})
            print(f"| {name} | {r['b1'] * 1000:.1f} | {b['b1'] * 1000:.1f} | "
                  f"{r['b6'] * 1000:.1f} | {b['b6'] * 1000:.1f} | "
                  f"{r['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
