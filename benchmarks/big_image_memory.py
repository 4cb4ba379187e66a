"""Peak memory of `faceveil anonymize` (and `recover`) on a 64-megapixel RGBA photo with
a semi-transparent alpha channel (issue 27): the photo is made here, the commands run in
child processes, and their peak resident set size (ru_maxrss) is printed. With --web,
the web page's application (default settings: --max-memory-mb 1024) takes the photo
and anonymizes it, in a child process too.

    python benchmarks/big_image_memory.py [--side 8000] [--keep DIR] [--web]

Needs about 1 GB of disk in a temporary folder; takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def make_photo(path: Path, side: int) -> None:
    """A mostly flat side x side RGBA photo with one real face in it and an alpha
    channel that is semi-transparent in a band (so flattening has work to do)."""
    face = Image.open(DATA / "obama.jpg").convert("RGB")
    canvas = Image.new("RGB", (side, side), (90, 120, 150))
    canvas.paste(face, (side // 3, side // 3))
    alpha = np.full((side, side), 255, np.uint8)
    alpha[: side // 8] = 128  # a semi-transparent band across the top
    rgba = canvas.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha, "L"))
    rgba.save(path, compress_level=6)


def run(cmd: list[str]) -> tuple[int, float, float, str]:
    """Exit status, seconds and peak RSS (MB) of a child process, and its stderr tail."""
    code = (f"import resource, subprocess, sys; p = subprocess.run({cmd!r}, "
            "capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.stderr.write(p.stderr[-600:]); sys.exit(p.returncode)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_kb = int(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else 0
    return p.returncode, seconds, peak_kb / 1024, p.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=8000, help="width and height (8000: 64 MP)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder")
    ap.add_argument("--web", action="store_true", help="also the web page's application")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="faceveil-bigimage-"))
    work.mkdir(parents=True, exist_ok=True)
    photo, anon, back, key = (work / n for n in ("big.png", "anon.png", "back.png", "k.key"))
    if not photo.exists():
        make_photo(photo, args.side)
    print(f"photo: {args.side}x{args.side} RGBA, {photo.stat().st_size / 1e6:.2f} MB on disk")
    fv = [sys.executable, "-m", "faceveil"]
    if not key.exists():
        subprocess.run(fv + ["keygen", "-o", str(key)], check=True)
    env_note = os.environ.get("OMP_NUM_THREADS", "unset")
    for name, cmd in (("anonymize", fv + ["anonymize", str(photo), "-o", str(anon), "-k",
                                          str(key), "--force", "-q"]),
                      ("recover", fv + ["recover", str(anon), "-o", str(back), "-k", str(key),
                                        "--force", "-q"])):
        rc, seconds, peak, err = run(cmd)
        print(f"{name}: exit {rc}, {seconds:.1f} s, peak RSS {peak:.0f} MB "
              f"(OMP_NUM_THREADS={env_note})")
        if rc:
            print(err)
    if args.web:
        rc, seconds, peak, err = run([sys.executable, "-c", WEB.format(photo=str(photo))])
        print(f"web page: exit {rc}, {seconds:.1f} s, peak RSS {peak:.0f} MB; {err.strip()}")


WEB = """
import time
from pathlib import Path
from starlette.testclient import TestClient
from faceveil.web import app as web
client = TestClient(web.create_app(web.Settings(), token="t"), base_url="http://127.0.0.1:1")
h = {{"X-Faceveil-Token": "t", "X-Faceveil-Name": "big.png"}}
r = client.post("/api/photos", content=Path({photo!r}).read_bytes(), headers=h)
if r.status_code != 200:
    raise SystemExit("photo refused: " + r.text)
r = client.post("/api/anonymize", json={{"photo": r.json()["id"],
                "key": {{"passphrase": "a long enough passphrase"}}}}, headers=h)
job = r.json()["job"]
while (s := client.get("/api/jobs/" + job, headers=h).json())["state"] not in ("done", "error"):
    time.sleep(0.5)
import sys
sys.stderr.write(s["state"] + " " + str(s.get("error") or s["result"]["faces"]) + " face(s)")
"""


if __name__ == "__main__":
    main()
