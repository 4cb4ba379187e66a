"""Shared fixtures: tiny models on disk, test images, key files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageFilter

from faceveil import keys

from .tinymodels import make_pixel_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# Runs without --model use the built-in model, whatever default this machine has chosen
# (tests of the default model itself unset it).
os.environ["FACEVEIL_MODEL"] = "builtin"
# As the command line does (faceveil.cli): OpenMP threads wait passively, so test modules
# that load torch before the CLI do not spin on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
FAST_KDF = {"name": "argon2id", "iterations": 1, "lanes": 1, "memory_kib": 64}


@pytest.fixture(scope="session")
def pixel_model(tmp_path_factory):
    return make_pixel_model(tmp_path_factory.mktemp("models") / "tiny-pixel")


def smooth_image(size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))
    return np.array(noise.filter(ImageFilter.GaussianBlur(size / 16)))


def centre_mask(size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    return mask


@pytest.fixture
def face_files(tmp_path):
    """An aligned 32x32 'face', its mask and a key file, as a user would have them."""
    img = tmp_path / "face.png"
    Image.fromarray(smooth_image()).save(img)
    mask = tmp_path / "mask.png"
    Image.fromarray(centre_mask().astype(np.uint8) * 255).save(mask)
    key = tmp_path / "my.key"
    keys.generate_key_file(key)
    return img, mask, key


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((np.asarray(a, float) - np.asarray(b, float)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
