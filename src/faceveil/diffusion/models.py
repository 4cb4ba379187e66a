"""Diffusion backbones: loading, presets, the built-in model, weight identity.

A :class:`Backbone` turns images into latents and back (``encode``/``decode``),
predicts with its network (``predict``), and carries what a file must record to find
it again: a loadable :attr:`Backbone.reference` and a SHA-256 of its weights.

Supported layouts, loaded with diffusers' ``from_pretrained`` from a Hugging Face id
or a local folder written by ``save_pretrained`` (``model_index.json`` plus one
subfolder per component):

* pixel space: ``unet`` (``UNet2DModel``) + ``scheduler``; an optional
  ``faceveil.json`` can fold ``patch_size`` x ``patch_size`` pixel patches into
  channels (the built-in model) and declare the crop framing the model expects;
* latent (CompVis LDM CelebA-HQ/FFHQ 256): ``vqvae`` (``VQModel``) or ``vae``
  (``AutoencoderKL``) + ``unet`` (``UNet2DModel``) + ``scheduler``;
* Stable Diffusion 1.x/2.x: ``vae`` + ``unet`` (``UNet2DConditionModel``) +
  ``text_encoder``/``tokenizer`` (needs ``pip install 'faceveil[sd]'``), used with
  the empty prompt and no guidance: the prompt embedding is computed once.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError, ModelError
from .hub import (
    FACEVEIL_JSON_HELP,
    PRESETS,
    faceveil_json,
    hub_revision,
    locate,
    model_record,
    parse_reference,
    read_json,
    verify_pulled,
)


def weights_hash(*modules: torch.nn.Module | None) -> str:
    """SHA-256 over the named tensors (name, dtype, shape, bytes) of the given modules."""
    h = hashlib.sha256()
    for m_index, module in enumerate(modules):
        if module is None:
            continue
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{m_index}:{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Backbone:
    """A loaded diffusion model, as the engine and the API see it."""

    unet: torch.nn.Module
    scheduler_config: dict
    reference: dict
    vae: torch.nn.Module | None = None
    vae_kind: str | None = None  # "vq" | "kl" | None (pixel space)
    patch_size: int = 1
    prompt_embedding: torch.Tensor | None = None
    framing: dict | None = None
    model_id: str = ""
    sha256: str = ""
    extra: dict = field(default_factory=dict)
    # The network call in use: the eager one, or a CUDA-graphed/compiled one (accelerate).
    fast_call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = field(
        default=None, init=False, repr=False)
    acceleration: dict = field(default_factory=dict, init=False)
    # None: the weights' own dtype. bfloat16: every network, encoder and decoder call
    # autocast to it (:meth:`fast_numerics`; only where no recovery runs the model back).
    autocast: torch.dtype | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        sample = self.unet.config.sample_size
        sample = sample if isinstance(sample, int) else sample[0]
        self.latent_channels = self.unet.config.in_channels
        self.latent_size = sample
        self.image_size = sample * self.scale_factor
        if not self.sha256:
            self.sha256 = weights_hash(self.unet, self.vae)

    @property
    def scale_factor(self) -> int:
        """Image pixels per latent pixel along one side."""
        if self.vae is not None:
            return 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.patch_size

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)

    def to(self, device: str | torch.device) -> Backbone:
        self.fast_call, self.acceleration = None, {}  # captured graphs belong to a device
        for m in (self.unet, self.vae, self.prompt_embedding):
            if m is not None:
                m.to(device)
        if self.prompt_embedding is not None:
            self.prompt_embedding = self.prompt_embedding.to(device)
        return self

    def fast_numerics(self) -> Backbone:
        """This model for a run whose faces come back only from their sealed originals,
        so its numerics need not be the exact ones diffusion recovery runs back: on a CPU
        with native bfloat16 (AMX or AVX-512 BF16) a copy whose calls are autocast to
        bfloat16 (same weights, shared; measured 2.3x faster a UNet call on the full-size
        latent model, docs/measured.md), elsewhere this model as it is."""
        if self.device.type != "cpu" or self.autocast is not None or not _cpu_bf16():
            return self
        fast = copy.copy(self)
        fast.autocast = torch.bfloat16
        return fast

    def exact_numerics(self) -> Backbone:
        """This model with its weights' own numerics (what diffusion recovery needs)."""
        if self.autocast is None:
            return self
        exact = copy.copy(self)
        exact.autocast = None
        return exact

    def _numerics(self) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        # No cache of cast weights: the same speed, and no second copy of the weights
        # (measured: peak 2.08 against 2.74 GB with the cache, 2.13 GB in float32).
        return torch.autocast(self.device.type, dtype=self.autocast, cache_enabled=False)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (B, 3, S, S) -> clean latents (B, C, s, s)."""
        x = x.to(device=self.device, dtype=self.dtype)
        if self.vae_kind is None:
            return F.pixel_unshuffle(x, self.patch_size) if self.patch_size > 1 else x
        with self._numerics():
            if self.vae_kind == "vq":
                z = self.vae.encode(x).latents
            else:
                # The posterior mean, not a sample: encoding must be deterministic.
                z = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        return z.to(self.dtype)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Clean latents -> images in (about) [-1, 1]; never clipped here."""
        if self.vae_kind is None:
            return F.pixel_shuffle(z, self.patch_size) if self.patch_size > 1 else z
        with self._numerics():
            if self.vae_kind == "vq":
                x = self.vae.decode(z).sample
            else:
                x = self.vae.decode(z / self.vae.config.scaling_factor).sample
        return x.to(self.dtype)

    # no_grad, not inference_mode: measured the same speed (33.6 vs 33.2 ms a call,
    # interleaved), and inference tensors would forbid the engine in-place updates.
    @torch.no_grad()
    def predict(self, z: torch.Tensor, t: int) -> torch.Tensor:
        return self.predict_steps(z, torch.full((z.shape[0],), t, device=z.device,
                                                dtype=torch.long))

    @torch.no_grad()
    def predict_steps(self, z: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The network's output for a batch whose samples may sit at different timesteps
        (one per sample): lets the engine share one call between two chains."""
        call = self.fast_call or self.network_call
        with self._numerics():
            out = call(z, timesteps.to(device=z.device, dtype=torch.long))
        # Models with a learned variance output 2C channels; the first C are the mean.
        return out[:, : z.shape[1]].to(z.dtype)

    def network_call(self, z: torch.Tensor, timestep: torch.Tensor,
                     unet: Callable | None = None) -> torch.Tensor:
        """One plain network evaluation (what CUDA graphs capture; ``unet``: a compiled
        copy of :attr:`unet` to call instead)."""
        unet = unet or self.unet
        if self.prompt_embedding is not None:
            cond = self.prompt_embedding.expand(z.shape[0], -1, -1)
            return unet(z, timestep, encoder_hidden_states=cond).sample
        return unet(z, timestep).sample

    def accelerate(self, *, cuda_graphs: bool = True, compile: bool = False,
                   tf32: bool = False) -> Backbone:
        """Opt-in fast paths for the network call on a CUDA device; a no-op elsewhere
        (see :func:`faceveil.diffusion.accelerate.accelerate`)."""
        from .accelerate import accelerate

        return accelerate(self, cuda_graphs=cuda_graphs, compile=compile, tf32=tf32)

    def latent_mask(self, pixel_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) boolean pixel mask -> (B, 1, s, s): a latent cell is inside
        when any of its pixels is."""
        k = self.scale_factor
        m = pixel_mask.to(torch.float32)
        return (F.max_pool2d(m, k) > 0) if k > 1 else m > 0

    def describe(self) -> dict:
        """The model record stored in a file: reference, identity and geometry."""
        return model_record(self)


def _cpu_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AMX tiles or AVX-512 BF16): where
    it does not, autocast to bfloat16 is slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


# The scheduler of the CompVis latent diffusion models (LDM CelebA-HQ and FFHQ 256): what
# a folder in the authors' ffhq-diffusers layout (unet/ and vqvae/, no scheduler) uses.
LDM_SCHEDULER = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000,
                 "beta_start": 0.0015, "beta_end": 0.0195, "beta_schedule": "scaled_linear",
                 "clip_sample": False, "prediction_type": "epsilon"}


def _index(folder: Path) -> dict:
    """A folder's components: its ``model_index.json``, or, for a folder without one
    (the authors' ``ffhq-diffusers`` layout: ``unet/`` and ``vqvae/`` or ``vae/``, each
    a ``save_pretrained`` folder), the class each subfolder's ``config.json`` names. A
    folder without ``scheduler/`` gets :data:`LDM_SCHEDULER` when it has a ``vqvae/``."""
    if (folder / "model_index.json").exists():
        index = read_json(folder / "model_index.json")
    else:
        index = {}
        for name in ("unet", "vqvae", "vae"):
            config = folder / name / "config.json"
            if config.exists():
                index[name] = ["diffusers", read_json(config).get("_class_name")]
        if "unet" not in index:
            raise ModelError(f"{str(folder)!r} is not a diffusion model folder (no "
                             "model_index.json, no unet/config.json)")
    if "unet" not in index:
        raise ModelError(f"{str(folder)!r} has no unet: not a diffusion model folder")
    if not (folder / "scheduler" / "scheduler_config.json").exists() and "vqvae" not in index:
        raise ModelError(f"{str(folder)!r} has no scheduler/scheduler_config.json")
    return index


def _component(folder: Path, index: dict, name: str, dtype: torch.dtype):
    import diffusers

    diffusers.utils.logging.set_verbosity_error()

    library, class_name = index[name]
    cls = getattr(diffusers, class_name, None)
    if library != "diffusers" or cls is None:
        raise ModelError(f"component {name!r} has unsupported class {library}.{class_name}")
    # diffusers tries safetensors first and logs an error when a folder has only .bin
    # weights (CompVis/ldm-celebahq-256's unet/), although the load then succeeds.
    weights = sorted(p for p in (folder / name).glob("*") if p.suffix in (".safetensors", ".bin"))
    safetensors = any(p.suffix == ".safetensors" for p in weights)
    try:
        # low_cpu_mem_usage needs accelerate, which faceveil does not require.
        return cls.from_pretrained(folder, subfolder=name, torch_dtype=dtype,
                                   low_cpu_mem_usage=False,
                                   use_safetensors=safetensors or not weights).eval()
    except Exception as e:
        used = [p for p in weights if p.suffix == ".safetensors" or not safetensors]
        files = ", ".join(repr(str(p)) for p in used) or repr(str(folder / name))
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelError(f"cannot load {name!r} from {files} (damaged, truncated or not "
                         f"diffusers weights: {reason}); fetch it again (`faceveil models "
                         "pull NAME` for a pulled model)") from None


@torch.no_grad()
def _empty_prompt_embedding(folder: Path, dtype: torch.dtype):
    try:
        import transformers
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise ModelError(
            "Stable Diffusion models need transformers: pip install 'faceveil[sd]'"
        ) from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    except Exception as e:
        raise ModelError(f"cannot load the text encoder from {str(folder)!r}: {e}") from None
    ids = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    return encoder(ids)[0].to(dtype), encoder


def _check_pixel_layout(folder: Path, unet: torch.nn.Module, extra: dict) -> None:
    """A pixel-space UNet must take RGB pixels, or RGB patches folded as faceveil.json says."""
    patch = int(extra.get("patch_size", 1))
    channels, sample = unet.config.in_channels, unet.config.sample_size
    sample = sample if isinstance(sample, int) else sample[0]
    if channels == 3 * patch * patch and extra.get("image_size", sample * patch) == sample * patch:
        return
    if not extra:
        raise ModelError(
            f"{str(folder)!r} has no faceveil.json, and its UNet takes {channels} channels "
            f"at {sample}x{sample}: faceveil cannot tell how they map to pixels; "
            + FACEVEIL_JSON_HELP
        )
    raise ModelError(
        f"{str(folder / 'faceveil.json')!r} does not fit the UNet (patch_size {patch}, "
        f"image_size {extra.get('image_size')}; the UNet takes {channels} channels at "
        f"{sample}x{sample}): {FACEVEIL_JSON_HELP}"
    )


def load_folder(folder: str | os.PathLike, reference: dict | None = None,
                dtype: torch.dtype = torch.float32) -> Backbone:
    """Load a diffusers model folder as a :class:`Backbone`.

    Weights stored in fp16 or fp32 load alike (as ``dtype``); the identity hash is taken
    of the loaded tensors, so the same values hash the same whatever the file's dtype.
    """
    folder = Path(folder)
    index = _index(folder)
    extra = faceveil_json(folder)
    unet = _component(folder, index, "unet", dtype)
    scheduler = folder / "scheduler" / "scheduler_config.json"
    scheduler_config = read_json(scheduler) if scheduler.exists() else dict(LDM_SCHEDULER)

    vae, vae_kind = None, None
    for name, kind in (("vqvae", "vq"), ("vae", "kl")):
        if name in index and index[name][0] is not None:
            vae, vae_kind = _component(folder, index, name, dtype), kind
            if kind == "kl" and type(vae).__name__ == "VQModel":
                vae_kind = "vq"
            break

    prompt, text_encoder = None, None
    if type(unet).__name__ == "UNet2DConditionModel":
        if vae is None:
            raise ModelError(f"{str(folder)!r}: a conditional UNet needs a vae")
        prompt, text_encoder = _empty_prompt_embedding(folder, dtype)
    elif type(unet).__name__ != "UNet2DModel":
        raise ModelError(f"unsupported UNet class {type(unet).__name__}")
    if vae is None:
        _check_pixel_layout(folder, unet, extra)

    reference = reference or {"path": str(folder.resolve())}
    model_id = extra.get("id") or reference.get("hub") or reference.get("preset") or folder.name
    backbone = Backbone(
        unet=unet,
        scheduler_config=scheduler_config,
        reference=reference,
        vae=vae,
        vae_kind=vae_kind,
        patch_size=int(extra.get("patch_size", 1)),
        prompt_embedding=prompt,
        framing=extra.get("framing"),
        model_id=model_id,
        # The text encoder shapes the prompt embedding, so it is part of the identity.
        sha256=weights_hash(unet, vae, text_encoder),
        extra=extra,
    )
    return backbone


def load_model(
    spec: str | dict | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    expect_sha256: str | None = None,
) -> Backbone:
    """Load a model by preset name, folder, hub id (``owner/name[@revision]``) or
    stored reference; refuse weights whose hash differs from ``expect_sha256``."""
    reference = spec if isinstance(spec, dict) else parse_reference(spec)
    folder = locate(reference)
    preset = PRESETS.get(reference.get("preset", ""))
    on_hub = "hub" in reference or (preset is not None and preset.repo)
    if on_hub and not reference.get("revision"):
        # Record the exact snapshot, so recovery finds the same weights.
        reference = {**reference, "revision": hub_revision(folder)}
    backbone = load_folder(folder, reference, dtype)
    if on_hub:
        verify_pulled(folder, backbone.sha256)
    if expect_sha256 and backbone.sha256 != expect_sha256:
        raise ModelError(
            f"the model at {str(folder)!r} is not the one this file was made with "
            f"(weights sha256 {backbone.sha256[:16]}..., file expects {expect_sha256[:16]}...); "
            "use --model to point to the original weights"
        )
    backbone.to(device)
    from .accelerate import acceleration_from_env

    options = acceleration_from_env()
    return backbone.accelerate(**options) if options is not None else backbone


# ---------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------


def resolve_device(device: str | None) -> str:
    """The torch device ``device`` names (auto: cuda when torch can use it, else cpu)."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device} was asked for, but this machine has no CUDA "
                         f"device torch can use (torch {torch.__version__}); use --device cpu")
    return device
