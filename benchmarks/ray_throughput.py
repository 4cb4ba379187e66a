"""Images per second of a folder run: the plain command line beside ``--ray`` (local Ray).

Usage::

    python benchmarks/ray_throughput.py [--images 8] [--steps 50] [--workers 2]

Writes ``--images`` aligned 64x64 held-out faces (DCGAN evaluation seeds, or the
``tests/data/gan_faces.png`` strip) into a folder and anonymizes it, as a user would, with
``faceveil anonymize DIR -o OUT --aligned`` (one process, faces one file after the other)
and with ``--ray`` (a local Ray started by the command, ``--ray-workers`` model actors),
then recovers the anonymized folder both ways. Wall time includes everything (start-up,
model loading, Ray's start). Prints seconds and images per second side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from speed import held_out_faces  # noqa: E402


def timed(cmd: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tiles, source = held_out_faces(args.images)
    exe = [sys.executable, "-m", "faceveil.cli"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "in").mkdir()
        for i, tile in enumerate(tiles):
            Image.fromarray(tile).save(d / "in" / f"face{i:03d}.png")
        subprocess.run([*exe, "keygen", "-o", str(d / "k.key")], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        common = ["-k", str(d / "k.key"), "-q"]
        ray = ["--ray", "--ray-workers", str(args.workers), "--device", "cpu"]
        rows = []
        for label, extra in (("plain folder run", []), (f"--ray ({args.workers} workers)", ray)):
            tag = "ray" if extra else "plain"
            # --method exact-steps both ways: recovery by diffusion, even where the files
            # also seal their originals.
            anon = timed([*exe, "anonymize", str(d / "in"), "-o", str(d / f"anon-{tag}"),
                          "--aligned", "--steps", str(args.steps), "--method", "exact-steps",
                          *common, *extra])
            back = timed([*exe, "recover", str(d / f"anon-{tag}"), "-o", str(d / f"back-{tag}"),
                          "--method", "exact-steps", *common, *extra])
            rows.append((label, anon, back))
    n = args.images
    print(f"{n} aligned 64 px faces ({source}), {args.steps} DDIM steps, exact-steps, "
          f"built-in model, {os.cpu_count()} CPUs; wall time of the whole command")
    print("| run | anonymize s | images/s | recover s | images/s |")
    print("|---|---|---|---|---|")
    for label, anon, back in rows:
        print(f"| {label} | {anon:.1f} | {n / anon:.3f} | {back:.1f} | {n / back:.3f} |")


if __name__ == "__main__":
    main()
