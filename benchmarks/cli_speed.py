"""Wall time of the command line as a user runs it (fresh processes, start-up included),
this checkout beside other checkouts, interleaved in one run.

Usage::

    python benchmarks/cli_speed.py [--repeat 5] [--baseline OTHER_SRC_OR_CHECKOUT ...]
                                   [--startup-only] [--skip-slow] [--folder-repeat 3]

For each source (this checkout's ``src``, then each ``--baseline``: a checkout or its
``src``, e.g. a copy of an older main), the same commands run in turn, every source
once per repeat, so that the load of a shared machine weighs on all alike; it prints the
median seconds and every run:

* the imports on their own (``import torch``, the diffusers UNet by the top-level and by
  the narrowest import, onnxruntime, dlib) and ``import faceveil.api``, then loading
  the default model in that process (what ``anonymize`` loads for its defaults);
* the commands that need no model: ``--version``, ``--help``, ``anonymize --help``,
  ``keygen``, ``inspect``;
* ``anonymize`` of one aligned 64x64 face (the first of ``tests/data/gan_faces.png``)
  and of the six-face ``tests/data/group.jpg`` with each source's defaults, and
  ``recover`` of that face's file; then the face for diffusion recovery (this checkout:
  ``--no-lossless``; a checkout from before sealed originals became the default: its
  default, the same exact-steps method) and its ``recover``;
* the warm path: ``anonymize`` of a folder (the model loaded once, faces of several
  photos batched together) of the first 8 faces of ``gan_faces.png`` (``--aligned``) and
  of 3 copies of ``group.jpg``, ``--folder-repeat`` times, with the seconds per photo.

``uptime``'s load average is printed before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

IMPORTS = {
    "import torch": "import torch",
    "from diffusers import UNet2DModel": "from diffusers import UNet2DModel",
    "import diffusers.models.unets.unet_2d (narrowest)": "import diffusers.models.unets.unet_2d",
    "import onnxruntime": "import onnxruntime",
    "import dlib": "import dlib",
}
# faceveil's API, then the model anonymize loads for its defaults, in one process.
MODEL_LOAD = r"""
import json, sys, time
t0 = time.perf_counter()
from faceveil import api
t1 = time.perf_counter()
try:
    from faceveil.options import Options
    api.get_model(None, "cpu", options=Options())
except (ImportError, TypeError):  # a checkout from before Options / the onnx runtime
    api.get_model(None, "cpu")
t2 = time.perf_counter()
heavy = [m for m in ("torch", "diffusers", "onnxruntime", "dlib") if m in sys.modules]
print(json.dumps([t1 - t0, t2 - t1, heavy]))
"""


def source_dir(path: Path) -> Path:
    path = path.resolve()
    return path / "src" if (path / "src" / "faceveil").is_dir() else path


def env_for(src: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(src), OMP_WAIT_POLICY="PASSIVE",
                HF_HUB_OFFLINE="1")


def timed(cmd: list[str], src: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env_for(src))
    return time.perf_counter() - t0


def supports(src: Path, flag: str) -> bool:
    """Whether a checkout's anonymize takes ``flag`` (older ones had no --no-lossless)."""
    out = subprocess.run([sys.executable, "-m", "faceveil.cli", "anonymize", "--help"],
                         capture_output=True, text=True, env=env_for(src), check=True).stdout
    return flag in out


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", type=Path, action="append", default=[],
                    help="another checkout (or its src) to compare with; repeatable")
    ap.add_argument("--startup-only", action="store_true",
                    help="only the imports and the commands that need no model")
    ap.add_argument("--skip-slow", action="store_true",
                    help="leave out the group photo, the diffusion-recovery mode and folders")
    ap.add_argument("--folder-repeat", type=int, default=3)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "faceveil.cli"]
    sources = {"this checkout": ROOT / "src"}
    for b in args.baseline:
        sources[f"{b}"] = source_dir(b)
    labels = list(sources)
    rows: dict[str, dict[str, list[float]]] = {}
    print(f"load average before: {load()}", flush=True)

    def measure(name: str, make_cmd, only=None, repeat=None) -> None:
        """Time one command on each source, the sources interleaved in every repeat."""
        for i in range(repeat or args.repeat):
            for label, src in sources.items():
                if only is None or label in only:
                    rows.setdefault(name, {}).setdefault(label, []).append(
                        timed(make_cmd(i, label), src))

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        Image.open(DATA / "gan_faces.png").convert("RGB").crop((0, 0, 64, 64)).save(
            d / "face.png")
        subprocess.run([*exe, "keygen", "-o", str(d / "k.key")], check=True,
                       env=env_for(ROOT / "src"))
        key = ["-k", str(d / "k.key")]
        # The file to inspect and recover, made by each source's own faceveil (an older
        # checkout may not read this one's record format).
        made = {label: d / f"ref{n}.png" for n, label in enumerate(sources)}
        for label, src in sources.items():
            subprocess.run([*exe, "anonymize", str(d / "face.png"), "-o", str(made[label]),
                            *key, "--aligned", "-q"], check=True, env=env_for(src))

        for name, code in IMPORTS.items():
            measure(name, lambda i, s, c=code: [sys.executable, "-c", c],
                    only=[labels[0]])  # the same packages for every source
        loaded: dict[str, str] = {}
        for _ in range(args.repeat):
            for label, src in sources.items():
                out = subprocess.run([sys.executable, "-c", MODEL_LOAD], check=True,
                                     capture_output=True, text=True, env=env_for(src))
                api_s, load_s, heavy = json.loads(out.stdout.strip().splitlines()[-1])
                rows.setdefault("import faceveil.api", {}).setdefault(label, []).append(api_s)
                rows.setdefault("model load, defaults (after import faceveil.api)",
                                {}).setdefault(label, []).append(load_s)
                loaded[label] = ", ".join(heavy)

        measure("faceveil --version", lambda i, s: [*exe, "--version"])
        measure("faceveil --help", lambda i, s: [*exe, "--help"])
        measure("faceveil anonymize --help", lambda i, s: [*exe, "anonymize", "--help"])
        measure("faceveil keygen", lambda i, s: [*exe, "keygen", "--force", "-o",
                                                 str(d / "new.key")])
        measure("faceveil inspect (one face)", lambda i, s: [*exe, "inspect", str(made[s])])
        if not args.startup_only:
            measure("anonymize one aligned face (defaults)", lambda i, s: [
                *exe, "anonymize", str(d / "face.png"), "-o", str(d / f"a{i}.png"), *key,
                "--aligned", "-q", "--force"])
            measure("recover that face (defaults)", lambda i, s: [
                *exe, "recover", str(made[s]), "-o", str(d / f"back{i}.png"), *key, "-q",
                "--force"])
            if not args.skip_slow:
                measure("anonymize group.jpg, 6 faces (defaults)", lambda i, s: [
                    *exe, "anonymize", str(DATA / "group.jpg"), "-o", str(d / f"g{i}.png"),
                    *key, "-q", "--force"])
                # The paper's kind of file: recovered by diffusion (exact-steps, 50 steps).
                flag = {label: ["--no-lossless"] if supports(src, "--no-lossless") else []
                        for label, src in sources.items()}
                measure("anonymize one aligned face for diffusion recovery", lambda i, s: [
                    *exe, "anonymize", str(d / "face.png"), "-o", str(d / f"x{i}-{hash(s)}.png"),
                    *key, "--aligned", "-q", "--force", *flag[s]])
                measure("recover it by diffusion", lambda i, s: [
                    *exe, "recover", str(d / f"x{i}-{hash(s)}.png"), "-o",
                    str(d / f"xb{i}.png"), *key, "-q", "--force"])
                strip = Image.open(DATA / "gan_faces.png").convert("RGB")
                folders = {"8 aligned faces": (d / "faces", 8, ["--aligned"]),
                           "3 group.jpg copies (18 faces)": (d / "groups", 3, [])}
                (d / "faces").mkdir()
                (d / "groups").mkdir()
                for n in range(8):
                    strip.crop((64 * n, 0, 64 * n + 64, 64)).save(d / "faces" / f"f{n}.png")
                for n in range(3):
                    (d / "groups" / f"g{n}.jpg").write_bytes((DATA / "group.jpg").read_bytes())
                for what, (folder, count, extra) in folders.items():
                    name = f"anonymize a folder of {what}"
                    measure(name, lambda i, s, f=folder, e=extra: [
                        *exe, "anonymize", str(f), "-o", str(d / f"out-{f.name}-{i}-{hash(s)}"),
                        *key, "-q", "--force", *e], repeat=args.folder_repeat)
                    rows[f"{name}: per photo"] = {
                        lb: [t / count for t in ts] for lb, ts in rows[name].items()}
    print(f"load average after: {load()}")
    print()
    print("| command or import | " + " | ".join(f"{lb}: median s (runs)" for lb in labels)
          + " |")
    print("|---|" + "---|" * len(labels))
    for name, by_source in rows.items():
        cells = []
        for lb in labels:
            runs = by_source.get(lb)
            cells.append("" if not runs else f"{statistics.median(runs):.2f} ("
                         + ", ".join(f"{t:.2f}" for t in runs) + ")")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for label, heavy in loaded.items():
        print(f"{label}: the default model load leaves imported: {heavy}")


if __name__ == "__main__":
    main()
