"""No network at run time, proven: anonymize, recover, detect, inspect and the web page
make no DNS lookup and no connection outside a Unix socket, whether they run the built-in
model on onnxruntime or a model from the Hugging Face cache on torch. Every socket call
is watched (tests/isolated.py: a Python audit hook, and strace where it can trace, which
sees native code such as onnxruntime's telemetry client too)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil import keys

from .isolated import command, environment, inet_calls, run, strace_works
from .tinymodels import make_pixel_model

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def home(tmp_path):
    photo = tmp_path / "photo.png"
    Image.open(DATA / "obama.jpg").convert("RGB").save(photo)
    Image.fromarray(np.asarray(Image.open(DATA / "gan_faces.png").convert("RGB"))[:64, :64]
                    ).save(tmp_path / "face.png")
    keys.generate_key_file(tmp_path / "k.key")
    # A hub model resolved from the cache by its id (huggingface_hub, diffusers, torch).
    root = tmp_path / "hf" / "hub" / "models--someone--tiny"
    make_pixel_model(root / "snapshots" / COMMIT, size=64, patch=4)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    return tmp_path


def trace_file(tmp_path: Path) -> Path | None:
    return tmp_path / "strace.log" if strace_works() else None


def test_the_commands_make_no_network_access(home):
    """With torch, diffusers and huggingface_hub loaded (a model from the Hugging Face
    cache, recovered by diffusion) and onnxruntime too. The default path on a photo, with
    detection, is watched the same way without torch in tests/test_light.py."""
    k = ["-k", home / "k.key", "-q"]
    report = run([
        ["anonymize", home / "face.png", "-o", home / "anon.png", "--aligned", *k],
        ["recover", home / "anon.png", "-o", home / "back.png", *k],
        ["anonymize", home / "face.png", "-o", home / "hub.png", "--aligned",
         "--model", "someone/tiny", "--no-lossless", "--steps", 2, *k],
        ["recover", home / "hub.png", "-o", home / "hub-back.png", *k],
        ["detect", home / "photo.png", "-o", home / "preview.png", "--model", "someone/tiny",
         "-q"],
        ["inspect", home / "hub.png"],
    ], home, trace=trace_file(home))
    assert [r["code"] for r in report["results"]] == [0] * 6, report["results"]
    assert {"onnxruntime", "torch", "diffusers", "huggingface_hub"} <= set(report["loaded"])
    assert report["network"] == []
    # Nor a telemetry store to send later (onnxruntime's, without ORT_DISABLE_TELEMETRY).
    assert not (home / ".cache" / "Microsoft").exists()


def test_the_web_page_makes_no_network_access(home):
    """`faceveil serve` listens on loopback (allowed) and handles a photo: no connect,
    no lookup of its own."""
    trace = trace_file(home)
    argv = command([["serve", "--port", 0]], trace=trace)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=environment(home)) as server:
        try:
            url = ""
            while not url:
                line = server.stdout.readline()
                assert line, server.stderr.read()[-3000:]
                url = (re.findall(r"http://\S+", line) or [""])[0]
            page = urllib.request.urlopen(url, timeout=60).read().decode()
            token = re.search(r'name="faceveil-token" content="([^"]+)"', page).group(1)
            upload = urllib.request.Request(
                url.rstrip("/") + "/api/photos", data=(home / "photo.png").read_bytes(),
                headers={"X-Faceveil-Token": token, "X-Faceveil-Name": "photo.png",
                         "Content-Type": "application/octet-stream"})
            assert b'"faces"' in urllib.request.urlopen(upload, timeout=300).read()
            time.sleep(1)
        finally:
            os.kill(_python_of(server.pid) if trace is not None else server.pid,
                    signal.SIGINT)  # Ctrl-C, as a user stops it
            _, err = server.communicate(timeout=60)
    report = json.loads(err.strip().splitlines()[-1])
    assert report["network"] == []
    if trace is not None:
        assert inet_calls(trace) == []


def _python_of(pid: int) -> int:
    """The traced interpreter: strace's child."""
    for _ in range(100):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise AssertionError("strace started no interpreter")
