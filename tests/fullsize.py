"""A random-weight model with the exact architecture of ``CompVis/ldm-celebahq-256``, laid
out as Hugging Face keeps a downloaded snapshot (no network).

The configs are the hub's, field by field (https://huggingface.co/CompVis/ldm-celebahq-256,
files ``unet/config.json``, ``vqvae/config.json``, ``scheduler/scheduler_config.json`` and
``model_index.json``). A field the hub's file does not set is the default of the diffusers
class that reads it (diffusers 0.42: ``UNet2DModel``, ``VQModel``, ``DDIMScheduler``),
written out so the folder states the whole architecture. Like the hub, ``unet/`` and
``vqvae/`` hold only ``diffusion_pytorch_model.bin`` (torch pickles), here in fp16 to halve
the writing: faceveil loads them as fp32 whatever the file's dtype.

Used by the full-size tests (``tests/test_fullsize.py``) and the benchmarks that time the
full-size model (``benchmarks/fullsize.py``, ``benchmarks/gpu.py --model fullsize``).
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = "CompVis/ldm-celebahq-256"
COMMIT = "c4a8f63e5a0e46a9a8d5ab4c49e65d0b31ad4d40"  # any 40 hex digits: a snapshot's name

# unet/config.json on the hub: every key below down to "up_block_types" is in that file;
# the rest are UNet2DModel's defaults (diffusers 0.42), which the hub file leaves implied.
UNET = {
    "_class_name": "UNet2DModel",
    "act_fn": "silu",
    "attention_head_dim": 32,
    "block_out_channels": [224, 448, 672, 896],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                         "AttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 64,
    "time_embedding_type": "positional",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    # diffusers' defaults
    "mid_block_type": "UNetMidBlock2D",
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "attn_norm_num_groups": None,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "time_embedding_dim": None,
    "num_train_timesteps": None,
}

# vqvae/config.json on the hub, then VQModel's defaults for what it leaves out.
VQVAE = {
    "_class_name": "VQModel",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "in_channels": 3,
    "latent_channels": 3,
    "layers_per_block": 2,
    "num_vq_embeddings": 8192,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    # diffusers' defaults
    "norm_num_groups": 32,
    "vq_embed_dim": None,
    "scaling_factor": 0.18215,
    "norm_type": "group",
    "mid_block_add_attention": True,
    "lookup_from_codebook": False,
    "force_upcast": False,
}

# scheduler/scheduler_config.json on the hub (the CompVis LDM's linear_start/linear_end,
# scaled_linear), then DDIMScheduler's defaults.
SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.0015,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": True,
    "trained_betas": None,
    # diffusers' defaults
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "thresholding": False,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}

MODEL_INDEX = {
    "_class_name": "LDMPipeline",
    "unet": ["diffusers", "UNet2DModel"],
    "vqvae": ["diffusers", "VQModel"],
    "scheduler": ["diffusers", "DDIMScheduler"],
}

# What the hub's model card and files give: 274.1M UNet and 55.3M VQ parameters.
UNET_PARAMETERS = 274_056_163
VQVAE_PARAMETERS = 55_322_782


def write_snapshot(folder: Path, seed: int = 0) -> Path:
    """Write the random-weight model into ``folder`` (created); return it."""
    import torch
    from diffusers import UNet2DModel, VQModel

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
    torch.manual_seed(seed)
    for name, cls, config in (("unet", UNet2DModel, UNET), ("vqvae", VQModel, VQVAE)):
        module = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.half() if v.is_floating_point() else v
                 for k, v in module.state_dict().items()}
        torch.save(state, folder / name / "diffusion_pytorch_model.bin")
        del module, state
    return folder


def write_hub_cache(hub_cache: Path, seed: int = 0) -> Path:
    """Lay the model out under ``hub_cache`` (what ``HF_HUB_CACHE`` names, i.e.
    ``$HF_HOME/hub``) as huggingface_hub keeps a downloaded snapshot of :data:`REPO`;
    return the snapshot folder."""
    root = hub_cache / ("models--" + REPO.replace("/", "--"))
    folder = write_snapshot(root / "snapshots" / COMMIT, seed)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    return folder
