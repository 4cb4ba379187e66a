"""Which runtime runs a model, and one loaded model per reference, per process.

Two runtimes: torch (:mod:`faceveil.diffusion.models`, through diffusers: every model,
any device, the numerics diffusion recovery was made with) and onnxruntime
(:mod:`faceveil.diffusion.onnx`: a pixel-space model whose folder holds its UNet's
graph, the built-in face64-v2 among them, on the CPU; no torch or diffusers to import,
faster calls, numerics that differ by rounding). This module imports neither: it is
what the pipeline, the API and the command line ask for a model.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import InputError, MissingExtraError, ModelError
from .hub import locate, parse_reference, reference_name

if TYPE_CHECKING:
    from ..options import Options
    from .models import Backbone
    from .onnx import OnnxBackbone

BACKENDS = ("auto", "torch", "onnx")


def gpu_present() -> bool:
    """Whether this machine shows a GPU torch could use (an NVIDIA or AMD device, or
    ``nvidia-smi``), found without importing torch."""
    return (any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
            or shutil.which("nvidia-smi") is not None)


def require_torch(what: str) -> None:
    """Raise :class:`MissingExtraError` (exit status 5, naming ``faceveil[models]``) when
    torch or diffusers cannot be imported: the light install has neither."""
    for module in ("torch", "diffusers"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtraError(what, module) from None


def backend_for(options: Options) -> str:
    """The backend a run with ``options`` may use: torch wherever a recovery could run
    the model back on its faces (their numerics must then be torch's, bit for bit), else
    ``options.runtime.backend``. ``--backend onnx`` where torch is needed is an error,
    never a silent switch."""
    backend = options.runtime.backend
    if not options.sampler.diffusion_recoverable:
        return backend
    if backend == "onnx":
        raise InputError("--backend onnx changes the model's numerics by rounding, so it only "
                         "makes faces recovered from their sealed originals; files recovered "
                         "by diffusion (--no-lossless, --deniable, exact or plain methods) "
                         "need --backend torch or auto")
    return "torch"


def runtime_of(backbone: Any) -> str:
    """"onnx" or "torch": which runtime a loaded backbone runs on."""
    return getattr(backbone, "runtime", "torch")


def _onnx_folder(reference: dict, device: str | None):
    """The folder of a model onnxruntime can run here (a built-in or local pixel-space
    model with a graph, on the CPU), or None."""
    from .onnx import has_graph

    if "hub" in reference or device not in (None, "auto", "cpu"):
        return None
    if device != "cpu" and gpu_present():
        return None  # auto picks the GPU, through torch
    try:
        folder = locate(reference)
    except ModelError:
        return None
    return folder if has_graph(folder) else None


@lru_cache(maxsize=4)
def cached_torch(reference_json: str, device: str, expect: str | None) -> Backbone:
    """The torch backbone of a reference on a device, loaded once per process."""
    from .models import load_model

    return load_model(json.loads(reference_json), device=device, expect_sha256=expect)


@lru_cache(maxsize=4)
def cached_onnx(reference_json: str, expect: str | None) -> OnnxBackbone:
    """The onnxruntime backbone of a reference, loaded once per process."""
    from .onnx import load

    reference = json.loads(reference_json)
    backbone = load(locate(reference), reference)
    _check(backbone, expect)
    return backbone


def _check(backbone: Any, expect_sha256: str | None) -> None:
    if expect_sha256 and backbone.sha256 != expect_sha256:
        raise ModelError(
            "the model is not the one this file was made with (weights sha256 "
            f"{backbone.sha256[:16]}..., file expects {expect_sha256[:16]}...); use --model "
            "to point to the original weights")


def get_model(model: Any = None, device: str | None = None, expect_sha256: str | None = None,
              backend: str = "torch") -> Any:
    """A loaded backbone for a preset, folder, hub id or reference (cached per process),
    or the loaded backbone given.

    ``backend``: "torch" (diffusers, bit for bit what diffusion recovery needs; given an
    onnxruntime backbone, the torch one of the same reference), "onnx" (onnxruntime;
    :class:`ModelError` for a model without a graph or off the CPU), or "auto" (onnx
    where the model has a graph and runs on the CPU, else torch with the fast numerics
    of :meth:`~faceveil.diffusion.models.Backbone.fast_numerics`). Only faces that come
    back from their sealed originals may use onnx or fast numerics: the caller decides
    (:func:`faceveil.api.get_model`, :func:`backend_for`).
    """
    if backend not in BACKENDS:
        raise ModelError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if model is not None and not isinstance(model, (str, dict)):
        if backend == "torch" and runtime_of(model) == "onnx":
            model = model.reference  # its weights, with torch's exact numerics
        else:
            _check(model, expect_sha256)
            return _numerics(model, backend)
    reference = model if isinstance(model, dict) else parse_reference(model)
    key = json.dumps(reference, sort_keys=True)
    if backend != "torch":
        if _onnx_folder(reference, device) is not None:
            return cached_onnx(key, expect_sha256)
        if backend == "onnx":
            raise ModelError(f"the model {reference} has no onnxruntime graph ("
                             "unet.onnx) or does not run on the CPU: use the torch backend")
    require_torch(f"the model {reference_name(reference)} on torch (real checkpoints, "
                  "--no-lossless, --deniable, diffusion recovery)")
    from .models import resolve_device

    return _numerics(cached_torch(key, resolve_device(device), expect_sha256), backend)


def _numerics(backbone: Any, backend: str) -> Any:
    """A torch backbone with torch's exact numerics for ``backend`` "torch", with the
    fast ones where this machine has them for "auto"; any other backbone as it is."""
    if runtime_of(backbone) != "torch" or not hasattr(backbone, "fast_numerics"):
        return backbone
    return backbone.fast_numerics() if backend == "auto" else backbone.exact_numerics()
