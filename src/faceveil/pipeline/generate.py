"""Faces through the engine: crops in, new crops out, under each face's key.

The glue between faces and the pure tensor engine (:mod:`faceveil.diffusion.engine`):
batching crops, encoding them to latents, the key operation of each face (its keyed
orthogonal flip, or the paper's sign flip), decoding, and keeping every pixel outside a
face's latent footprint exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import faces
from ..diffusion.engine import Engine, Progress
from ..errors import InputError
from ..format.records import FaceData
from ..keys import SecretKey
from ..options import Runtime, Sampling
from ..timings import Timings
from . import harmonize

if TYPE_CHECKING:
    import torch

    from ..diffusion.models import Backbone

# An exact-steps face whose worst step still misses by more than this (latent units)
# did not converge: its recovery will be visibly less exact, so the user is told.
UNCONVERGED = 0.02

KeyOp = Callable[["torch.Tensor", "torch.Tensor", range], "torch.Tensor"]
"""A batch's key operation: (z_T, latent mask, which faces) -> the keyed z_T."""


def framing(backbone: Backbone) -> faces.Framing:
    """The crop framing the model expects (its ``faceveil.json``, else FFHQ's)."""
    if backbone.framing:
        return faces.Framing.from_dict(backbone.framing)
    return faces.Framing.ffhq()


def latent_mask(backbone: Backbone, hard: np.ndarray) -> np.ndarray:
    """A hard pixel mask at latent resolution: a latent cell is inside when any of its
    pixels is (:meth:`faceveil.diffusion.models.Backbone.latent_mask`, in numpy)."""
    k = backbone.scale_factor
    hard = np.asarray(hard) > 0
    if k == 1:
        return hard
    s = hard.shape[0] // k, hard.shape[1] // k
    return hard[: s[0] * k, : s[1] * k].reshape(s[0], k, s[1], k).any(axis=(1, 3))


def mixing_rms(backbone: Backbone) -> float:
    """The RMS the masked noise is rescaled to before the keyed mixing (formats 2, 3).

    A model's ``faceveil.json`` may set it: ``mixing_rms``, else ``inversion_rms`` (the
    RMS its exact inversion typically gives), else 1 (the prior's). It shapes the new
    face: noise at the prior's scale decodes to smoother, more face-like faces, noise at
    the inversion's scale to faces that invert back more exactly (face64-v2 on 12
    aligned faces: 83% / 58% / 0% of anonymized faces detected by dlib's CNN at 1.0 /
    1.15 / 1.29, recovery 29.6 / 41.9 / 45.8 dB median). Recovery does not depend on it
    (the original norm is sealed), so a model's value can change between releases.
    """
    extra = backbone.extra or {}
    return float(extra.get("mixing_rms", extra.get("inversion_rms", 1.0)))


def masked_count(backbone: Backbone, mask: np.ndarray) -> int:
    return int(mask.sum()) * backbone.latent_channels


def key_op(backbone: Backbone, face_keys: Sequence[FaceData], version: int, flip_kind: str,
           *, targets: Sequence[float | None] | None = None,
           radii: list[float | None] | None = None, secret: SecretKey | None = None) -> KeyOp:
    """The key operation on z_T for the faces of a record.

    Formats 2 and 3, "mixed": each face's keyed orthogonal flip
    (:mod:`faceveil.diffusion.mixing`); anonymization passes ``targets`` (the fixed
    radius each face's noise is rescaled to, or None) and receives the original norms in
    ``radii``; recovery passes the sealed norms in ``radii``. "signs": the paper's flip
    with per-face signs. Format 1: the paper's flip with version 1 signs (``secret``).
    """
    import torch

    from ..diffusion import mixing
    from ..diffusion.engine import flip as sign_flip

    shape = backbone.latent_shape

    def signs_for(f: FaceData) -> np.ndarray:
        if version == 1:
            return secret.signs(f.nonce, shape)
        return f.key.signs(int(np.prod(shape))).reshape(shape)

    def op(z: torch.Tensor, mask: torch.Tensor, part: range) -> torch.Tensor:
        if version == 1 or flip_kind == "signs":
            k = torch.from_numpy(np.stack([signs_for(face_keys[i]) for i in part]))
            return sign_flip(z, k.to(z.device), mask)
        params = [face_keys[i].key.mixing(masked_count(backbone, face_keys[i].latent_mask))
                  for i in part]
        if targets is not None:  # anonymize
            new, norms = mixing.apply(z, mask, params, hide=[targets[i] for i in part])
            if radii is not None:
                for i, n in zip(part, norms, strict=True):
                    radii[i] = n
            return new
        restore = None if radii is None else [radii[i] for i in part]
        return mixing.apply(z, mask, params, restore=restore)[0]

    return op


def chunks(backbone: Backbone, count: int, batch_size: int) -> list[range]:
    """The batches ``count`` faces run in: ``batch_size`` at a time, except a latent model
    on a CPU, one at a time. There a batch buys no speed and its activations cost memory
    (the full-size 256 px model on six faces: the same CPU time one at a time as in one
    batch, and 2.33 GB peak against 3.15 GB; docs/measured.md, issue 26)."""
    if getattr(backbone, "vae", None) is not None and backbone.device.type == "cpu":
        batch_size = 1
    return [range(s, min(s + batch_size, count)) for s in range(0, count, batch_size)]


def run_engine(backbone: Backbone, engine: Engine, crops: Sequence[np.ndarray],
               latent_masks: Sequence[np.ndarray], op: KeyOp, batch_size: int, method: str,
               context: str) -> tuple[list[np.ndarray], list[float]]:
    """Run face crops (float, [0, 255]) through the engine in batches; return the new
    crops, changed only inside the pixel footprint of each latent mask, and each face's
    worst exact-inversion residual (0 for the plain method).

    The footprint, not the (smaller) hard pixel mask: for a pixel model the decoded
    latent is then exactly the crop, so recovery can invert it exactly. Pasting into the
    photo with the facial mask as alpha keeps everything outside the mask unchanged."""
    import torch

    out: list[np.ndarray] = []
    residuals: list[float] = []
    for part in chunks(backbone, len(crops), batch_size):
        batch = np.stack([crops[i] for i in part])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        z0 = backbone.encode(x)
        m = torch.from_numpy(np.stack([latent_masks[i] for i in part]))[:, None].to(z0.device)
        done = engine.transform(z0, lambda zt, m=m, part=part: op(zt, m, part), m,
                                method=method, context=context)
        residuals += done.residuals.tolist()
        out += _decoded(backbone, done.z0, batch, [latent_masks[i] for i in part])
    return out, residuals


def convergence_notes(residuals: Sequence[float], verb: str,
                      numbers: Sequence[int]) -> list[str]:
    """Notes for faces whose exact inversion did not converge; ``numbers`` are the faces'
    numbers as the user sees them."""
    return [f"face {n}: exact inversion did not converge (worst step error {r:.3g}); its "
            f"{verb} will be less exact than usual"
            for n, r in zip(numbers, residuals, strict=True) if r > UNCONVERGED]


def face_data(backbone: Backbone, region: faces.FaceRegion, nonce: bytes,
              secret: SecretKey) -> FaceData:
    """A face's record data as anonymization starts it (geometry and key material)."""
    return FaceData(box=tuple(int(v) for v in region.box), crop_size=int(region.crop_size),
                    nonce=nonce, transform=np.asarray(region.transform, dtype=np.float64),
                    mask=region.mask > 0, latent_mask=latent_mask(backbone, region.mask > 0),
                    source=region.source, key=secret.face(nonce))


# Key stream labels of a fresh face's noise: z_T inside the mask, and the draws of each
# stochastic denoising step (format 3), and the outside's forward noise (dpm++2m).
FRESH_START = "fresh/start"
FRESH_STEP = "fresh/step/{}"
FRESH_CONTEXT = "fresh/context"


def keyed_normals(data: Sequence[FaceData], masks: np.ndarray, shape: Sequence[int],
                  label: str) -> np.ndarray:
    """N(0, 1) draws (float64) from each face's key stream ``label`` at the masked
    coordinates of a batch of latents of ``shape`` (C order, as
    :func:`faceveil.diffusion.mixing.apply` takes them), 0 elsewhere; ``masks`` is
    (B, 1, H, W) boolean."""
    inside = np.broadcast_to(np.asarray(masks, bool), tuple(shape))
    out = np.zeros(tuple(shape), np.float64)
    for b, f in enumerate(data):
        out[b][inside[b]] = f.key.normal(int(inside[b].sum()), label)
    return out


def _to_numpy(backbone: Any, x: Any) -> np.ndarray:
    """A backbone's result as a float32 numpy array on the CPU."""
    if hasattr(backbone, "to_numpy"):
        return backbone.to_numpy(x)
    return x.float().cpu().numpy()


def _from_numpy(backbone: Any, a: np.ndarray, like: Any = None) -> Any:
    """A numpy array as the backbone computes with it: on its device, or cast once into
    ``like``'s dtype, device and memory layout."""
    if hasattr(backbone, "from_numpy"):
        return backbone.from_numpy(a if like is None else a.astype(like.dtype))
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(backbone.device) if like is None else torch.empty_like(like).copy_(t)


def _images(backbone: Any, batch: np.ndarray) -> Any:
    """Crops (B, S, S, 3) in [0, 255] as the backbone's images (B, 3, S, S) in [-1, 1]."""
    if hasattr(backbone, "from_numpy"):
        return backbone.from_numpy(batch.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
    import torch

    # As torch always made them (a channels-last view: the layout picks conv kernels).
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def run_fresh(backbone: Backbone, engine: Engine, crops: Sequence[np.ndarray],
              data: Sequence[FaceData], batch_size: int, eta: float,
              solver: str = "ddim") -> list[np.ndarray]:
    """New crops from fresh keyed noise inside each face's latent mask
    (:meth:`faceveil.diffusion.engine.Engine.sample`): nothing of the original inside
    survives, so only the sealed original brings the face back. With "dpm++2m" the
    outside is noised forward with keyed noise drawn outside the mask (no inversion).
    Runs on torch or on onnxruntime (numpy), whichever the backbone is, in
    :func:`chunks`."""
    out: list[np.ndarray] = []
    for part in chunks(backbone, len(crops), batch_size):
        batch = np.stack([crops[i] for i in part])
        faces_ = [data[i] for i in part]
        z0 = backbone.encode(_images(backbone, batch))
        masks = np.stack([f.latent_mask for f in faces_])[:, None]
        m = _from_numpy(backbone, masks)
        shape = tuple(z0.shape)

        def normals(label: str, f=faces_, masks=masks, shape=shape, z0=z0) -> Any:
            return _from_numpy(backbone, keyed_normals(f, masks, shape, label), z0)

        context = None
        if solver == "dpm++2m":
            context = _from_numpy(backbone, keyed_normals(faces_, ~masks, shape, FRESH_CONTEXT),
                                  z0)
        done = engine.sample(z0, m, normals(FRESH_START), eta=eta,
                             noise=lambda n, normals=normals: normals(FRESH_STEP.format(n)),
                             context_noise=context, solver=solver)
        out += _decoded(backbone, done.z0, batch, [f.latent_mask for f in faces_])
    return out


def _decoded(backbone: Backbone, z0: Any, batch: np.ndarray,
             latent_masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Decoded crops, changed only inside the pixel footprint of each latent mask."""
    new = ((_to_numpy(backbone, backbone.decode(z0)) + 1.0) * 127.5).transpose(0, 2, 3, 1)
    scale = backbone.scale_factor
    out = []
    for j, mask in enumerate(latent_masks):
        cells = np.kron(mask, np.ones((scale, scale), bool)).astype(bool)
        out.append(np.where(cells[:, :, None], new[j], batch[j]).astype(np.float32))
    return out


def generate(backbone: Backbone, engine: Engine, data: Sequence[FaceData],
             crops: Sequence[np.ndarray], *, hide: bool, batch_size: int, sampling: Sampling
             ) -> tuple[list[np.ndarray], list[float | None], list[float]]:
    """The engine's new crops for these faces, with their original noise norms (None
    where the norm was kept) and exact-inversion residuals; ``sampling`` resolved."""
    if sampling.flip == "fresh":
        made = run_fresh(backbone, engine, crops, data, batch_size, sampling.eta,
                         sampling.solver)
        return made, [None] * len(data), [0.0] * len(data)
    from ..diffusion import mixing

    rms = mixing_rms(backbone)
    targets = [mixing.target_radius(masked_count(backbone, f.latent_mask), rms) if hide
               else None for f in data]
    radii: list[float | None] = [None] * len(data)
    op = key_op(backbone, data, 2, sampling.flip, targets=targets, radii=radii)
    new_crops, residuals = run_engine(backbone, engine, crops, [f.latent_mask for f in data],
                                      op, batch_size, sampling.method, sampling.context)
    return new_crops, radii, residuals


def new_faces(backbone: Backbone, engine: Engine, data: Sequence[FaceData],
              pixels: Sequence[np.ndarray], regions: Sequence[faces.FaceRegion], *,
              hide: bool, batch_size: int, sampling: Sampling, timings: Timings | None = None
              ) -> tuple[list[np.ndarray], list[float | None], list[float], list[str | None]]:
    """:func:`generate` on the faces ``regions[i]`` of ``pixels[i]``, then, when the
    sampling asks for it, each new face harmonized with the skin around it
    (:func:`faceveil.pipeline.harmonize.match_to`). The last list holds the colour rule
    each face was matched by (None: not harmonized), for the report's notes."""
    timings = timings or Timings()
    size = backbone.image_size
    with timings.phase("model"):
        crops = [faces.extract(p, r.transform, size)
                 for p, r in zip(pixels, regions, strict=True)]
        calls = engine.calls
        made, radii, residuals = generate(backbone, engine, data, crops, hide=hide,
                                          batch_size=batch_size, sampling=sampling)
        timings.calls += engine.calls - calls
        timings.faces += len(data)
    rules: list[str | None] = [None] * len(made)
    if sampling.harmonize:
        with timings.phase("harmonize/paste"):
            stats = [harmonize.skin_stats(p, r) for r, p in zip(regions, pixels, strict=True)]
            made = [harmonize.match_to(c, r, s) for c, r, s in zip(made, regions, stats,
                                                                    strict=True)]
            rules = ["none" if s is None else s.rule for s in stats]
    return made, radii, residuals, rules


def generate_faces(pixels: Sequence[np.ndarray], regions: Sequence[faces.FaceRegion],
                   nonces: Sequence[bytes], secret: SecretKey, backbone: Backbone,
                   sampling: Sampling, runtime: Runtime,
                   progress: Progress | None = None) -> list[np.ndarray]:
    """The new aligned face of each region of ``pixels[i]`` (the engine step alone, and
    the harmonization), under ``sampling`` resolved (``Options.sampler``).

    Returns float32 crops (``backbone.image_size`` square, ``[0, 255]``), changed only
    inside each region's latent mask, ready to paste (a video makes a track's face once
    and pastes it into every frame). ``regions[i]`` is a face of ``pixels[i]``,
    ``nonces[i]`` its key nonce (``secret.face(nonce)``).
    """
    if not len(pixels) == len(regions) == len(nonces):
        raise InputError("one image, region and nonce per face is needed")
    data = [face_data(backbone, r, bytes(n), secret) for r, n in zip(regions, nonces,
                                                                     strict=True)]
    engine = Engine(backbone, steps=sampling.steps, spacing=sampling.spacing, progress=progress)
    new, _, _, _ = new_faces(backbone, engine, data, pixels, regions,
                          hide=sampling.flip == "mixed", batch_size=runtime.batch_size,
                          sampling=sampling)
    return new
