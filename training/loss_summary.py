"""A short text summary of a run's loss log, small enough to commit beside a model.

Prints, as Markdown: the mean training loss over windows of ``--window`` steps (with
the wall time per step), and every evaluation's validation losses (the mean over the
fixed timesteps; ``val`` on DCGAN faces, ``val_real`` on held-out real faces with the
EMA weights, ``raw_real`` with the raw weights)::

    python training/loss_summary.py /work/train-v3/run > training/runs/face64-v3-cpu.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402


def summary(run: Path, window: int = 100) -> str:
    """The Markdown summary of run folder ``run``."""
    logs = list(train.log_lines(run / "log.jsonl"))
    evals = list(train.log_lines(run / "eval.jsonl"))
    lines = [f"# Loss log of {run}", "", f"## Training loss, mean per {window} steps", "",
             "| steps | loss | s/step (wall) | lr |", "|---|---|---|---|"]
    buckets: dict[int, list[dict]] = {}
    for r in logs:
        buckets.setdefault((r["step"] - 1) // window, []).append(r)
    first = (evals[0]["step"] if evals else logs[0]["step"] - 1) if logs else 0
    for k in sorted(buckets):
        rs = buckets[k]
        loss = sum(r["loss"] for r in rs) / len(rs)
        wall = sum(r["step_time"] for r in rs) / len(rs)
        lines.append(f"| {max(first, k * window) + 1}-{rs[-1]['step']} | {loss:.4f} | "
                     f"{wall:.2f} | {rs[-1]['lr']:.1e} |")
    keys = ("val_mean", "val_real_mean", "raw_real_mean", "val_real_t250", "val_real_t750")
    lines += ["", "## Validation (v-prediction MSE, fixed faces and noise)", "",
              "| step | trained min | " + " | ".join(keys) + " |",
              "|---" * (len(keys) + 2) + "|"]
    for e in evals:
        vals = " | ".join(f"{e[k]:.4f}" if k in e else "-" for k in keys)
        lines.append(f"| {e['step']} | {e['seconds'] / 60:.0f} | {vals} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the summary of one run folder."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--window", type=int, default=100)
    args = p.parse_args(argv)
    print(summary(args.run, args.window), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
