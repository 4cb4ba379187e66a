"""How many model calls a face costs in each mode, and what each way of making a call
cheaper saves on this CPU, with the quality cost next to it, in one run.

Usage::

    python benchmarks/model_calls.py [--repeat 5] [--calls 20] [--part all|modes|calls]

Part ``modes``: the built-in model on one aligned face (the first of
``tests/data/gan_faces.png``) and on the six faces of ``tests/data/group.jpg`` (their
regions found once, so detection is left out), through the public API with fixed keys:
network calls, calls per face, model seconds (median of ``--repeat``), and the result
beside the torch fp32 result of the same settings: bit-identical, or its PSNR. Modes:
the sealed default (fresh noise, 25 trailing steps) on onnxruntime and on torch, the
same at 50 steps and with leading spacing, ``--no-lossless`` (exact-steps, 50 leading)
and ``--deniable``; the group with batch sizes 1 and 8.

Part ``calls``: one network call of the built-in model at batch 1, 2, 6, 8, 16 and 32
(median ms of ``--calls``, per call and per face): torch fp32 with 1 and 2 threads,
torch bf16 (CPU autocast), onnxruntime fp32 with 1 and 2 threads, onnxruntime int8
(dynamic quantization of the weights); each with its largest difference from torch
fp32 at batch 6, and the PSNR of a whole sealed face made with it against torch fp32.
Then what reusing the outside context would save: the share of calls it takes.
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
from faceveil import api, keys  # noqa: E402
from faceveil.diffusion import backends  # noqa: E402
from faceveil.diffusion import onnx as fonnx  # noqa: E402
from faceveil.diffusion.hub import locate  # noqa: E402
from faceveil.options import FixedKeys, Options  # noqa: E402

DATA = ROOT / "tests" / "data"
KEY = keys.KeySource.from_bytes(bytes(32))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def compare(a: np.ndarray, b: np.ndarray) -> str:
    return "bit-identical" if np.array_equal(a, b) else f"PSNR {psnr(a, b):.1f} dB"


def fixed(n: int) -> FixedKeys:
    return FixedKeys(salt=bytes(16), nonces=tuple(bytes([i]) * 16 for i in range(n)))


def run(pixels, regions, options, model, repeat) -> tuple[np.ndarray, api.Timings, float]:
    """One image through api.anonymize ``repeat`` times: its pixels, the timings of the
    last run, and the median model seconds."""
    seconds, timings, out = [], None, None
    for _ in range(repeat):
        timings = api.Timings()
        out = api.anonymize(pixels, KEY, options=options, model=model, regions=regions,
                            fixed=fixed(len(regions)), timings=timings).pixels
        seconds.append(timings.seconds["model"])
    return out, timings, statistics.median(seconds)


def modes(args) -> None:
    face = np.ascontiguousarray(np.asarray(Image.open(DATA / "gan_faces.png").convert("RGB"))
                                [:, :64])
    group = np.asarray(Image.open(DATA / "group.jpg").convert("RGB"))
    fast = backends.get_model(None, "cpu", backend="onnx")
    exact = backends.get_model(None, "cpu")
    images = {"one aligned face": (face, api.find_regions(
                  face, options=Options.of(aligned=True), model=exact)[0]),
              "group.jpg (6 faces)": (group, api.find_regions(group, model=exact)[0])}
    cases = [
        ("sealed default (25 trailing, fresh, eta 1, harmonize)", {}),
        ("sealed, 50 trailing steps", {"steps": 50}),
        ("sealed, 25 leading steps", {"spacing": "leading"}),
        ("--no-lossless (exact-steps, 50 leading)", {"lossless": False}),
        ("--deniable (exact-steps, 50 leading)", {"deniable": True}),
    ]
    print(f"\nmodel calls per mode (built-in face64-v2, CPU, median model seconds of "
          f"{args.repeat}; the result beside torch fp32 of the same settings)")
    print("| image | mode | runtime | batch | network calls | calls per face | model s | "
          "vs torch fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for image, (pixels, regions) in images.items():
        for name, change in cases:
            batches = [8, 1] if image.startswith("group") and not change else [8]
            for batch in batches:
                options = Options.of(**change, batch_size=batch)
                want, tt, ts = run(pixels, regions, options.replace(backend="torch"), exact,
                                   args.repeat)
                rows = [("torch fp32", want, tt, ts)]
                if not options.sampler.diffusion_recoverable:
                    got, to, so = run(pixels, regions, options, fast, args.repeat)
                    rows.insert(0, ("onnxruntime fp32", got, to, so))
                for runtime, out, t, s in rows:
                    print(f"| {image} | {name} | {runtime} | {batch} | {t.calls} | "
                          f"{t.calls / t.faces:.1f} | {s:.2f} | {compare(out, want)} |",
                          flush=True)


class Autocast:
    """The torch backbone with its network call in bf16 (CPU autocast)."""

    def __init__(self, backbone) -> None:
        self.backbone = backbone

    def __getattr__(self, name):
        return getattr(self.backbone, name)

    def predict(self, z, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.backbone.predict(z, t).float()


def int8_backbone(fast):
    """The onnxruntime backbone with its weights quantized to int8 (dynamic quantization
    of every Conv, MatMul and Gemm), or the reason it could not be made."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from safetensors.numpy import load_file

    folder = locate({"preset": "face64-v2"})
    model = onnx.load(str(folder / fonnx.GRAPH), load_external_data=False)
    weights = load_file(str(folder / fonnx.WEIGHTS))
    for init in model.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(weights[init.name].astype(np.float32),
                                                  init.name))
    tmp = Path(sys.argv[0]).resolve().parent / ".int8-tmp"
    tmp.mkdir(exist_ok=True)
    onnx.save(model, str(tmp / "fp32.onnx"))
    quantize_dynamic(str(tmp / "fp32.onnx"), str(tmp / "int8.onnx"),
                     weight_type=QuantType.QInt8)
    session = ort.InferenceSession(str(tmp / "int8.onnx"), fonnx.session_options(),
                                   providers=["CPUExecutionProvider"])
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return dataclasses.replace(fast, session=session, weights=[])


def calls(args) -> None:
    exact = backends.get_model(None, "cpu")
    fast = backends.get_model(None, "cpu", backend="onnx")
    variants: dict[str, tuple] = {}  # name -> (predict on numpy, threads, backbone)

    def torch_call(b):
        return lambda z, t: b.predict(torch.from_numpy(z), t).float().numpy()

    variants["torch fp32, 1 thread"] = (torch_call(exact), 1, exact)
    variants["torch fp32, 2 threads"] = (torch_call(exact), 2, exact)
    bf16 = Autocast(exact)
    variants["torch bf16 autocast, 2 threads"] = (torch_call(bf16), 2, bf16)
    for threads in (1, 2):
        b = fonnx.load(locate({"preset": "face64-v2"}), fast.reference, threads)
        variants[f"onnxruntime fp32, {threads} thread(s)"] = (b.predict, None, b)
    try:
        q = int8_backbone(fast)
        variants["onnxruntime int8 (dynamic), default threads"] = (q.predict, None, q)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        print(f"onnxruntime int8: not made ({type(e).__name__}: {e})")
    rng = np.random.default_rng(0)
    z6 = rng.standard_normal((6, *exact.latent_shape)).astype(np.float32)
    want6 = torch_call(exact)(z6, 500)
    face = np.ascontiguousarray(np.asarray(Image.open(DATA / "gan_faces.png").convert("RGB"))
                                [:, :64])
    options = Options.of(aligned=True)
    regions = api.find_regions(face, options=options, model=exact)[0]
    want_face = api.anonymize(face, KEY, options=options.replace(backend="torch"), model=exact,
                              regions=regions, fixed=fixed(1)).pixels
    sizes = (1, 2, 6, 8, 16, 32)
    print(f"\none network call of face64-v2 (median ms of {args.calls}; per face in "
          "brackets); error vs torch fp32 at batch 6; a sealed face made with it vs torch fp32")
    print("| variant | " + " | ".join(f"batch {b}" for b in sizes)
          + " | max abs diff | sealed face |")
    print("|---|" + "---|" * len(sizes) + "---|---|")
    for name, (predict, threads, backbone) in variants.items():
        if threads:
            torch.set_num_threads(threads)
        cells = []
        for b in sizes:
            z = rng.standard_normal((b, *exact.latent_shape)).astype(np.float32)
            predict(z, 500)
            times = []
            for _ in range(max(3, args.calls // max(1, b // 4))):
                t0 = time.perf_counter()
                predict(z, 500)
                times.append(time.perf_counter() - t0)
            ms = 1000 * statistics.median(times)
            cells.append(f"{ms:.1f} ({ms / b:.1f})")
        diff = float(np.abs(predict(z6, 500) - want6).max())
        made = api.anonymize(face, KEY, options=options, model=backbone, regions=regions,
                             fixed=fixed(1)).pixels
        print(f"| {name} | " + " | ".join(cells) + f" | {diff:.2e} | "
              f"{compare(made, want_face)} |", flush=True)
        torch.set_num_threads(2)
    t = api.Timings()
    api.anonymize(face, KEY, options=options, model=fast, regions=regions, fixed=fixed(1),
                  timings=t)
    steps = options.sampler.steps
    print(f"\nreusing the outside context: a sealed face takes {t.calls} calls, {steps} of "
          f"them inverting the blanked context ({100 * steps / t.calls:.0f}%). That context "
          "depends on the face's own outside and mask, so only the same face with the same "
          "mask again (another key, the web page's second try) could reuse it.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--part", choices=["all", "modes", "calls"], default="all")
    args = ap.parse_args()
    torch.set_num_threads(2)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    print(f"load average at start: {load}")
    if args.part in ("all", "modes"):
        modes(args)
    if args.part in ("all", "calls"):
        calls(args)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    print(f"load average at end: {load}")


if __name__ == "__main__":
    main()
