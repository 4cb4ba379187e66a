"""One call of the full-size latent model on a CPU under each numeric setting: float32,
bfloat16 autocast (with and without autocast's cache of cast weights), channels-last.

Usage::

    python benchmarks/fullsize_calls.py [--cache /tmp/faceveil-fullsize] [--calls 3]

Each variant runs in its own process (peak memory is the process's), on the random-weight
model of ``CompVis/ldm-celebahq-256``'s exact architecture (``tests/fullsize.py``, written
once under ``--cache``): the UNet at batch 1 (64x64x3 latents), and the VQ autoencoder's
encode and decode of one 256 px crop. Printed: the best seconds of ``--calls`` calls after
a warm-up, the output's relative L2 difference from float32, and the peak resident memory.
What faceveil uses is ``Backbone.fast_numerics``: bfloat16 autocast without the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests import fullsize  # noqa: E402

VARIANTS = ("fp32", "fp32-channels-last", "bf16-cache", "bf16", "bf16-channels-last")

CALL = r"""
import contextlib, json, resource, sys, time
import torch
from diffusers import UNet2DModel, VQModel
import diffusers
diffusers.utils.logging.set_verbosity_error()
snapshot, variant, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
kw = dict(low_cpu_mem_usage=False, use_safetensors=False)
unet = UNet2DModel.from_pretrained(snapshot, subfolder="unet", **kw).eval()
vq = VQModel.from_pretrained(snapshot, subfolder="vqvae", **kw).eval()
gen = torch.Generator().manual_seed(0)
z = torch.randn(1, 3, 64, 64, generator=gen)
x = torch.rand(1, 3, 256, 256, generator=gen) * 2 - 1
if "channels-last" in variant:
    unet.to(memory_format=torch.channels_last)
    z = z.contiguous(memory_format=torch.channels_last)
def numerics():
    if not variant.startswith("bf16"):
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=variant == "bf16-cache")
def best(fn):
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter(); out = fn(); times.append(time.perf_counter() - start)
    return min(times), out.float()
with torch.no_grad():
    def unet_call():
        with numerics():
            return unet(z, torch.tensor([500])).sample
    def encode():
        with numerics():
            return vq.encode(x).latents
    latents = vq.encode(x).latents
    def decode():
        with numerics():
            return vq.decode(latents).sample
    res = {}
    for name, fn in (("unet", unet_call), ("encode", encode), ("decode", decode)):
        res[name], out = best(fn)
        torch.save(out, sys.argv[5] + f".{name}.pt")
res["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(res))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/faceveil-fullsize"))
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    hub = a.cache / "hf" / "hub"
    snapshot = hub / ("models--" + fullsize.REPO.replace("/", "--")) / "snapshots" / fullsize.COMMIT
    if not snapshot.exists():
        print(f"writing the random-weight model under {hub} ...", flush=True)
        fullsize.write_hub_cache(hub)
    import torch

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    print(f"{a.threads} threads, best of {a.calls} calls; load average {os.getloadavg()[0]:.1f}")
    print("| variant | UNet call s | VQ encode s | VQ decode s | rel. L2 vs fp32 (UNet) | "
          "peak RSS GB |\n|---|---|---|---|---|---|")
    reference = None
    for variant in VARIANTS:
        prefix = str(a.cache / f"calls-{variant}")
        out = subprocess.run([sys.executable, "-c", CALL, str(snapshot), variant,
                              str(a.calls), str(a.threads), prefix], env=env, check=True,
                             capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        unet = torch.load(prefix + ".unet.pt")
        reference = unet if reference is None else reference
        diff = float((unet - reference).norm() / reference.norm())
        print(f"| {variant} | {r['unet']:.3f} | {r['encode']:.2f} | {r['decode']:.2f} | "
              f"{diff:.4f} | {r['rss_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
