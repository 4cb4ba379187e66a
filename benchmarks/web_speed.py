"""Time per photo through the web page, beside the command line, in the same run.

Usage::

    python benchmarks/web_speed.py [--photos obama.jpg,group.jpg] [--steps N]
                                   [--model face64-v1] [--repeat 1] [--src OTHER/src]

Starts ``faceveil serve`` on a free local port (the model loaded once, as a user leaves
the page open) and, for each photo of ``tests/data``, makes the page's requests as its
script does: upload (decode and detect faces), anonymize (a job, polled until done) and
fetch the PNG; then upload that PNG, recover it and fetch the result. Beside each photo,
the same photo through ``faceveil anonymize`` and ``faceveil recover`` (fresh processes,
start-up included, as a user runs them), interleaved with the page's runs so that the
machine's load weighs on both alike. Prints the median seconds. ``--steps`` defaults to
the server's own default (25 with sealed originals); ``--src`` runs another checkout's
``src`` (whose page speaks the same protocol) instead of this one's.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def start_server(args, log: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "faceveil.cli", "serve", "--port", "0",
           *(["--steps", str(args.steps)] if args.steps else []),
           *(["--model", args.model] if args.model else [])]
    env = dict(os.environ, PYTHONPATH=str(args.src), PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    end = time.monotonic() + 600
    while time.monotonic() < end and proc.poll() is None:
        found = re.search(r"faceveil web page: (\S+)", log.read_text())
        if found:
            return proc, found.group(1)
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"faceveil serve did not start:\n{log.read_text()}")


class Page:
    """The page's requests, as its script makes them."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=600)
        token = re.search(r'name="faceveil-token" content="([^"]+)"', self.http.get("/").text)
        self.headers = {"X-Faceveil-Token": token.group(1)}

    def upload(self, path: str, data: bytes, name: str) -> dict:
        r = self.http.post(path, content=data, headers={
            **self.headers, "X-Faceveil-Name": name, "Content-Type": "application/octet-stream"})
        r.raise_for_status()
        return r.json()

    def job(self, path: str, body: dict) -> tuple[bytes, dict]:
        r = self.http.post(path, json=body, headers=self.headers)
        r.raise_for_status()
        job = r.json()["job"]
        while True:
            status = self.http.get(f"/api/jobs/{job}", headers=self.headers).json()
            if status["state"] == "error":
                raise SystemExit(f"{path}: {status['error']}")
            if status["state"] == "done":
                break
            time.sleep(0.35)
        out = self.http.get(f"/api/jobs/{job}/output", headers=self.headers).content
        self.http.delete(f"/api/jobs/{job}", headers=self.headers)
        return out, status

    def round_trip(self, photo: Path, key: dict) -> dict[str, float]:
        t0 = time.perf_counter()
        info = self.upload("/api/photos", photo.read_bytes(), photo.name)
        t1 = time.perf_counter()
        png, anon = self.job("/api/anonymize", {"photo": info["id"], "key": key})
        t2 = time.perf_counter()
        file = self.upload("/api/files", png, photo.stem + ".anon.png")
        _, back = self.job("/api/recover", {"file": file["id"], "key": key})
        t3 = time.perf_counter()
        self.http.delete(f"/api/photos/{info['id']}", headers=self.headers)
        self.http.delete(f"/api/files/{file['id']}", headers=self.headers)
        return {"page: upload + detect": t1 - t0, "page: anonymize (job + PNG)": t2 - t1,
                "page: anonymize, model job alone": anon["seconds"],
                "page: recover (upload + job + PNG)": t3 - t2,
                "page: recover, model job alone": back["seconds"],
                "page: whole round trip": t3 - t0, "faces": len(info["faces"])}


def cli_round_trip(args, photo: Path, key: Path, d: Path) -> dict[str, float]:
    exe = [sys.executable, "-m", "faceveil.cli"]
    model = ["--model", args.model] if args.model else []
    env = dict(os.environ, PYTHONPATH=str(args.src))

    def run(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return time.perf_counter() - t0

    anon, back = d / f"{photo.stem}.cli.png", d / f"{photo.stem}.cli.back.png"
    steps = ["--steps", str(args.steps)] if args.steps else []
    a = run([*exe, "anonymize", str(photo), "-o", str(anon), "-k", str(key), *steps,
             "--force", "-q", *model])
    r = run([*exe, "recover", str(anon), "-o", str(back), "-k", str(key), "--force", "-q"])
    return {"CLI: anonymize (start-up included)": a, "CLI: recover (start-up included)": r,
            "CLI: whole round trip": a + r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default="obama.jpg,group.jpg")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--src", type=Path, default=ROOT / "src")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        env = dict(os.environ, PYTHONPATH=str(args.src))
        subprocess.run([sys.executable, "-m", "faceveil.cli", "keygen", "-o", str(d / "k.key")],
                       check=True, env=env)
        key = {"key_file": base64.b64encode((d / "k.key").read_bytes()).decode()}
        t0 = time.perf_counter()
        proc, url = start_server(args, d / "server.log")
        startup = time.perf_counter() - t0
        try:
            page = Page(url)
            rows: dict[str, dict[str, list[float]]] = {}
            for _ in range(args.repeat):
                for name in args.photos.split(","):
                    photo = DATA / name
                    for label, value in {**page.round_trip(photo, key),
                                         **cli_round_trip(args, photo, d / "k.key", d)}.items():
                        rows.setdefault(label, {}).setdefault(name, []).append(value)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    load = os.getloadavg()
    print(f"faceveil serve ({args.src}) start-up (imports, model): {startup:.1f} s; "
          f"{args.steps or 'default'} DDIM steps, model {args.model or 'built-in'}, "
          f"{args.repeat} run(s), "
          f"median s; load average now {load[0]:.1f} on {os.cpu_count()} CPUs")
    names = args.photos.split(",")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, per in rows.items():
        cells = [f"{statistics.median(per[n]):.0f}" if label == "faces"
                 else f"{statistics.median(per[n]):.1f}" for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
