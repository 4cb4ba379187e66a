"""Anonymize, as data: image -> faces (regions) -> keys (a nonce and key material per
face) -> engine (the faces of every image in shared batches) -> new faces pasted inside
their masks -> the record (faces sealed under their keys) -> :class:`Anonymized`.

Photos, folders, video frames, Ray workers and the web page all come through
:func:`anonymize_jobs`; they differ only in how their jobs are made (:func:`prepare` for
an image, :func:`sequence_jobs` for the frames of a clip).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import faces, images
from ..diffusion import hub
from ..diffusion.engine import Engine, Progress
from ..errors import InputError, NoFaceError
from ..format import photo, wrapping
from ..format.records import FaceData, Sampler
from ..keys import NONCE_BYTES, KeySource, SecretKey
from ..options import FixedKeys, Options
from ..recipients import Recipients
from ..timings import Timings
from . import harmonize
from . import pixels as px
from .generate import convergence_notes, face_data, framing, new_faces
from .results import Anonymized, ImageInput, load

if TYPE_CHECKING:
    from ..diffusion.models import Backbone


@dataclass
class Job:
    """One image on its way through anonymization.

    ``video`` is a frame's ``{"frame", "pts"}``, written into its record under the MAC.
    ``crops`` holds, per region, a new face to paste as it is (None: run the model).
    """

    loaded: images.LoadedImage
    regions: list[faces.FaceRegion]
    skipped: list[dict]
    mask: np.ndarray | None
    nonces: list[bytes]
    params: dict
    secret: SecretKey
    video: dict | None = None
    crops: list[np.ndarray | None] | None = None


def check_nonces(nonces: Sequence[bytes], count: int) -> list[bytes]:
    nonces = [bytes(n) for n in nonces]
    if len(nonces) != count:
        raise InputError(f"one nonce per face is needed ({count} faces, {len(nonces)} nonces)")
    if any(len(n) != NONCE_BYTES for n in nonces):
        raise InputError(f"face nonces must be {NONCE_BYTES} random bytes each")
    if len(set(nonces)) != len(nonces):
        raise InputError("two faces were given the same nonce; nonces must never repeat")
    return nonces


def find_regions(pixels: np.ndarray, backbone: Backbone, options: Options,
                 mask: np.ndarray | None = None) -> tuple[list[faces.FaceRegion], list[dict]]:
    """The faces to anonymize in ``pixels`` for this model (its framing and crop size)."""
    return faces.find_regions(pixels, framing=framing(backbone), crop_size=backbone.image_size,
                              detection=options.detection, mask=mask)


def prepare(source: ImageInput, key: KeySource | Recipients, backbone: Backbone,
            options: Options, *,
            regions: Sequence[faces.FaceRegion] | None = None,
            mask: np.ndarray | None = None, fixed: FixedKeys | None = None,
            timings: Timings | None = None) -> Job:
    """Decode an image, find its faces and make its key: a fresh salt per file and, but
    for deniable files, a random file key wrapped for ``key`` (a key file, passphrase
    or public-key recipients)."""
    timings = timings or Timings()
    with timings.phase("reading"):
        loaded = load(source)
    pixels = loaded.pixels
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != pixels.shape[:2]:
            raise InputError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{pixels.shape[1]}x{pixels.shape[0]}; they must be the same size")
    skipped: list[dict] = []
    if regions is None:
        with timings.phase("detection"):
            regions, skipped = find_regions(pixels, backbone, options, mask)
    regions = list(regions)
    if not regions:
        small = sum(s.get("kind") == "small" for s in skipped)
        error = NoFaceError("no face found" + (f" ({small} too small)" if small else ""))
        error.skipped = skipped  # what was left out, for a report
        raise error
    if options.protection.deniable and "text:faceveil" in loaded.metadata:
        raise InputError("this image is itself an anonymized faceveil file; its inner record "
                         "cannot be kept in a deniable file (recover it first, or anonymize "
                         "it without --deniable)")
    fixed = fixed or FixedKeys()
    nonces = check_nonces(fixed.nonces if fixed.nonces is not None else
                          [secrets.token_bytes(NONCE_BYTES) for _ in regions], len(regions))
    params = key.new_params(options.protection.kdf)
    if fixed.salt is not None:
        if len(fixed.salt) != len(params["salt"]):
            raise InputError(f"a salt must be {len(params['salt'])} bytes")
        params["salt"] = bytes(fixed.salt)
    with timings.phase("key"):
        if options.protection.deniable:  # format 3: nothing in the file authenticates
            secret = key.resolve(params)
        else:
            secret, params = wrapping.new_file_key(key, params, file_key=fixed.file_key,
                                                   repeatable=fixed.salt is not None)
    return Job(loaded, regions, skipped, mask, nonces, params, secret)


@dataclass
class SequenceFrame:
    """One image of a sequence (a video frame) whose faces are already known.

    ``nonces`` holds one per region; in a video a track keeps its nonce in every frame
    (so its key material, hence its synthetic identity, stays the same). ``video`` is
    the frame's ``{"frame", "pts"}`` for its record. ``crops``, when given, holds per
    region a new aligned face (float, ``[0, 255]``, as
    :func:`faceveil.pipeline.generate.generate_faces` makes them) to paste as it is, or
    None to run the model on the region."""

    pixels: np.ndarray
    regions: list[faces.FaceRegion]
    nonces: list[bytes]
    video: dict | None = None
    crops: list[np.ndarray | None] | None = None


def sequence_jobs(frames: Sequence[SequenceFrame], secret: SecretKey, params: dict,
                  backbone: Backbone, options: Options) -> list[Job]:
    """Jobs for the frames of one sequence, all under one resolved key (a passphrase is
    stretched once per sequence, not per frame). Faces given a new crop are not their
    frame's own diffusion result, so only their sealed originals bring them back:
    ``lossless`` must be set."""
    if bytes(params["salt"]) != secret.salt:
        raise InputError("the key parameters do not belong to this resolved key")
    size = backbone.image_size
    jobs = []
    for frame in frames:
        if not frame.regions:
            raise InputError("every frame of a sequence needs a face")
        given = list(frame.crops) if frame.crops is not None else [None] * len(frame.regions)
        if len(given) != len(frame.regions) or any(
                c is not None and np.shape(c) != (size, size, 3) for c in given):
            raise InputError(f"one new crop ({size}x{size} RGB) or None per face is needed")
        if any(c is not None for c in given) and not options.protection.seal_originals:
            raise InputError("faces given a new crop can only be recovered from their sealed "
                             "originals: pass lossless=True")
        loaded = images.LoadedImage(np.ascontiguousarray(frame.pixels),
                                    grayscale=images.is_gray(frame.pixels))
        jobs.append(Job(loaded, list(frame.regions), [], None,
                        check_nonces(frame.nonces, len(frame.regions)), params, secret,
                        video=frame.video, crops=given))
    return jobs


def anonymize_jobs(jobs: Sequence[Job | Exception], backbone: Backbone, options: Options,
                   progress: Progress | None = None, timings: Timings | None = None
                   ) -> list[Anonymized | Exception]:
    """The faces of every prepared image through the engine in shared batches, then each
    image's new faces pasted and its record built (errors stay in their place). Faces
    given a new crop (``Job.crops``) skip the engine. ``timings`` gets the model's,
    harmonization's and the record's seconds."""
    timings = timings or Timings()
    sampling = options.sampler
    ready = [j for j in jobs if isinstance(j, Job)]
    all_faces: list[FaceData] = []
    given: list[np.ndarray | None] = []
    first: list[int] = []
    for job in ready:
        first.append(len(all_faces))
        all_faces += [face_data(backbone, region, nonce, job.secret)
                      for region, nonce in zip(job.regions, job.nonces, strict=True)]
        given += job.crops if job.crops is not None else [None] * len(job.regions)
    run = [i for i, c in enumerate(given) if c is None]
    pixels_of = [job.loaded.pixels for job in ready for _ in job.regions]
    regions_all = [region for job in ready for region in job.regions]

    hide = options.norm == "hidden"
    engine = Engine(backbone, steps=sampling.steps, spacing=sampling.spacing, progress=progress)
    new_crops = [None if c is None else np.asarray(c, np.float32) for c in given]
    radii: list[float | None] = [None] * len(all_faces)
    residuals = [0.0] * len(all_faces)
    rules: list[str | None] = [None] * len(all_faces)
    if run:
        made, made_radii, made_residuals, made_rules = new_faces(
            backbone, engine, [all_faces[i] for i in run], [pixels_of[i] for i in run],
            [regions_all[i] for i in run], hide=hide, batch_size=options.runtime.batch_size,
            sampling=sampling, timings=timings)
        for k, i in enumerate(run):
            new_crops[i], radii[i], residuals[i] = made[k], made_radii[k], made_residuals[k]
            rules[i] = made_rules[k]

    # A face given its crop, made from fresh noise, or harmonized is not its own
    # diffusion result: only its sealed original brings it back.
    methods = options.recovery_methods(invertible=len(run) == len(all_faces))
    sampler = Sampler(
        steps=sampling.steps, spacing=sampling.spacing,
        timesteps=tuple(engine.schedule.timesteps), inversion=sampling.method,
        context=sampling.context, flip=sampling.flip, norm=options.norm,
        eta=float(sampling.eta), harmonize=bool(sampling.harmonize),
        recovery_methods=methods, default_recovery=options.default_recovery)
    if not methods:
        raise InputError("these faces come back only from their sealed originals: anonymize "
                         "without --no-lossless")
    results: list[Anonymized | Exception] = []
    starts = iter(first)
    for job in jobs:
        if not isinstance(job, Job):
            results.append(job)
            continue
        start = next(starts)
        span = range(start, start + len(job.regions))
        try:
            results.append(_finish(job, backbone, sampler, options,
                                   [all_faces[i] for i in span], [new_crops[i] for i in span],
                                   [radii[i] for i in span], [residuals[i] for i in span],
                                   [given[i] is not None for i in span],
                                   [rules[i] for i in span], timings))
        except Exception as e:  # noqa: BLE001 - reported per image, a bug too
            if len(jobs) == 1:
                raise
            results.append(e)
    return results


def _finish(job: Job, backbone: Backbone, sampler: Sampler, options: Options,
            face_data: list[FaceData], new_crops: list[np.ndarray], radii: list[float | None],
            residuals: list[float], given: list[bool], rules: list[str | None],
            timings: Timings) -> Anonymized:
    """Paste one image's new faces and build its record (``given``: faces whose crop was
    given, which get no precision residual: diffusion cannot recover them; ``rules``: the
    colour rule each new face was matched by, None where it was not)."""
    diffusion = any(m != "lossless" for m in sampler.recovery_methods)
    pixels = job.loaded.pixels
    out = pixels
    with timings.phase("harmonize/paste"):
        for f, region, crop in zip(face_data, job.regions, new_crops, strict=True):
            if sampler.harmonize:
                out = harmonize.paste(out, crop, region,
                                      lambda n, k=f.key: k.normal(n, "grain"))
            else:
                out = faces.paste(out, crop, region.transform, region.mask)
        if job.loaded.grayscale:  # a grayscale photo stays grayscale (faces too)
            out = images.to_gray(out)
        if job.mask is not None:  # black in the user's mask means "keep", exactly
            out = np.where(job.mask[:, :, None], out, pixels)
            # What anonymization changed, exactly: recovery changes no more.
            face_data[0].photo_mask = job.mask
    with timings.phase("record"):
        return _record(job, backbone, sampler, options, face_data, out, new_crops, radii,
                       residuals, given, rules, diffusion)


def _record(job: Job, backbone: Backbone, sampler: Sampler, options: Options,
            face_data: list[FaceData], out: np.ndarray, new_crops: list[np.ndarray],
            radii: list[float | None], residuals: list[float], given: list[bool],
            rules: list[str | None], diffusion: bool) -> Anonymized:
    """Measure what recovery needs of the pasted image ``out`` and seal its record."""
    deniable, lossless = options.protection.deniable, options.protection.seal_originals
    pixels = job.loaded.pixels
    notes = list(job.loaded.notes)
    for f, region, crop, radius, reused in zip(face_data, job.regions, new_crops, radii,
                                               given, strict=True):
        q = None if reused or not diffusion else px.residual(crop, out, region)
        f.residual = px.public_residual(q, region) if deniable and q is not None else q
        f.window_sha256 = px.window_hash(out, region.transform, region.crop_size)
        f.radius = radius
        if lossless:
            f.lossless = px.original_patch(pixels, out, region.mask, region.transform)
    metadata = job.loaded.metadata
    if deniable and metadata:
        notes.append("deniable mode: the input's own metadata (" + ", ".join(sorted(metadata))
                     + ") was removed and not kept, since nothing in a deniable file may "
                     "authenticate")
    record = photo.photo_record(
        params=job.params, secret=job.secret, model=backbone.describe(), sampler=sampler,
        width=pixels.shape[1], height=pixels.shape[0], faces=face_data, metadata=metadata,
        deniable=deniable, video=job.video)
    notes += resolution_notes(job.regions, backbone)
    if sampler.harmonize:
        notes += harmonize.colour_notes(job.regions, rules)
    notes += convergence_notes(residuals, "recovery",
                               [faces.face_number(r, i) for i, r in enumerate(job.regions)])
    return Anonymized(out, record, job.regions, job.skipped, notes, options.output.label)


def resolution_notes(regions: Sequence[faces.FaceRegion], backbone) -> list[str]:
    """The note for faces much larger than ``backbone`` renders
    (:func:`faceveil.faces.resolution_notes`), with what to do about it: a real model on
    this machine, or the command that fetches one (only when none is here)."""
    notes = faces.resolution_notes(regions, backbone.image_size)
    advice = hub.resolution_advice(backbone.reference) if notes else ""
    return [f"{n}; {advice}" for n in notes] if advice else notes
