"""Export a pixel-space model folder's UNet as an onnxruntime graph without weights.

Usage::

    python training/onnx_graph.py src/faceveil/weights/face64-v2

writes ``FOLDER/unet.onnx`` (about 200 KB): the UNet's graph traced from diffusers
(opset 17, any batch size), each weight an initializer named as in the state dict whose
data faceveil supplies at load time from ``unet/diffusion_pytorch_model.safetensors``
(:mod:`faceveil.diffusion.onnx`), and as metadata the weights' SHA-256 (faceveil's
``weights_hash``) and the training schedule's ``alphas_cumprod`` as diffusers' DDIM
scheduler computes them. The export is checked before it is written: onnxruntime's
output matches torch's within 1e-4 at several timesteps and batch sizes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from faceveil.diffusion import onnx as fonnx  # noqa: E402
from faceveil.diffusion.models import load_folder, weights_hash  # noqa: E402

OPSET = 17
# Where an initializer's data would be if onnxruntime were to read it: nowhere, faceveil
# supplies every weight (SessionOptions.add_external_initializers).
SUPPLIED = "supplied-by-faceveil-at-load-time"


class _Call(torch.nn.Module):
    """The UNet as one plain call: (latents, timesteps) -> output tensor."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(z, t).sample


def schedule_alphas(scheduler_config: dict) -> tuple[list[float], float]:
    """``alphas_cumprod`` and ``final_alpha_cumprod`` of diffusers' DDIM scheduler for this
    config, as :func:`faceveil.diffusion.engine.make_schedule` reads them."""
    from diffusers import DDIMScheduler

    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    config.update(clip_sample=False, thresholding=False)
    scheduler = DDIMScheduler.from_config(config)
    return ([float(a) for a in scheduler.alphas_cumprod.double()],
            float(scheduler.final_alpha_cumprod))


def export(folder: Path) -> Path:
    """Write ``folder/unet.onnx`` (see the module docstring); returns its path."""
    backbone = load_folder(folder)
    if backbone.vae is not None or backbone.prompt_embedding is not None:
        raise SystemExit("only pixel-space models without a text encoder have a graph")
    unet = backbone.unet.float().eval()
    sha256 = weights_hash(unet)
    # The exporter merges equal initializers (an untrained model's norm weights) under one
    # name; the graph must keep every weight under its own, since the values come at load
    # time. So it is traced with distinct stand-in values: the graph does not depend on them.
    stand_in = copy.deepcopy(unet)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in stand_in.state_dict().values():
            p.copy_(torch.rand(p.shape, generator=g) * 0.1)
    state = set(unet.state_dict())
    with tempfile.TemporaryDirectory() as d:
        traced = Path(d) / "full.onnx"
        z = torch.randn(2, *backbone.latent_shape, generator=g)
        torch.onnx.export(_Call(stand_in), (z, torch.tensor([500, 20])), str(traced),
                          input_names=["z", "t"], output_names=["out"], opset_version=OPSET,
                          dynamic_axes={"z": {0: "batch"}, "t": {0: "batch"},
                                        "out": {0: "batch"}},
                          do_constant_folding=False, dynamo=False)
        model = onnx.load(str(traced))
    renamed = {}
    for init in model.graph.initializer:
        name = init.name.removeprefix("unet.")
        if name not in state:
            continue  # a small constant of the graph itself: kept inside
        renamed[init.name] = name
        init.name = name
        init.ClearField("raw_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        entry = init.external_data.add()
        entry.key, entry.value = "location", SUPPLIED
    if set(renamed.values()) != state:
        raise SystemExit(f"weights missing from the graph: {sorted(state - set(renamed.values()))}")
    for node in model.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
    alphas, final = schedule_alphas(backbone.scheduler_config)
    for key, value in ((fonnx.META_SHA256, sha256), (fonnx.META_ALPHAS, json.dumps(alphas)),
                       (fonnx.META_FINAL_ALPHA, repr(final))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "faceveil training/onnx_graph.py"
    path = folder / fonnx.GRAPH
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    check(folder, backbone)
    return path


@torch.no_grad()
def check(folder: Path, backbone) -> float:
    """The largest difference between onnxruntime's and torch's outputs (SystemExit above
    1e-4)."""
    fast = fonnx.load(folder, backbone.reference)
    assert fast.sha256 == backbone.sha256
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch, t in ((1, 999), (3, 500), (5, 0)):
        z = torch.randn(batch, *backbone.latent_shape, generator=g)
        want = backbone.predict(z, t).numpy()
        worst = max(worst, float(np.abs(fast.predict(z.numpy(), t) - want).max()))
    if worst > 1e-4:
        raise SystemExit(f"onnxruntime differs from torch by {worst:.2e}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a pixel-space model folder")
    args = ap.parse_args()
    path = export(args.folder)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
