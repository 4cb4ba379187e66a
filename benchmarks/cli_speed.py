"""Wall time of the command line on one aligned face, start-up included.

Usage::

    python benchmarks/cli_speed.py [--model face64-v1] [--repeat 3] [--startup-only]
                                   [--baseline OTHER_CHECKOUT]

Runs the commands that need no model (``--version``, ``--help``, ``anonymize --help``,
``keygen``, ``inspect``), then ``faceveil anonymize --aligned`` and ``faceveil recover``
as a user would (fresh processes), for the default exact-steps method beside the
paper's plain method, and prints the median seconds. The face is a held-out DCGAN face
(evaluation seed 0). With ``--baseline`` the same commands also run on another checkout's
``src`` (e.g. the main branch), interleaved with this one, in a second column.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))


def timed(cmd: list[str], src: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--startup-only", action="store_true",
                    help="only the commands that need no model")
    ap.add_argument("--baseline", type=Path, help="another checkout to compare with")
    args = ap.parse_args()
    import dcgan

    exe = [sys.executable, "-m", "faceveil.cli"]
    model = ["--model", args.model] if args.model else []
    sources = {"this checkout": ROOT / "src"}
    if args.baseline:
        sources[f"baseline ({args.baseline})"] = args.baseline.resolve() / "src"
    rows: dict[str, dict[str, list[float]]] = {}

    def measure(name: str, make_cmd) -> None:
        """Time one command on each source, the sources interleaved in every repeat."""
        for i in range(args.repeat):
            for label, src in sources.items():
                rows.setdefault(name, {}).setdefault(label, []).append(
                    timed(make_cmd(i, label), src))

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        face = ((dcgan.generate_faces(dcgan.load_generator(), [0])[0].clamp(-1, 1) + 1) * 127.5)
        Image.fromarray(face.round().byte().permute(1, 2, 0).numpy()).save(d / "face.png")
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        subprocess.run([*exe, "keygen", "-o", str(d / "k.key")], check=True, env=env)
        # The file to inspect, made by each source's own faceveil: an older checkout may
        # not read this one's record format (this one writes version 3).
        refs = {label: d / f"ref{n}.png" for n, label in enumerate(sources)}
        for label, src in sources.items():
            subprocess.run([*exe, "anonymize", str(d / "face.png"), "-o", str(refs[label]),
                            "-k", str(d / "k.key"), "--aligned", "-q", *model], check=True,
                           env=dict(os.environ, PYTHONPATH=str(src)))
        measure("faceveil --version", lambda i, s: [*exe, "--version"])
        measure("faceveil --help", lambda i, s: [*exe, "--help"])
        measure("faceveil anonymize --help", lambda i, s: [*exe, "anonymize", "--help"])
        measure("faceveil keygen", lambda i, s: [*exe, "keygen", "--force", "-o",
                                                 str(d / "new.key")])
        measure("faceveil inspect (one face)", lambda i, s: [*exe, "inspect", str(refs[s])])
        for method in () if args.startup_only else ("plain", "exact-steps"):
            context = "own" if method == "plain" else "masked"

            def out(i, s, method=method):
                return d / f"{method}{i}-{abs(hash(s))}.png"

            measure(f"anonymize, {method}", lambda i, s, m=method, c=context, o=out: [
                *exe, "anonymize", str(d / "face.png"), "-o", str(o(i, s)), "-k",
                str(d / "k.key"), "--aligned", "--method", m, "--context", c, "-q", *model])
            # --method: the diffusion recovery, even where the file also seals its originals.
            measure(f"recover, {method}", lambda i, s, m=method, o=out: [
                *exe, "recover", str(o(i, s)), "-o", str(o(i, s).with_suffix(".back.png")),
                "-k", str(d / "k.key"), "--method", m, "-q", *model])
    labels = list(sources)
    print("| command (one aligned 64 px face, 50 steps) | "
          + " | ".join(f"{lb}: median s (runs)" for lb in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, by_source in rows.items():
        cells = [f"{statistics.median(by_source[lb]):.2f} ("
                 + ", ".join(f"{t:.2f}" for t in by_source[lb]) + ")" for lb in labels]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
