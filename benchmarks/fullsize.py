"""The full-size latent model on a CPU: one command of faceveil (by default `anonymize`
with the sealed default) on a random-weight model with the exact architecture of
CompVis/ldm-celebahq-256 (``tests/fullsize.py``), in a Hugging Face cache, offline, by
hub id; this checkout beside another (``--baseline``), alternating, each run in a fresh
process.

Usage::

    python benchmarks/fullsize.py --baseline ../main --photo tests/data/obama.jpg --repeat 2
    python benchmarks/fullsize.py --photo tests/data/group.jpg --args="--solver ddim"

Per run: wall seconds, CPU seconds (user + system of the process), peak resident memory
(the process's maximum RSS) and faces; the timings line of ``--timings``. The model is
written once under ``--cache`` (about 630 MB, fp16 .bin like the hub's).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests import fullsize  # noqa: E402


def run(src: Path, photo: Path, out: Path, args: list[str], env: dict) -> dict:
    """One anonymize in a fresh process under ``src``; its costs."""
    env = dict(env, PYTHONPATH=str(src / "src"))
    cmd = [sys.executable, "-m", "faceveil", "anonymize", str(photo), "-o", str(out), "-k",
           str(out.parent / "bench.key"), "--model", fullsize.REPO, "--timings", "-q",
           "--force", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(map(shlex.quote, cmd))} failed:\n{err}")
    timings = next((line for line in err.splitlines() if "timings" in line), "")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_gb": usage.ru_maxrss / 2**20, "timings": timings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=Path, default=ROOT / "tests" / "data" / "obama.jpg")
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to compare")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--args", default="", help="extra anonymize options, for both")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/faceveil-fullsize"))
    a = ap.parse_args()
    hub = a.cache / "hf" / "hub"
    if not (hub / ("models--" + fullsize.REPO.replace("/", "--"))).exists():
        print(f"writing the random-weight model under {hub} ...", flush=True)
        fullsize.write_hub_cache(hub)
    (a.cache / "bench.key").write_text(f"faceveil-key-v1\n{bytes(range(32)).hex()}\n")
    env = dict(os.environ, HF_HOME=str(a.cache / "hf"), HF_HUB_OFFLINE="1",
               FACEVEIL_CACHE=str(a.cache), OMP_NUM_THREADS=str(a.threads),
               FACEVEIL_THREADS=str(a.threads))
    env.pop("HF_HUB_CACHE", None)
    trees = [("new", ROOT)] + ([("baseline", a.baseline.resolve())] if a.baseline else [])
    print(f"photo {a.photo}, options {a.args or '(defaults)'}, {a.threads} threads; load "
          f"average at start {os.getloadavg()[0]:.1f}", flush=True)
    for n in range(a.repeat):
        for name, tree in trees:  # alternating: other load hits both alike
            r = run(tree, a.photo, a.cache / f"out-{name}.png", shlex.split(a.args), env)
            print(f"{n + 1} {name}: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, peak RSS "
                  f"{r['rss_gb']:.2f} GB, load {os.getloadavg()[0]:.1f}\n    {r['timings']}",
                  flush=True)


if __name__ == "__main__":
    main()
