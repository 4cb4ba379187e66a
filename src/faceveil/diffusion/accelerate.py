"""Opt-in fast paths for a backbone's network call on a CUDA device.

Each wraps :meth:`~faceveil.diffusion.models.Backbone.network_call` (one plain network
evaluation) and is installed as the backbone's ``fast_call``; :meth:`Backbone.to` drops
it, since captured graphs belong to a device. Chosen with ``FACEVEIL_ACCELERATE``
(:func:`acceleration_from_env`).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

import torch

from ..errors import ModelError

if TYPE_CHECKING:
    from .models import Backbone


def accelerate(backbone: Backbone, *, cuda_graphs: bool = True, compile: bool = False,
               tf32: bool = False) -> Backbone:
    """Opt-in fast paths for the network call on a CUDA device; a no-op elsewhere.

    * ``cuda_graphs``: capture the call once per input shape and replay it. The same
      kernels run on the same inputs, so results equal the eager call's; it removes
      the launch overhead that dominates small batches (exact-steps at batch 1 makes
      about 400 calls of a few milliseconds each).
    * ``compile``: ``torch.compile`` the network with static shapes (fused kernels:
      results differ from eager by rounding; compile time is paid once per shape).
    * ``tf32``: let convolutions and matrix products use TF32 inside this call.
      Off by default: with it, exact-steps' 1e-3 step tolerance is unmeasured.

    None of this has been measured on a GPU yet (no device was available); every
    path falls back to the eager call if capture or compilation fails.
    """
    if backbone.device.type != "cuda":
        return backbone
    call = backbone.network_call
    if compile:
        call = functools.partial(backbone.network_call,
                                 unet=torch.compile(backbone.unet, dynamic=False))
    call = Precision(call, tf32)
    if cuda_graphs:
        call = GraphedCall(call)
    backbone.fast_call = call
    backbone.acceleration = {"cuda_graphs": cuda_graphs, "compile": compile, "tf32": tf32}
    return backbone


class Precision:
    """Run a call with TF32 allowed or forbidden for convolutions and matrix products,
    restoring torch's global flags afterwards."""

    def __init__(self, call, tf32: bool) -> None:
        self.call, self.tf32 = call, tf32

    def __call__(self, z: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        matmul = torch.backends.cuda.matmul
        saved = matmul.allow_tf32
        matmul.allow_tf32 = self.tf32
        try:
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=self.tf32):
                return self.call(z, timestep)
        finally:
            matmul.allow_tf32 = saved


class GraphedCall:
    """Replays a CUDA graph of a network call, one graph per input shape and dtype.

    The graph reads its inputs from, and writes its output to, fixed buffers: each call
    copies the inputs in, replays, and returns a copy of the output. Shapes beyond
    ``max_graphs`` (the per-face early exit of exact-steps shrinks batches) and any
    capture failure fall back to the eager call.
    """

    def __init__(self, call, max_graphs: int = 16) -> None:
        self.call = call
        self.max_graphs = max_graphs
        self.graphs: dict = {}
        self.pool = None
        self.failed = False

    def __call__(self, z: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        key = (tuple(z.shape), z.dtype, z.device)
        entry = self.graphs.get(key)
        if entry is None:
            if self.failed or len(self.graphs) >= self.max_graphs or not z.is_cuda:
                return self.call(z, timestep)
            try:
                entry = self._capture(z, timestep)
            except RuntimeError:
                self.failed = True  # e.g. an op that cannot be captured: stay eager
                return self.call(z, timestep)
            self.graphs[key] = entry
        graph, static_z, static_t, static_out = entry
        static_z.copy_(z)
        static_t.copy_(timestep)
        graph.replay()
        return static_out.clone()

    def _capture(self, z: torch.Tensor, timestep: torch.Tensor):
        static_z, static_t = z.clone(), timestep.clone()
        side = torch.cuda.Stream(device=z.device)
        side.wait_stream(torch.cuda.current_stream(z.device))
        with torch.cuda.stream(side):  # warm up outside the graph (allocator, cuDNN)
            for _ in range(2):
                self.call(static_z, static_t)
        torch.cuda.current_stream(z.device).wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.call(static_z, static_t)
        return graph, static_z, static_t, static_out


ACCELERATE_ENV = "FACEVEIL_ACCELERATE"


def acceleration_from_env() -> dict | None:
    """The opt-in GPU fast paths named in ``FACEVEIL_ACCELERATE`` (comma-separated among
    ``cuda-graphs``, ``compile``, ``tf32``), as :meth:`Backbone.accelerate` arguments;
    None when the variable is unset or empty."""
    text = os.environ.get(ACCELERATE_ENV, "").strip().lower()
    if not text:
        return None
    names = {n.strip() for n in text.split(",") if n.strip()}
    known = {"cuda-graphs", "compile", "tf32"}
    if names - known:
        raise ModelError(f"{ACCELERATE_ENV} takes {', '.join(sorted(known))}, "
                         f"not {', '.join(sorted(names - known))}")
    return {"cuda_graphs": "cuda-graphs" in names, "compile": "compile" in names,
            "tf32": "tf32" in names}


