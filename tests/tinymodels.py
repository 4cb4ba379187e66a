"""Small models for tests: an exactly solvable Gaussian denoiser and tiny diffusers folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": False,
    "prediction_type": "epsilon",
}


class GaussianDenoiser:
    """The optimal predictor for data x ~ N(mu, s^2 I), per element.

    With z_t = sqrt(a) x + sqrt(1-a) e, E[e | z_t] = sqrt(1-a) (z_t - sqrt(a) mu) / sigma^2
    where sigma^2 = a s^2 + 1 - a. The probability-flow ODE keeps the standardized
    value (z - sqrt(a) mu) / sigma constant; every discrete DDIM step is an affine map
    with a closed form too (:meth:`true_noise`), so inversion has an exact truth.
    """

    def __init__(self, mu: float = 0.3, s: float = 0.5, prediction_type: str = "epsilon"):
        from diffusers import DDPMScheduler

        self.mu, self.s = mu, s
        self.prediction_type = prediction_type
        self.scheduler_config = dict(SCHEDULER, prediction_type=prediction_type)
        self.alphas_cumprod = DDPMScheduler.from_config(SCHEDULER).alphas_cumprod.double()
        self.calls = 0

    def predict(self, z: torch.Tensor, t: int) -> torch.Tensor:
        self.calls += 1
        a = float(self.alphas_cumprod[t])
        var = a * self.s**2 + 1 - a
        eps = math.sqrt(1 - a) * (z - math.sqrt(a) * self.mu) / var
        x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "v_prediction":
            return math.sqrt(a) * eps - math.sqrt(1 - a) * x0
        return x0

    def true_noise(self, x: torch.Tensor, alphas: tuple[float, ...]) -> torch.Tensor:
        """The exact noise from which the discrete DDIM chain over ``alphas`` (clean
        level first) denoises to ``x``.

        One DDIM step from level t to s maps d_t = z_t - sqrt(a_t) mu to
        d_s = g d_t with g = (s^2 sqrt(a_s a_t) + sqrt((1-a_s)(1-a_t))) / sigma_t^2,
        so d_T = (x - mu) / prod(g).
        """
        d = x - self.mu
        for a_s, a_t in zip(alphas, alphas[1:]):
            var = a_t * self.s**2 + 1 - a_t
            d = d * var / (self.s**2 * math.sqrt(a_s * a_t) + math.sqrt((1 - a_s) * (1 - a_t)))
        return math.sqrt(alphas[-1]) * self.mu + d


def _save_scheduler(folder: Path, **overrides) -> None:
    from diffusers import DDPMScheduler

    DDPMScheduler.from_config(dict(SCHEDULER, **overrides)).save_pretrained(folder / "scheduler")


def _index(folder: Path, cls: str, **components) -> None:
    index = {"_class_name": cls, "_diffusers_version": "0.42.1",
             "scheduler": ["diffusers", "DDPMScheduler"]}
    index.update({k: ["diffusers", v] for k, v in components.items()})
    (folder / "model_index.json").write_text(json.dumps(index))


def _tiny_unet(in_channels: int, sample_size: int, seed: int, out_scale: float = 0.05):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    # A random network's output is large and wild; scaled down it behaves like a smooth
    # (if useless) denoiser, so inversion errors stay those of the method.
    with torch.no_grad():
        unet.conv_out.weight.mul_(out_scale)
        unet.conv_out.bias.zero_()
    return unet


def make_pixel_model(folder: Path, *, size: int = 32, patch: int = 2, seed: int = 0,
                     prediction_type: str = "v_prediction", framing: dict | None = None) -> Path:
    """A tiny pixel-space model (pixel patches folded into channels, like the built-in one)."""
    folder.mkdir(parents=True, exist_ok=True)
    _tiny_unet(3 * patch * patch, size // patch, seed).save_pretrained(folder / "unet")
    _save_scheduler(folder, prediction_type=prediction_type)
    _index(folder, "DDPMPipeline", unet="UNet2DModel")
    extra = {"faceveil_model": 1, "id": f"tiny-pixel-{seed}", "image_size": size,
             "patch_size": patch}
    if framing:
        extra["framing"] = framing
    (folder / "faceveil.json").write_text(json.dumps(extra))
    return folder


def make_latent_model(folder: Path, *, kind: str = "vq", size: int = 32, seed: int = 0) -> Path:
    """A tiny LDM-style model: VQModel or AutoencoderKL (factor 2) + UNet2DModel."""
    from diffusers import AutoencoderKL, VQModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    common = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
                  norm_num_groups=8, latent_channels=3,
                  down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2)
    if kind == "vq":
        vae, name, cls = VQModel(num_vq_embeddings=64, **common), "vqvae", "VQModel"
    else:
        vae, name, cls = AutoencoderKL(**common), "vae", "AutoencoderKL"
    vae.save_pretrained(folder / name)
    _tiny_unet(3, size // 2, seed).save_pretrained(folder / "unet")
    _save_scheduler(folder)
    _index(folder, "LDMPipeline", unet="UNet2DModel", **{name: cls})
    return folder


def make_sd_model(folder: Path, *, size: int = 32, seed: int = 0) -> Path:
    """A tiny Stable-Diffusion-layout model: AutoencoderKL + UNet2DConditionModel + CLIP."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        norm_num_groups=8, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).save_pretrained(folder / "vae")
    unet = UNet2DConditionModel(
        sample_size=size // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.05)
        unet.conv_out.bias.zero_()
    unet.save_pretrained(folder / "unet")
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
        vocab[ch] = 2 + 2 * i
        vocab[ch + "</w>"] = 3 + 2 * i
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                  model_max_length=8).save_pretrained(tok_dir)
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
        pad_token_id=1,
    )).save_pretrained(folder / "text_encoder")
    _save_scheduler(folder, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                    steps_offset=1, set_alpha_to_one=False)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
             "scheduler": ["diffusers", "DDPMScheduler"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder
