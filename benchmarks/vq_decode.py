"""Which VQ decode makes diffusion recovery most exact: diffusers' ``VQModel.decode`` snaps
latents to the codebook unless ``force_not_quantize=True``.

Usage::

    python benchmarks/vq_decode.py --steps 3                      # the full-size random model
    python benchmarks/vq_decode.py --model ./my-ldm --steps 10    # any VQ model folder

For each way of decoding the anonymized latent (snapped to the codebook, or not) and each
way of decoding the recovered one, one aligned face (``--photo``'s largest) goes through
the paper's procedure as ``--no-lossless`` runs it (keyed mixing, masked context,
``--method``), and back with the same key from the anonymized crop (kept in float, as the
precision residual makes it). Printed: PSNR of the recovered crop against the original
crop through the autoencoder alone (the same decode: the most any recovery can give back
with this model), and against the original crop itself, in dB; and the latent error
of the round trip (RMS of recovered minus original latent).

A random VQModel's codebook is diffusers' initialisation, uniform in +-1/8192: every
latent snaps to about 0 and a snapped decode gives the same picture whatever the latent,
which would make snapping look perfect. So, unless ``--keep-codebook``, the codebook is
first set to latents the encoder makes (every latent vector of the photo's faces and of
the test photos' crops, repeated with jitter to fill it), as a trained codebook covers
its encoder's latents.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from faceveil import api, faces, images, keys  # noqa: E402
from faceveil.diffusion.engine import Engine  # noqa: E402
from faceveil.diffusion.models import load_model  # noqa: E402
from faceveil.pipeline import generate as gen  # noqa: E402
from tests import fullsize  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (clipped, as the pipeline's 8-bit output is)."""
    a, b = a.clamp(-1, 1).double(), b.clamp(-1, 1).double()
    mse = float(((a - b) ** 2).mean()) * 127.5**2
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def fill_codebook(backbone, x: torch.Tensor) -> None:
    """Set a random model's codebook to encoder latents: this face's and those of the
    test photos' centre crops, jittered by a tenth of their spread to fill the book."""
    crops = [x]
    for name in ("group.jpg", "crowd.jpg", "biden.jpg", "astronaut.jpg"):
        p = images.load_image(ROOT / "tests" / "data" / name).pixels
        h, w = p.shape[:2]
        s = backbone.image_size
        if min(h, w) >= s:
            c = p[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
            crops.append(torch.from_numpy(c[None].astype(np.float32)).permute(0, 3, 1, 2)
                         / 127.5 - 1.0)
    vectors = torch.cat([backbone.encode(c).permute(0, 2, 3, 1).reshape(-1, 3)
                         for c in crops])
    book = backbone.vae.quantize.embedding.weight
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(len(vectors), (book.shape[0],), generator=g)
    jitter = torch.randn(book.shape, generator=g) * vectors.std(0) * 0.1
    with torch.no_grad():
        book.copy_(vectors[pick] + jitter)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a VQ model (default: the random full-size)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/faceveil-fullsize"))
    ap.add_argument("--photo", type=Path, default=ROOT / "tests" / "data" / "obama.jpg")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--method", default="plain", choices=["plain", "exact-steps"])
    ap.add_argument("--keep-codebook", action="store_true",
                    help="keep the model's codebook (a trained model's)")
    a = ap.parse_args()
    if a.model is None:
        hub = a.cache / "hf" / "hub"
        if not (hub / ("models--" + fullsize.REPO.replace("/", "--"))).exists():
            fullsize.write_hub_cache(hub)
        os.environ.update(HF_HOME=str(a.cache / "hf"), HF_HUB_OFFLINE="1")
        a.model = str(hub / ("models--" + fullsize.REPO.replace("/", "--")) / "snapshots"
                      / fullsize.COMMIT)
    backbone = load_model(a.model)
    if backbone.vae_kind != "vq":
        raise SystemExit("not a VQ model")
    pixels = images.load_image(a.photo).pixels
    regions, _ = api.find_regions(pixels, model=backbone)
    region = max(regions, key=lambda r: r.box[2] * r.box[3])
    crop = faces.extract(pixels, region.transform, backbone.image_size)
    x = torch.from_numpy(crop[None]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    source = keys.KeySource.from_bytes(bytes(range(32)))
    secret = source.resolve(source.new_params())
    data = [gen.face_data(backbone, region, bytes(16), secret)]
    mask = torch.from_numpy(data[0].latent_mask)[None, None]

    def decode(z: torch.Tensor, snap: bool) -> torch.Tensor:
        with torch.no_grad():
            return backbone.vae.decode(z, force_not_quantize=not snap).sample

    engine = Engine(backbone, steps=a.steps, spacing="leading")
    z0 = backbone.encode(x)
    if not a.keep_codebook:
        fill_codebook(backbone, x)
    print(f"{a.photo.name}, face {region.box[2]} px; {a.steps} {a.method} steps; model "
          f"{backbone.model_id}", flush=True)
    for snap_anon in (True, False):
        radii: list = [None]
        op = gen.key_op(backbone, data, 2, "mixed", targets=[None], radii=radii)
        z_anon = engine.transform(z0, lambda z, op=op: op(z, mask, range(1)), mask,
                                  method=a.method, context="masked").z0
        image = decode(z_anon, snap_anon)  # what the published crop holds (+ residual)
        back_op = gen.key_op(backbone, data, 2, "mixed", radii=radii)
        z_back = engine.transform(backbone.encode(image),
                                  lambda z, op=back_op: op(z, mask, range(1)), mask,
                                  method=a.method, context="masked").z0
        err = float(((z_back - z0) ** 2).mean().sqrt())
        for snap_rec in (True, False):
            back = decode(z_back, snap_rec)
            print(f"anonymized decode {'snapped' if snap_anon else 'not snapped'}, recovered "
                  f"decode {'snapped' if snap_rec else 'not snapped'}: PSNR vs the original "
                  f"through the autoencoder {psnr(back, decode(z0, snap_rec)):.2f} dB, vs the "
                  f"original crop {psnr(back, x):.2f} dB; latent RMS error {err:.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
