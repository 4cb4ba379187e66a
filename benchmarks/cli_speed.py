"""Wall time of the command line on one aligned face, start-up included.

Usage::

    python benchmarks/cli_speed.py [--model face64-v1] [--repeat 3]

Runs ``faceveil anonymize --aligned`` and ``faceveil recover`` as a user would (fresh
processes), for the default exact-steps method beside the paper's plain method, plus
``faceveil --version`` as the start-up baseline, and prints the median seconds. The
face is a held-out DCGAN face (evaluation seed 0).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import dcgan

    exe = [sys.executable, "-m", "faceveil.cli"]
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        face = ((dcgan.generate_faces(dcgan.load_generator(), [0])[0].clamp(-1, 1) + 1) * 127.5)
        Image.fromarray(face.round().byte().permute(1, 2, 0).numpy()).save(d / "face.png")
        subprocess.run([*exe, "keygen", "-o", str(d / "k.key")], check=True)
        rows = {"start-up (faceveil --version)": [timed([*exe, "--version"])
                                                  for _ in range(args.repeat)]}
        for method in ("plain", "exact-steps"):
            context = "own" if method == "plain" else "masked"
            anon, back = [], []
            for i in range(args.repeat):
                out = d / f"{method}{i}.png"
                anon.append(timed([*exe, "anonymize", str(d / "face.png"), "-o", str(out),
                                   "-k", str(d / "k.key"), "--aligned", "--method", method,
                                   "--context", context, "-q", *model]))
                target = d / f"{method}{i}.back.png"
                back.append(timed([*exe, "recover", str(out), "-o", str(target),
                                   "-k", str(d / "k.key"), "-q", *model]))
            rows[f"anonymize, {method}"] = anon
            rows[f"recover, {method}"] = back
    print("| command (one aligned 64 px face, 50 steps) | median s | runs |")
    print("|---|---|---|")
    for name, times in rows.items():
        print(f"| {name} | {statistics.median(times):.2f} | "
              f"{', '.join(f'{t:.2f}' for t in times)} |")


if __name__ == "__main__":
    main()
