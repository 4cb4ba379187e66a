"""Recover, the same arrows backwards: an opened record (:func:`faceveil.format.auth.open`)
and the published pixels -> each face either restored from its sealed original (no
model) or run back through the engine with its key -> :class:`Recovered`.

Faces of several images made with the same model and sampler share the engine's
batches (a folder, the frames of a clip).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import faces, images
from ..diffusion.backends import get_model
from ..diffusion.engine import Engine, Progress
from ..diffusion.hub import PRESETS
from ..errors import FaceveilError, InputError, MetadataError, MissingExtraError, ModelError
from ..format.records import Opened
from ..options import Runtime, plan_recovery
from ..timings import Timings
from . import pixels as px
from .generate import convergence_notes, key_op, run_engine
from .results import Recovered

if TYPE_CHECKING:
    from ..diffusion.models import Backbone


@dataclass
class Restore:
    """One image on its way through recovery."""

    loaded: images.LoadedImage
    opened: Opened
    out: np.ndarray
    todo: list[int]  # faces recovered by diffusion
    restored: list[int]  # faces restored from their sealed originals
    intact: list[bool]
    method: str  # the diffusion method of the faces in todo
    notes: list[str]


def plan(loaded: images.LoadedImage, opened: Opened, method: str | None) -> Restore:
    """Decide how each face of an opened record comes back (``method``: the user's
    choice, default: the one the file names)."""
    record, pixels = opened.record, loaded.pixels
    if (pixels.shape[1], pixels.shape[0]) != (record.width, record.height):
        raise InputError(
            f"image is {pixels.shape[1]}x{pixels.shape[0]} but its metadata describes "
            f"{record.width}x{record.height}: not the image this metadata belongs to")
    how = plan_recovery(record.sampler, [f.lossless is not None for f in opened.faces],
                        method)
    notes = list(loaded.notes)
    # Whether the published pixels around each face are those anonymization wrote.
    intact = [f.window_sha256 == px.window_hash(pixels, f.transform, f.crop_size)
              for f in opened.faces]
    if how.restored and not all(intact[i] for i in how.restored):
        notes.append("the image was re-encoded since anonymization: its faces were "
                     "restored bit-exactly from their sealed originals, and the rest of "
                     "the image is the re-encoded one")
    return Restore(loaded, opened, pixels.copy(), list(how.diffusion), list(how.restored),
                   intact, how.method, notes)


def recover_planned(items: Sequence[Restore | FaceveilError], *, model: Backbone | str | None,
                    runtime: Runtime, progress: Progress | None = None,
                    residual: bool = True, timings: Timings | None = None
                    ) -> list[Recovered | FaceveilError]:
    """Recover planned images; one entry per item, its :class:`Recovered` or the
    :class:`FaceveilError` that stopped it."""
    timings = timings or Timings()
    items = list(items)
    groups: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        if isinstance(item, Restore) and item.todo:
            if not all(item.intact[i] for i in item.todo) and residual:
                item.notes.append(
                    "the image was re-encoded since anonymization (e.g. JPEG): its faces "
                    "were recovered by diffusion from the re-encoded pixels alone, which "
                    "usually fails to restore them (about 15 dB with the built-in model); "
                    "keep the PNG, or anonymize without --no-lossless to recover faces "
                    "after re-encoding")
            r = item.opened.record
            # Faces share a model run only when model, sampler and key scheme agree.
            same = [r.model, r.sampler.to_json(), item.method, r.version,
                    r.key.salt.hex() if r.version == 1 else None]
            groups.setdefault(json.dumps(same, sort_keys=True), []).append(n)
    for members in groups.values():
        group = [items[n] for n in members]
        try:
            residuals = _diffusion(group, model, runtime, progress, residual, timings)
        except FaceveilError as e:
            for n in members:
                items[n] = e
            continue
        for item, r in zip(group, residuals, strict=True):
            item.notes += convergence_notes(r, "recovered face", item.todo)
    results: list[Recovered | FaceveilError] = []
    for item in items:
        try:
            with timings.phase("harmonize/paste"):
                results.append(item if isinstance(item, FaceveilError) else _finish(item))
        except FaceveilError as e:
            results.append(e)
    return results


def _finish(item: Restore) -> Recovered:
    """Put back the sealed originals, apply the user mask and the grayscale flag."""
    out, pixels, opened = item.out, item.loaded.pixels, item.opened
    for i in item.restored:  # sealed originals win where faces overlap
        f = opened.faces[i]
        px.restore_original(out, f.mask, f.transform, f.crop_size, f.lossless)
    for f in opened.faces:
        if f.photo_mask is not None:  # a user mask: pixels outside it were never changed
            if f.photo_mask.shape != pixels.shape[:2]:
                raise MetadataError("faceveil metadata is corrupt (the mask does not fit)")
            out = np.where(f.photo_mask[:, :, None], out, pixels)
    if item.loaded.grayscale:  # the anonymized file is grayscale, so was the original
        out = images.to_gray(out)
    method = ("lossless" if not item.todo else item.method if not item.restored else "mixed")
    return Recovered(out, opened.metadata, item.notes, opened.record, opened.faces, method)


def recovery_model(opened: Opened, model: Backbone | str | None, device: str) -> Backbone:
    """The model a record names (or the user's ``model``), its weights' hash checked."""
    recorded = opened.record.model
    reference = recorded["reference"]
    if model is None and not opened.authenticated and "preset" not in reference:
        # An unauthenticated record could point anywhere (a path, a hub repository):
        # only the user says where to load code and weights from.
        raise ModelError(
            f"this deniable file names the model {reference}; faceveil does not follow a "
            "model location from an unauthenticated file: pass --model to say where it is")
    try:
        return get_model(model if model is not None else reference, device,
                         expect_sha256=recorded.get("sha256"))
    except MissingExtraError:
        raise  # the light install: the file needs torch, said as such
    except ModelError:
        preset = reference.get("preset")
        if model is None and preset and PRESETS.get(preset) and PRESETS[preset].folder:
            # Built-in weights never change under one name; a mismatch means another
            # release. The file names the one that made it.
            raise ModelError(
                f"this file was made with built-in model {preset!r} of "
                f"{opened.record.created_by or 'another faceveil release'}, whose weights "
                "this installation does not have; recover it with that release") from None
        raise


def _diffusion(items: Sequence[Restore], model, runtime: Runtime, progress, residual: bool,
               timings: Timings) -> list[list[float]]:
    """Recover the ``todo`` faces of images made with one model and sampler by running the
    engine on their (residual-corrected) crops in shared batches; each item's ``out``
    gets its faces. Returns each item's per-face convergence residuals."""
    first = items[0].opened
    with timings.phase("model load"):
        backbone = recovery_model(first, model, runtime.device)
    with timings.phase("model"):
        return _run(items, backbone, progress, residual, runtime, timings)


def _run(items: Sequence[Restore], backbone: Backbone, progress, residual: bool,
         runtime: Runtime, timings: Timings) -> list[list[float]]:
    first = items[0].opened
    data = [item.opened.faces[i] for item in items for i in item.todo]
    for f in data:
        if f.crop_size != backbone.image_size or f.latent_mask.shape != backbone.latent_shape[1:]:
            raise ModelError("the model's resolution does not match the file's face crops")
    sampler = first.sampler
    engine = Engine(backbone, steps=sampler.steps, spacing=sampler.spacing, progress=progress)
    if tuple(engine.schedule.timesteps) != sampler.timesteps:
        raise MetadataError("the file's DDIM timesteps do not match this model's scheduler")
    radii = None
    if first.version >= 2 and sampler.flip == "mixed" and sampler.norm == "hidden":
        radii = [f.radius for f in data]
        if any(r is None for r in radii):
            raise MetadataError("faceveil metadata is corrupt (a face's noise radius)")
    op = key_op(backbone, data, first.version, sampler.flip, radii=radii, secret=first.secret)
    crops = []
    for item in items:
        for i in item.todo:
            f = item.opened.faces[i]
            crop = faces.extract(item.loaded.pixels, f.transform, backbone.image_size)
            crops.append(crop + f.residual if residual and item.intact[i]
                         and f.residual is not None else crop)
    new_crops, residuals = run_engine(backbone, engine, crops, [f.latent_mask for f in data],
                                      op, runtime.batch_size, items[0].method, sampler.context)
    timings.calls += engine.calls
    timings.faces += len(data)
    per_item, k = [], 0
    for item in items:
        for i in item.todo:
            f = item.opened.faces[i]
            # Paste hard over the whole footprint: the soft edge of anonymization mixed the
            # anonymized face into the photo there, and the recovered crop replaces it.
            item.out = faces.paste(item.out, new_crops[k], f.transform,
                                   f.mask.astype(np.float32))
            k += 1
        per_item.append(residuals[k - len(item.todo):k])
    return per_item
