"""The light install (`pip install faceveil`, no extras): the default anonymize, recover,
detect and inspect run without torch, diffusers or huggingface_hub, and what needs them
is exit status 5 naming `faceveil[models]`, with nothing written. Here the packages are
hidden from a fresh interpreter (tests/isolated.py), every socket call watched: the
default path makes no network access either (tests/test_network.py watches the paths
that load torch, and the web page). docs/measured.md records a real light environment
built with pip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil import api, images, keys
from faceveil.options import Options

from .isolated import run, strace_works

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"
MODELS_EXTRA = ("torch", "diffusers", "huggingface_hub")
EXTRA = "pip install 'faceveil[models]'"


def test_the_default_path_runs_without_the_models_extra(tmp_path):
    photo = tmp_path / "photo.png"
    Image.open(DATA / "obama.jpg").convert("RGB").save(photo)
    key = tmp_path / "k.key"
    keys.generate_key_file(key)
    # A file recovered by diffusion, made where torch is installed.
    face = np.asarray(Image.open(DATA / "gan_faces.png").convert("RGB"))[:64, :64]
    diffused = api.anonymize(face, keys.KeySource.from_key_file(key),
                             options=Options.of(aligned=True, lossless=False, steps=2))
    diffused.save(tmp_path / "diffused.png")
    k = ["-k", key, "-q"]
    report = run([
        ["anonymize", photo, "-o", tmp_path / "anon.png", *k],
        ["recover", tmp_path / "anon.png", "-o", tmp_path / "back.png", *k],
        ["detect", photo, "-o", tmp_path / "preview.png", "-q"],
        ["inspect", tmp_path / "anon.png"],
        ["models"],
        # What needs torch: exit 5 naming the extra, nothing written.
        ["anonymize", photo, "-o", tmp_path / "x1.png", "--no-lossless", *k],
        ["anonymize", photo, "-o", tmp_path / "x2.png", "--deniable", *k],
        ["recover", tmp_path / "diffused.png", "-o", tmp_path / "x3.png", *k],
        ["anonymize", photo, "-o", tmp_path / "x4.png", "--model", "someone/model", *k],
        ["models", "pull", "ldm-celebahq-256"],
        ["eval", tmp_path / "none", "-o", tmp_path / "report"],
    ], tmp_path, hidden=MODELS_EXTRA,
        trace=tmp_path / "strace.log" if strace_works() else None)
    codes = [r["code"] for r in report["results"]]
    assert codes == [0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 5], report["results"]
    for r in report["results"][5:]:
        assert EXTRA in r["stderr"] and "Traceback" not in r["stderr"], r["stderr"]
    assert not any(m in report["loaded"] for m in MODELS_EXTRA)
    assert "onnxruntime" in report["loaded"]
    assert report["network"] == [] and not (tmp_path / ".cache" / "Microsoft").exists()
    assert not list(tmp_path.glob("x*.png")) and not (tmp_path / "report").exists()
    # Sealed originals: bit-exact without torch.
    assert np.array_equal(images.load_image(tmp_path / "back.png").pixels,
                          images.load_image(photo).pixels)
    assert (tmp_path / "preview.png").exists() and '"faces"' in report["stdout"]
