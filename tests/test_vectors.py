"""Golden files of every format version (tests/vectors): today's reader opens and
recovers what earlier releases wrote. The files are never regenerated; their hashes are
checked first, so a test cannot pass against files rewritten by today's writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from faceveil import api, images, keys
from faceveil.errors import MetadataError, WrongKeyError

VECTORS = Path(__file__).parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
KEY = keys.KeySource.from_key_file(VECTORS / "golden.key")
PHOTOS = {n: v for n, v in MANIFEST["vectors"].items() if v["file"].endswith(".png")}

pytestmark = pytest.mark.slow


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_golden_files_are_the_ones_made_once():
    for name, digest in MANIFEST["files"].items():
        assert _sha((VECTORS / name).read_bytes()) == digest, f"{name} was modified"


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_photo_vectors_recover(name):
    v = PHOTOS[name]
    path = VECTORS / v["file"]
    record = api.inspect(path)
    assert record["version"] == v["version"]
    back = api.recover(path, KEY, deniable=v["deniable"]).pixels
    if v["recovery"] == "lossless":
        assert _sha(np.ascontiguousarray(back).tobytes()) == v["recovered_sha256"]
        assert np.array_equal(back, images.load_image(VECTORS / v["input"]).pixels)
        return
    reference = images.load_image(VECTORS / v["recovered_reference"]).pixels
    diff = np.abs(back.astype(int) - reference.astype(int))
    assert diff.max() <= 8 and (diff <= 1).mean() >= 0.99, (diff.max(), (diff > 1).mean())


SIDECARS = sorted(n for n, v in PHOTOS.items() if "sidecar" in v)
CLIPS = sorted(n for n, v in MANIFEST["vectors"].items() if v["file"].endswith(".mkv"))


@pytest.mark.parametrize("name", SIDECARS)
def test_sidecar_vectors_recover_like_their_png(name):
    v = PHOTOS[name]
    pixels = images.load_image(VECTORS / v["file"]).pixels  # decoded without its chunk
    back = api.recover(pixels, KEY, meta=VECTORS / v["sidecar"]).pixels
    if v["recovery"] == "lossless":
        assert _sha(np.ascontiguousarray(back).tobytes()) == v["recovered_sha256"]
        return
    reference = images.load_image(VECTORS / v["recovered_reference"]).pixels
    assert np.abs(back.astype(int) - reference.astype(int)).max() <= 8


@pytest.mark.parametrize("name", ["v1-aligned", "v2-aligned-lossless", "v3-aligned",
                                  "v3-aligned-diffusion", "v3-photo"])
def test_vectors_refuse_a_wrong_key(name):
    with pytest.raises(WrongKeyError):
        api.recover(VECTORS / PHOTOS[name]["file"], keys.KeySource.from_bytes(bytes(32)))


@pytest.mark.parametrize("name", ["v2-deniable", "v3-deniable"])
def test_deniable_vectors_need_deniable_recovery(name):
    with pytest.raises(MetadataError):
        api.recover(VECTORS / PHOTOS[name]["file"], KEY)


@pytest.mark.video
@pytest.mark.parametrize("meta", [False, True])
@pytest.mark.parametrize("name", CLIPS)
def test_clip_vectors_recover_bit_exactly(tmp_path, name, meta):
    pytest.importorskip("av")
    from faceveil import video

    v = MANIFEST["vectors"][name]
    out = tmp_path / "back.mkv"
    api.recover_video(VECTORS / v["file"], out, KEY,
                      meta=VECTORS / v["sidecar"] if meta else None)
    digest, frames = hashlib.sha256(), 0
    for _, pixels in video.read_frames(out):
        digest.update(pixels.tobytes())
        frames += 1
    assert frames == v["frames"]
    assert digest.hexdigest() == v["recovered_frames_sha256"]
