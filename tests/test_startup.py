"""Commands that need no model start without importing torch (fast start-up).

Each command runs in a fresh interpreter, as a user runs it; a small wrapper calls the
CLI and then reports which heavy modules the process imported. Start-up times are
measured by ``benchmarks/cli_speed.py``, not here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceveil import api, images, keys
from faceveil.format import auth
from faceveil.options import Options

PROBE = """
import json, sys
from faceveil.cli import main
try:
    main(sys.argv[1:], prog_name="faceveil")
    code = 0
except SystemExit as e:
    code = e.code or 0
heavy = sorted(m for m in ("torch", "diffusers", "dlib", "transformers") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_fresh(*args: str) -> tuple[dict, str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                       env=env, timeout=120)
    return json.loads(p.stderr.strip().splitlines()[-1]), p.stdout


@pytest.mark.parametrize("args", [
    ["--version"], ["--help"], ["anonymize", "--help"], ["recover", "--help"],
    ["inspect", "--help"], ["keygen", "--help"], ["eval", "--help"], ["detect", "--help"],
    ["serve", "--help"],
])
def test_help_and_version_do_not_import_torch(args):
    result, out = run_fresh(*args)
    assert result == {"code": 0, "heavy": []}
    assert out.strip()


def test_keygen_does_not_import_torch(tmp_path):
    result, _ = run_fresh("keygen", "-o", str(tmp_path / "k.key"))
    assert result == {"code": 0, "heavy": []}
    assert (tmp_path / "k.key").read_text().startswith("faceveil-key-v1")


def test_inspect_reads_the_record_without_torch(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    anon = tmp_path / "anon.png"
    result = api.anonymize(img, keys.KeySource.from_key_file(key), model=str(pixel_model),
                           options=Options.of(aligned=True, steps=4))
    result.save(anon)
    out, stdout = run_fresh("inspect", str(anon), "--export", str(tmp_path / "meta.json"))
    assert out == {"code": 0, "heavy": []}
    assert json.loads(stdout) == result.record.public() == api.inspect(anon)
    exported = json.loads((tmp_path / "meta.json").read_text())
    assert auth.load(exported) == result.record
    # Bad input is still a clear message and exit 4, without torch.
    (tmp_path / "plain.png").write_bytes(images.encode_image(np.zeros((8, 8, 3), np.uint8)))
    out, _ = run_fresh("inspect", str(tmp_path / "plain.png"))
    assert out == {"code": 4, "heavy": []}


@pytest.mark.slow
def test_the_built_in_model_anonymizes_and_recovers_without_torch(tmp_path):
    # The default: sealed originals, the built-in model through onnxruntime.
    from PIL import Image

    face = Path(__file__).parent / "data" / "gan_faces.png"
    Image.open(face).crop((0, 0, 64, 64)).save(tmp_path / "face.png")
    keys.generate_key_file(tmp_path / "k.key")
    args = ["-k", str(tmp_path / "k.key"), "-q"]
    out, _ = run_fresh("anonymize", str(tmp_path / "face.png"), "-o", str(tmp_path / "a.png"),
                       "--aligned", *args)
    assert out == {"code": 0, "heavy": ["dlib"]}
    out, _ = run_fresh("recover", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), *args)
    assert out == {"code": 0, "heavy": []}
    assert np.array_equal(images.load_image(tmp_path / "b.png").pixels,
                          images.load_image(tmp_path / "face.png").pixels)
    # A file recovered by diffusion is made by torch (exact numerics).
    out, _ = run_fresh("anonymize", str(tmp_path / "face.png"), "-o", str(tmp_path / "d.png"),
                       "--aligned", "--no-lossless", "--steps", "2", *args)
    assert out["code"] == 0 and "torch" in out["heavy"]
