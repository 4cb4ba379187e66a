"""A pixel-space model's UNet through onnxruntime: no torch, no diffusers.

A model folder may hold ``unet.onnx``, the graph of its UNet exported from diffusers
without weights (``training/onnx_graph.py`` writes it; the built-in face64-v2 ships
one). Loading reads the weights from the folder's safetensors, as fp32 like torch
loads them, gives them to onnxruntime as the graph's initializers and hashes them as
:func:`faceveil.diffusion.models.weights_hash` does, so a file records the same model
identity whichever runtime made it, and the graph must name that hash. The graph also
carries the training schedule's ``alphas_cumprod`` as diffusers computed them at export,
so the DDIM chain is built without diffusers
(:func:`faceveil.diffusion.engine.make_schedule`).

Why: the built-in model's default path then starts in about a third of the time
(``import torch`` and diffusers take about 6 s on a 2-core CPU, onnxruntime 0.35 s), and
each call is faster too (``benchmarks/cli_speed.py``, ``benchmarks/model_calls.py``).
Its numerics differ from torch's by rounding (about 1e-6 per call), so it only makes
faces that come back from their sealed originals, never faces a recovery runs the model
back on (:func:`faceveil.diffusion.backends.get_model` decides).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .hub import FACEVEIL_JSON_HELP, faceveil_json, model_record, read_json

GRAPH = "unet.onnx"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
# Metadata keys of the graph, written by training/onnx_graph.py.
META_SHA256 = "faceveil.weights_sha256"
META_ALPHAS = "faceveil.alphas_cumprod"
META_FINAL_ALPHA = "faceveil.final_alpha_cumprod"
THREADS_ENV = "FACEVEIL_THREADS"


def has_graph(folder: Path) -> bool:
    """Whether a model folder holds an onnxruntime graph of its UNet."""
    return (folder / GRAPH).is_file() and (folder / WEIGHTS).is_file()


def weights_hash(weights: dict[str, np.ndarray]) -> str:
    """:func:`faceveil.diffusion.models.weights_hash` of one module whose state dict is
    ``weights`` (fp32 arrays by name), computed without torch."""
    h = hashlib.sha256()
    for name in sorted(weights):
        t = np.ascontiguousarray(weights[name])
        if t.dtype != np.float32:
            raise ModelError(f"weight {name!r} is {t.dtype}, not float32")
        h.update(f"0:{name}:torch.float32:{tuple(t.shape)}\n".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def pixel_unshuffle(x: np.ndarray, r: int) -> np.ndarray:
    """``torch.nn.functional.pixel_unshuffle``: (B, C, H, W) -> (B, C r r, H/r, W/r)."""
    b, c, h, w = x.shape
    return (x.reshape(b, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
            .reshape(b, c * r * r, h // r, w // r))


def pixel_shuffle(z: np.ndarray, r: int) -> np.ndarray:
    """``torch.nn.functional.pixel_shuffle``, the inverse of :func:`pixel_unshuffle`."""
    b, c, h, w = z.shape
    return (z.reshape(b, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
            .reshape(b, c // (r * r), h * r, w * r))


def session_options(threads: int | None = None):
    """onnxruntime's options for the UNet: threads that sleep while they wait (spinning
    ones took one call from 27 to 53 ms on a busy 2-core CPU), and as many threads as
    ``threads``, ``$FACEVEIL_THREADS`` or onnxruntime's default (the physical cores)."""
    from ..offline import onnxruntime

    ort = onnxruntime()

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    threads = threads or int(os.environ.get(THREADS_ENV) or 0)
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # no warnings on stderr
    return options


@dataclass
class OnnxBackbone:
    """A pixel-space diffusion model run by onnxruntime on the CPU: what the engine and
    the pipeline need of a :class:`faceveil.diffusion.models.Backbone` (geometry,
    identity, ``encode``/``decode``/``predict``), on numpy arrays."""

    session: Any
    scheduler_config: dict
    reference: dict
    patch_size: int
    latent_channels: int
    latent_size: int
    ddim_alphas: tuple[tuple[float, ...], float]  # the DDIM chain's, from the graph
    framing: dict | None = None
    model_id: str = ""
    sha256: str = ""
    extra: dict = field(default_factory=dict)
    weights: list = field(default_factory=list, repr=False)  # alive as long as the session

    runtime = "onnx"
    vae = None
    device = "cpu"
    dtype = np.float32

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def scale_factor(self) -> int:
        return self.patch_size

    @property
    def image_size(self) -> int:
        return self.latent_size * self.patch_size

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)

    def from_numpy(self, a: np.ndarray) -> np.ndarray:
        """An array as this backbone computes with it (numpy already)."""
        return np.asarray(a)

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        """A result as a float32 numpy array."""
        return np.asarray(x, np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Images in [-1, 1], (B, 3, S, S) -> latents (B, C, s, s): pixel patches."""
        x = np.asarray(x, np.float32)
        return pixel_unshuffle(x, self.patch_size) if self.patch_size > 1 else x

    def decode(self, z: np.ndarray) -> np.ndarray:
        return pixel_shuffle(z, self.patch_size) if self.patch_size > 1 else z

    def predict(self, z: np.ndarray, t: int) -> np.ndarray:
        """The network's output at integer timestep ``t`` for a batch of latents."""
        z = np.ascontiguousarray(z, np.float32)
        out = self.session.run(None, {"z": z, "t": np.full(z.shape[0], t, np.int64)})[0]
        return out[:, : z.shape[1]]

    def describe(self) -> dict:
        """The model record stored in a file: reference, identity and geometry."""
        return model_record(self)


def load(folder: Path, reference: dict, threads: int | None = None) -> OnnxBackbone:
    """The model in ``folder`` through its ``unet.onnx`` (see :func:`has_graph`)."""
    from safetensors.numpy import load_file

    from ..offline import onnxruntime

    ort = onnxruntime()

    config = read_json(folder / "unet" / "config.json")
    extra = faceveil_json(folder)
    patch = int(extra.get("patch_size", 1))
    sample = config.get("sample_size")
    sample = sample if isinstance(sample, int) else sample[0]
    if config.get("in_channels") != 3 * patch * patch:
        raise ModelError(f"{str(folder)!r}: its UNet takes {config.get('in_channels')} "
                         f"channels, not 3 x {patch} x {patch} pixels: {FACEVEIL_JSON_HELP}")
    try:
        stored = load_file(str(folder / WEIGHTS))
    except Exception as e:  # noqa: BLE001 - any unreadable file says the same
        raise ModelError(f"cannot read {str(folder / WEIGHTS)!r}: {e}") from None
    # fp16 (or fp32) on disk, fp32 in use, as torch's from_pretrained loads them.
    weights = {name: np.ascontiguousarray(a, np.float32) for name, a in stored.items()}
    sha256 = weights_hash(weights)
    options = session_options(threads)
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()]
    options.add_external_initializers(list(weights), values)
    try:
        session = ort.InferenceSession(str(folder / GRAPH), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several kinds
        raise ModelError(f"cannot load {str(folder / GRAPH)!r}: {e}") from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get(META_SHA256) != sha256:
        raise ModelError(f"{str(folder / GRAPH)!r} was exported for other weights than "
                         f"{str(folder / WEIGHTS)!r} (sha256 {sha256[:16]}...): export it "
                         "again (training/onnx_graph.py) or reinstall faceveil")
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
    reference = reference or {"path": str(folder.resolve())}
    return OnnxBackbone(
        session=session, scheduler_config=scheduler, reference=reference, patch_size=patch,
        latent_channels=int(config["in_channels"]), latent_size=int(sample),
        ddim_alphas=(tuple(json.loads(meta[META_ALPHAS])), float(meta[META_FINAL_ALPHA])),
        framing=extra.get("framing"),
        model_id=(extra.get("id") or reference.get("preset") or folder.name), sha256=sha256,
        extra=extra, weights=values)
