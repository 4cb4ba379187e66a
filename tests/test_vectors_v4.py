"""Format 4 golden files and failure cases (tests/vectors/manifest_v4.json, made once by
make_vectors_v4.py): today's reader recovers each golden file with each of its holders,
and each tampered record or wrong key gives the exit status and message listed with it,
writing nothing (as age's testkit lists its cases)."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from faceveil import images
from faceveil.cli import main

VECTORS = Path(__file__).parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest_v4.json").read_text())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recover(case: dict, out: Path):
    args = ["recover", str(VECTORS / case["file" if "file" in case else "image"]),
            "-o", str(out), "-q"]
    for word in shlex.split(case["key"]):
        args.append(str(VECTORS / word) if not word.startswith("-") else word)
    if case.get("meta"):
        args += ["--meta", str(VECTORS / case["meta"])]
    return CliRunner().invoke(main, args)


def test_v4_golden_files_are_the_ones_made_once():
    for name, digest in MANIFEST["files"].items():
        assert _sha((VECTORS / name).read_bytes()) == digest, f"{name} was modified"


@pytest.mark.parametrize("name", sorted(MANIFEST["vectors"]))
def test_v4_vectors_recover_with_each_holder(name, tmp_path):
    v = MANIFEST["vectors"][name]
    out = tmp_path / "back.png"
    r = recover(v, out)
    assert r.exit_code == 0, r.output
    pixels = images.load_image(out).pixels
    assert _sha(np.ascontiguousarray(pixels).tobytes()) == v["recovered_sha256"]


@pytest.mark.parametrize("case", MANIFEST["failures"], ids=lambda c: c["name"])
def test_v4_failure_cases(case, tmp_path):
    out = tmp_path / "back.png"
    r = recover(case, out)
    assert r.exit_code == case["exit"] and case["message"] in r.output, r.output
    assert not out.exists()
