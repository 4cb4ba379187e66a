"""Export a training checkpoint's EMA weights as faceveil's built-in model.

Writes a diffusers-style folder (``--dest``, e.g. ``src/faceveil/weights/face64-v3``)::

    model_index.json                      DDPMPipeline: unet + scheduler
    unet/config.json                      UNet2DModel on (48, 16, 16) input
    unet/diffusion_pytorch_model.safetensors   fp16 EMA weights
    scheduler/scheduler_config.json       DDPMScheduler, v_prediction
    faceveil.json                         faceveil's model description

``faceveil.json`` holds the pixel-unshuffle patch size and the crop framing
(mean dlib-68 landmarks of DCGAN faces, see ``framing.py``), the model's id
(``faceveil-`` + the folder's name unless ``--id`` says otherwise) and how the
weights were trained. The export is written to a temporary sibling folder and
swapped in, so a reader never sees a half-written model. A shipped model never
changes under its id: export a new model into a new folder.

Example::

    python training/export.py --checkpoint runs/v3/checkpoint.pt \\
        --dest src/faceveil/weights/face64-v3 \\
        --landmarks-from src/faceveil/weights/face64-v2/faceveil.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import DDPMScheduler, UNet2DModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import framing  # noqa: E402
from train import IMAGE_SIZE, PATCH  # noqa: E402


def faceveil_json(
    checkpoint: dict[str, Any], landmarks68: list[list[float]], model_id: str
) -> dict[str, Any]:
    """Build the ``faceveil.json`` document (schema version 1)."""
    if len(landmarks68) != 68:
        raise ValueError("landmarks68 must hold 68 [u, v] pairs")
    training = {
        "steps": int(checkpoint["step"]),
        "hardware": str(checkpoint["hardware"]),
        "batch_size": int(checkpoint["batch_size"]),
        "seconds": round(float(checkpoint["seconds"]), 1),
    }
    if checkpoint.get("init_from"):
        training["init_from"] = checkpoint["init_from"]
    return {
        "faceveil_model": 1,
        "id": model_id,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH,
        "framing": {"landmarks68": landmarks68},
        "training": training,
    }


def export(
    checkpoint_path: Path,
    dest: Path,
    landmarks68: list[list[float]] | None = None,
    landmark_faces: int = 500,
    dtype: torch.dtype = torch.float16,
    model_id: str | None = None,
) -> dict[str, Any]:
    """Export ``checkpoint_path``'s EMA weights into ``dest``.

    Args:
        checkpoint_path: a ``checkpoint.pt`` written by ``train.py``.
        dest: the model folder to create or replace.
        landmarks68: the framing; measured with :mod:`framing` when None.
        landmark_faces: faces averaged for the framing when measuring it.
        dtype: dtype of the saved UNet weights.
        model_id: the model's id (default ``faceveil-`` + the folder's name).

    Returns:
        The ``faceveil.json`` document written.
    """
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    unet = UNet2DModel(**ckpt["unet_config"])
    unet.load_state_dict(ckpt["ema"])
    unet.to(dtype)
    scheduler = DDPMScheduler.from_config(ckpt["scheduler_config"])
    if scheduler.config.prediction_type != "v_prediction" or scheduler.config.clip_sample:
        raise ValueError("expected a v-prediction schedule without clipping")
    if landmarks68 is None:
        landmarks68 = framing.mean_landmarks68(landmark_faces)
    dest = dest.resolve()
    doc = faceveil_json(ckpt, landmarks68, model_id or f"faceveil-{dest.name}")
    tmp = dest.with_name(dest.name + ".tmp-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    model_index = {
        "_class_name": "DDPMPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    (tmp / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    (tmp / "faceveil.json").write_text(json.dumps(doc, indent=2) + "\n")
    for path in tmp.rglob("*"):  # diffusers writes 0600 files; package data is 0644
        path.chmod(0o755 if path.is_dir() else 0o644)
    old = dest.with_name(dest.name + ".old-export")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    if old.exists():
        shutil.rmtree(old)
    return doc


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description="Export EMA weights as faceveil's built-in model.")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--dest", type=Path, required=True,
                   help="model folder to write, e.g. src/faceveil/weights/face64-v3")
    p.add_argument("--id", help="model id (default: faceveil-<dest folder name>)")
    p.add_argument("--landmark-faces", type=int, default=500)
    p.add_argument(
        "--landmarks-from",
        type=Path,
        help="reuse framing.landmarks68 from an existing faceveil.json instead of measuring",
    )
    p.add_argument("--fp32", action="store_true", help="save fp32 weights instead of fp16")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    landmarks = None
    if args.landmarks_from is not None:
        landmarks = json.loads(args.landmarks_from.read_text())["framing"]["landmarks68"]
    doc = export(
        args.checkpoint,
        args.dest,
        landmarks,
        args.landmark_faces,
        torch.float32 if args.fp32 else torch.float16,
        args.id,
    )
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file())
    print(f"exported step {doc['training']['steps']} to {args.dest} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
