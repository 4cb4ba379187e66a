"""The Python API: anonymize, recover and inspect images. The CLI is a thin skin on it.

Anonymize, as data: image -> faces (crops, masks, transforms) -> keys (one nonce and
one key operation per face) -> engine (one batched pass) -> faces (blend back) ->
container (metadata record) -> PNG. Recover runs the same arrows backwards from the
record stored in the file, opened with the key by :func:`faceveil.container.open_record`.

Example::

    from faceveil import api, keys
    key = keys.KeySource.from_key_file("my.key")
    result = api.anonymize("photo.jpg", key)
    result.save("anon.png")
    back = api.recover("anon.png", key)
    back.save("back.png")
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import __version__, container, faces, images, mixing
from .container import FaceData, OpenedRecord
from .engine import CONTEXTS, METHODS, Engine, Progress
from .engine import flip as sign_flip
from .errors import FaceveilError, InputError, MetadataError, ModelError, NoFaceError
from .keys import NONCE_BYTES, KeySource, SecretKey
from .models import PRESETS, Backbone, load_model

ImageInput = str | os.PathLike | np.ndarray | Image.Image
RECOVERY_METHODS = METHODS  # "plain" (the paper's one-pass inversion), "exact-steps"
DEFAULT_METHOD = "exact-steps"
FLIPS = ("mixed", "signs")
DEFAULT_FLIP = "mixed"
PARSER_FEATHER = 0.04  # soft edge of parser masks, as a fraction of the crop side
# An exact-steps face whose worst step still misses by more than this (latent units)
# did not converge: its recovery will be visibly less exact, so the user is told.
UNCONVERGED = 0.02


@dataclass
class Anonymized:
    """An anonymized image and the metadata record that makes it recoverable."""

    pixels: np.ndarray
    record: dict
    regions: list[faces.FaceRegion] = field(default_factory=list)
    # Detections left out (excluded, too small) and low-score candidates: see find_regions.
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def png_bytes(self) -> bytes:
        return images.encode_image(self.pixels, "PNG", text=container.png_text(self.record))

    def save(self, path: str | os.PathLike, *, force: bool = False) -> None:
        """Write the anonymized PNG (with its metadata chunk) atomically."""
        images.check_output(path, [], force)
        images.write_atomic(path, self.png_bytes())

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)


@dataclass
class Recovered:
    """A recovered image and the original metadata (EXIF, ...) restored with it.

    ``faces`` holds what the record says of each face once opened with the key
    (geometry, masks), for callers that measure the result.
    """

    pixels: np.ndarray
    metadata: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)  # the anonymized file's metadata
    faces: list[FaceData] = field(default_factory=list)

    def encode(self, fmt: str = "PNG", notes: list[str] | None = None) -> bytes:
        """The image with its original metadata; what ``fmt`` cannot hold is said in
        ``notes``."""
        return images.encode_image(self.pixels, fmt, metadata=self.metadata, notes=notes)

    def save(self, path: str | os.PathLike, *, force: bool = False) -> None:
        images.check_output(path, [], force)
        images.write_atomic(path, self.encode(images.output_format(path)))

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _load(image: ImageInput) -> images.LoadedImage:
    if isinstance(image, images.LoadedImage):
        return image
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
            raise InputError("an image array must be uint8 with shape (H, W, 3)")
        a = np.ascontiguousarray(a[:, :, :3])
        return images.LoadedImage(a, grayscale=images.is_gray(a))
    if isinstance(image, (str, os.PathLike)):
        container.allow_large_chunks()
    return images.load_image(image)  # a path, bytes or a PIL image


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device} was asked for, but this machine has no CUDA "
                         f"device torch can use (torch {torch.__version__}); use --device cpu")
    return device


@lru_cache(maxsize=4)
def _cached_model(reference_json: str, device: str, expect: str | None) -> Backbone:
    return load_model(json.loads(reference_json), device=device, expect_sha256=expect)


def get_model(model: Backbone | str | dict | None, device: str | None = None,
              expect_sha256: str | None = None) -> Backbone:
    """A loaded backbone for a preset, folder, hub id or reference (cached per process)."""
    if isinstance(model, Backbone):
        if expect_sha256 and model.sha256 != expect_sha256:
            raise ModelError(
                "the given model is not the one this file was made with (weights hash differs)"
            )
        return model
    from .models import parse_reference

    reference = model if isinstance(model, dict) else parse_reference(model)
    return _cached_model(json.dumps(reference, sort_keys=True), resolve_device(device),
                         expect_sha256)


def _framing(backbone: Backbone) -> faces.Framing:
    if backbone.framing:
        return faces.Framing.from_dict(backbone.framing)
    return faces.Framing.ffhq()


KeyOp = Callable[[torch.Tensor, torch.Tensor, range], torch.Tensor]
"""A batch's key operation: (z_T, latent mask, which faces) -> the keyed z_T."""


def _run_engine(
    backbone: Backbone,
    engine: Engine,
    crops: Sequence[np.ndarray],
    latent_masks: Sequence[np.ndarray],
    key_op: KeyOp,
    batch_size: int,
    method: str,
    context: str,
) -> tuple[list[np.ndarray], list[float]]:
    """Run face crops (float, [0, 255]) through the engine in batches; return the new
    crops, changed only inside the pixel footprint of each latent mask, and each face's
    worst exact-inversion residual (0 for the plain method).

    The footprint, not the (smaller) hard pixel mask: for a pixel model the decoded
    latent is then exactly the crop, so recovery can invert it exactly. Pasting into the
    photo with the facial mask as alpha keeps everything outside the mask unchanged."""
    out: list[np.ndarray] = []
    residuals: list[float] = []
    for start in range(0, len(crops), batch_size):
        part = range(start, min(start + batch_size, len(crops)))
        batch = np.stack([crops[i] for i in part])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        z0 = backbone.encode(x)
        m = torch.from_numpy(np.stack([latent_masks[i] for i in part]))[:, None].to(z0.device)
        z = engine.transform(z0, lambda zt, m=m, part=part: key_op(zt, m, part), m,
                             method=method, context=context)
        residuals += (engine.residuals.tolist() if method == "exact-steps"
                      else [0.0] * len(part))
        x_new = backbone.decode(z).float().cpu()
        new = ((x_new + 1.0) * 127.5).permute(0, 2, 3, 1).numpy()
        scale = backbone.scale_factor
        for j, i in enumerate(part):
            cells = np.kron(latent_masks[i], np.ones((scale, scale), bool)).astype(bool)
            out.append(np.where(cells[:, :, None], new[j], batch[j]).astype(np.float32))
    return out, residuals


def _convergence_notes(residuals: Sequence[float], verb: str,
                       numbers: Sequence[int]) -> list[str]:
    """Notes for faces whose exact inversion did not converge; ``numbers`` are the faces'
    numbers as the user sees them."""
    return [f"face {n}: exact inversion did not converge (worst step error {r:.3g}); its "
            f"{verb} will be less exact than usual"
            for n, r in zip(numbers, residuals, strict=True) if r > UNCONVERGED]


def _face_number(region: faces.FaceRegion, position: int) -> int:
    """A face's number in messages: its detection number (as ``--exclude`` and the
    preview count), else its position."""
    return position if region.index is None else region.index


def _crop_window_hash(pixels: np.ndarray, transform: np.ndarray, crop_size: int) -> str:
    """SHA-256 of the photo pixels a face's crop is sampled from (detects re-encoding)."""
    ones = np.ones((crop_size, crop_size), np.float32)
    _, (rows, cols) = faces.footprint(ones, transform, pixels.shape)
    window = np.ascontiguousarray(pixels[rows, cols])
    return hashlib.sha256(window.tobytes() + repr(window.shape).encode()).hexdigest()


def _residual(new_crop: np.ndarray, pixels: np.ndarray, region: faces.FaceRegion) -> np.ndarray:
    """The precision residual: what 8-bit rounding, clipping to [0, 255] and resampling
    did to an anonymized crop, in steps of 1/RESIDUAL_SCALE pixel (int16). Recovery adds
    it back to the crop it extracts, so the engine inverts exactly the latent that
    anonymization produced."""
    diff = new_crop - faces.extract(pixels, region.transform, region.crop_size)
    return np.clip(np.rint(diff * container.RESIDUAL_SCALE), -32768, 32767).astype(np.int16)


def _erode(mask: np.ndarray, r: int, outside: bool) -> np.ndarray:
    """Pixels whose whole (2r+1)^2 neighbourhood is in ``mask`` (``outside``: the value
    assumed beyond the crop's border)."""
    pad = np.pad(mask.astype(np.int32), r + 1, constant_values=int(outside))
    c = pad.cumsum(0).cumsum(1)
    k = 2 * r + 1
    total = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return total[: mask.shape[0], : mask.shape[1]] == k * k


def public_residual(q: np.ndarray, region: faces.FaceRegion) -> np.ndarray:
    """A residual fit to publish (deniable files): cleared wherever the facial mask blends
    the anonymized face with the original. There the published pixel is
    ``a * new + (1 - a) * original``, and the residual holds ``new - published``, which
    together would give the original back. Kept only where the mask is exactly 1 (the
    pixel is pure anonymized face) or exactly 0 (the pixel is the unchanged, public
    outside), with a margin for resampling between crop and photo."""
    soft = np.asarray(region.mask, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(np.asarray(region.transform)[:, :2])))
    r = int(math.ceil(scale)) + 2
    safe = _erode(soft >= 1.0, r, False) | _erode(soft <= 0.0, r, True)
    return np.where(safe[:, :, None], q, 0).astype(np.int16)


def _face_window(region: faces.FaceRegion, shape) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Where a face's hard mask lands in the photo: (boolean footprint, window)."""
    warped, window = faces.footprint((region.mask > 0).astype(np.float32), region.transform,
                                     shape)
    return warped > 0, window


def _lossless_png(original: np.ndarray, region: faces.FaceRegion) -> bytes:
    """The original pixels under a face's footprint, PNG-compressed (sealed later)."""
    inside, window = _face_window(region, original.shape)
    patch = np.where(inside[:, :, None], original[window], 0).astype(np.uint8)
    return images.encode_image(patch, "PNG")


def _lossless_restore(out: np.ndarray, region: faces.FaceRegion, png: bytes) -> None:
    """Put a face's original pixels back from its (unsealed) copy."""
    inside, window = _face_window(region, out.shape)
    try:
        patch = images.load_image(png).pixels
    except InputError:
        raise MetadataError("the lossless data of a face is corrupt") from None
    if patch.shape[:2] != inside.shape:
        raise MetadataError("the lossless data does not fit its face (corrupt metadata)")
    region_pixels = out[window]
    region_pixels[inside] = patch[inside]


def _latent_mask(backbone: Backbone, hard: np.ndarray) -> np.ndarray:
    m = backbone.latent_mask(torch.from_numpy(hard)[None, None])
    return m[0, 0].cpu().numpy().astype(bool)


def _mixing_rms(backbone: Backbone) -> float:
    """The RMS the masked noise is rescaled to before the keyed mixing (format 2).

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


def _masked_count(backbone: Backbone, latent_mask: np.ndarray) -> int:
    return int(latent_mask.sum()) * backbone.latent_channels


def _key_op(backbone: Backbone, face_keys: Sequence[FaceData], version: int, flip_kind: str,
            *, targets: Sequence[float | None] | None = None,
            radii: list[float | None] | None = None, secret: SecretKey | None = None) -> KeyOp:
    """The key operation on z_T for the faces of a record.

    Version 2 "mixed": each face's keyed orthogonal flip (:mod:`faceveil.mixing`);
    anonymization passes ``targets`` (the fixed radius each face's noise is rescaled
    to, or None) and receives the original norms in ``radii``; recovery passes the
    sealed norms in ``radii``. Version 2 "signs": the paper's flip with per-face signs.
    Version 1: the paper's flip with version 1 signs (``secret`` needed).
    """
    shape = backbone.latent_shape

    def signs_for(f: FaceData) -> np.ndarray:
        if version == 1:
            return secret.signs(f.nonce, shape)
        return f.key.signs(int(np.prod(shape))).reshape(shape)

    def op(z: torch.Tensor, mask: torch.Tensor, part: range) -> torch.Tensor:
        if version == 1 or flip_kind == "signs":
            k = torch.from_numpy(np.stack([signs_for(face_keys[i]) for i in part]))
            return sign_flip(z, k.to(z.device), mask)
        params = [face_keys[i].key.mixing(_masked_count(backbone, face_keys[i].latent_mask))
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


# ---------------------------------------------------------------------------
# Anonymize
# ---------------------------------------------------------------------------


def find_regions(
    pixels: np.ndarray,
    backbone: Backbone,
    *,
    aligned: bool = False,
    mask: np.ndarray | None = None,
    boxes: Sequence[tuple[int, int, int, int]] = (),
    exclude: Sequence[int] = (),
    detector: str | None = None,
    threshold: float | None = None,
    min_face: int | None = None,
    parser: torch.nn.Module | None = None,
) -> tuple[list[faces.FaceRegion], list[dict]]:
    """The face regions to anonymize in ``pixels`` for this model's crop framing, and
    what was left out (see :func:`faces.find_faces`: excluded and too small detections,
    and low-score candidates, each with its ``kind`` and ``reason``).

    ``detector``, ``threshold`` and ``min_face`` default to the faces module's measured
    choices. With a face ``parser`` (see :mod:`faceveil.faces.parsing`) the masks come from its
    segmentation instead of the landmarks; a user ``mask`` overrides both.
    """
    framing = _framing(backbone)
    size = backbone.image_size
    if aligned or mask is not None:
        regions = [faces.aligned_region(pixels, framing=framing, crop_size=size, mask=mask)]
        skipped: list[dict] = []
    else:
        kwargs = {k: v for k, v in (("detector", detector), ("min_face", min_face))
                  if v is not None}
        regions, skipped = faces.find_faces(pixels, framing=framing, crop_size=size,
                                            threshold=threshold, boxes=boxes, exclude=exclude,
                                            **kwargs)
    if parser is not None and mask is None:
        from .faces.parsing import INPUT_SIZE, parse_mask

        for r in regions:
            # Parse a sharp crop at the parser's own resolution, straight from the photo,
            # and bring the labels down to the model's crop.
            sharp = np.vstack([np.asarray(r.transform) * (INPUT_SIZE / size)])
            sharp[:, 2] += 0.5 * (INPUT_SIZE / size) - 0.5  # keep pixel centres aligned
            hard = parse_mask(parser, faces.extract(pixels, sharp, INPUT_SIZE), size=size)
            if hard.any():
                r.mask = faces.soften(hard, PARSER_FEATHER * size)
    return regions, skipped


def box_region(pixels: np.ndarray, backbone: Backbone, box: Sequence[int],
               index: int | None = None) -> faces.FaceRegion:
    """The region of a face marked by hand with a box (x, y, w, h), framed for this model
    as ``find_regions(boxes=...)`` frames it, without running the detector again."""
    return faces.box_region(pixels, box, framing=_framing(backbone),
                            crop_size=backbone.image_size, index=index)


def resolution_notes(regions: Sequence[faces.FaceRegion], backbone: Backbone) -> list[str]:
    """Warnings for faces much larger than the model's crops (they come out soft)."""
    notes = []
    for i, r in enumerate(regions):
        scale = float(np.sqrt(abs(np.linalg.det(np.asarray(r.transform)[:, :2]))))
        if scale < 0.5:
            notes.append(
                f"face {_face_number(r, i)} is shrunk {1 / scale:.1f}x to fit the "
                f"{backbone.image_size}px model: "
                "its anonymized and recovered versions will look soft; a higher-resolution "
                "model (--model ldm-celebahq-256, or sd15) would do better"
            )
    return notes


@dataclass
class _Job:
    """One image on its way through anonymization."""

    loaded: images.LoadedImage
    regions: list[faces.FaceRegion]
    skipped: list[dict]
    mask: np.ndarray | None
    nonces: list[bytes]
    params: dict
    secret: SecretKey
    first: int = 0  # index of its first face in the batch of all faces
    extra: dict = field(default_factory=dict)  # more record fields, covered by its MAC
    crops: list[np.ndarray | None] | None = None  # new crops given (None: run the model)


def _check_nonces(nonces: Sequence[bytes], count: int) -> list[bytes]:
    nonces = [bytes(n) for n in nonces]
    if len(nonces) != count:
        raise InputError(f"one nonce per face is needed ({count} faces, {len(nonces)} nonces)")
    if any(len(n) != NONCE_BYTES for n in nonces):
        raise InputError(f"face nonces must be {NONCE_BYTES} random bytes each")
    if len(set(nonces)) != len(nonces):
        raise InputError("two faces were given the same nonce; nonces must never repeat")
    return nonces


def anonymize(
    image: ImageInput,
    key: KeySource,
    *,
    model: Backbone | str | None = None,
    aligned: bool = False,
    mask: np.ndarray | None = None,
    regions: Sequence[faces.FaceRegion] | None = None,
    steps: int = 50,
    spacing: str = "leading",
    deniable: bool = False,
    kdf: dict | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    nonces: Sequence[bytes] | None = None,
    method: str = DEFAULT_METHOD,
    context: str = "masked",
    lossless: bool = False,
    flip: str = DEFAULT_FLIP,
    salt: bytes | None = None,
    **find_kwargs,
) -> Anonymized:
    """Replace every face in ``image`` with another identity, reversibly under ``key``.

    Args:
        image: a path, PIL image or uint8 (H, W, 3) array.
        key: the secret (:class:`~faceveil.keys.KeySource`).
        model: a loaded backbone, a preset name, a diffusers folder or a hub id
            (default: the built-in model).
        aligned: the image is already an aligned face crop (no detection).
        mask: boolean (H, W) mask of what to replace (white = replace); implies aligned.
        regions: explicit face regions (skips detection entirely).
        steps, spacing: DDIM settings.
        deniable: store no key check and no MAC, so a wrong key silently yields another
            face; such a file holds nothing authenticated (no lossless copy, no original
            metadata, geometry and norm in clear: see SECURITY.md).
        kdf: Argon2id parameters for passphrases (default: 64 MiB, 3 passes).
        nonces: per-face nonces, 16 bytes each and all different (random by default;
            fixed ones, with a fixed ``salt``, make runs repeatable).
        salt: the file's 16-byte key salt (random by default). Every face's key material
            depends on it, so never give the same salt and nonces to two images.
        method: how the face is inverted to noise: "exact-steps" (each DDIM step solved
            exactly, so recovery can be near-exact) or "plain" (the paper's one pass).
        context: what is re-injected outside the mask while denoising: "masked" (a
            trajectory recovery can recompute exactly) or "own" (the paper's: the
            original image's trajectory, which recovery can only approximate).
        lossless: also store each face's original pixels, compressed and sealed under the
            key, so recovery with the key is bit-exact at full resolution.
        flip: the key operation: "mixed" (signs flipped in a keyed orthogonal basis, with
            the noise norm hidden: resists linking; the default) or "signs" (the
            paper's sign flip, kept for comparison).
        find_kwargs: detection options (``boxes``, ``exclude``, ``detector``,
            ``threshold``, ``min_face``; see :func:`find_regions`). What they left out is
            in the result's ``skipped`` (and in the ``skipped`` of the NoFaceError).

    Raises:
        NoFaceError: when no face is found.
    """
    result = anonymize_many([image], key, model=model, aligned=aligned, mask=mask,
                            regions=regions, steps=steps, spacing=spacing, deniable=deniable,
                            kdf=kdf, device=device, batch_size=batch_size, progress=progress,
                            nonces=nonces, method=method, context=context, lossless=lossless,
                            flip=flip, salt=salt, **find_kwargs)[0]
    if isinstance(result, Exception):
        raise result
    return result


def anonymize_many(
    sources: Sequence[ImageInput],
    key: KeySource,
    *,
    model: Backbone | str | None = None,
    aligned: bool = False,
    mask: np.ndarray | None = None,
    regions: Sequence[faces.FaceRegion] | None = None,
    steps: int = 50,
    spacing: str = "leading",
    deniable: bool = False,
    kdf: dict | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    nonces: Sequence[bytes] | None = None,
    method: str = DEFAULT_METHOD,
    context: str = "masked",
    lossless: bool = False,
    flip: str = DEFAULT_FLIP,
    salt: bytes | None = None,
    **find_kwargs,
) -> list[Anonymized | Exception]:
    """:func:`anonymize` for several images, their faces batched together for the model
    (a folder of small photos fills the batches). Options are those of
    :func:`anonymize` and apply to every image (``mask``, ``regions``, ``nonces`` and
    ``salt`` only make sense for one image). Each image gets its own salt and nonces.

    Returns:
        One entry per source: its :class:`Anonymized`, or the exception that stopped it
        (a :class:`FaceveilError` such as a bad file or no face; anything else is a
        bug), so one bad image does not stop the rest.
    """
    _check_options(method, context, flip, deniable, lossless)
    if len(sources) > 1 and any(v is not None for v in (mask, regions, nonces, salt)):
        raise InputError("mask, regions, nonces and salt apply to one image at a time")
    backbone = get_model(model, device)
    jobs: list[_Job | Exception] = []
    for source in sources:
        try:
            jobs.append(_prepare(source, key, backbone, aligned=aligned, mask=mask,
                                 regions=regions, nonces=nonces, deniable=deniable, kdf=kdf,
                                 salt=salt, **find_kwargs))
        except FaceveilError as e:
            jobs.append(e)
        except Exception as e:  # noqa: BLE001 - a bug on one image must not stop the others
            if len(sources) == 1:
                raise
            jobs.append(e)
    return _anonymize_jobs(jobs, backbone, steps=steps, spacing=spacing, deniable=deniable,
                           batch_size=batch_size, progress=progress, method=method,
                           context=context, lossless=lossless, flip=flip)


def _check_options(method: str, context: str, flip: str, deniable: bool,
                   lossless: bool) -> None:
    if method not in METHODS or context not in CONTEXTS:
        raise InputError(f"method must be one of {METHODS} and context one of {CONTEXTS}")
    if flip not in FLIPS:
        raise InputError(f"flip must be one of {FLIPS}, not {flip!r}")
    if deniable and lossless:
        raise InputError("--lossless cannot be deniable: the sealed original pixels would "
                         "tell a wrong key from the right one; choose one of them")


@dataclass
class SequenceFrame:
    """One image of a sequence (a video frame) whose faces are already known.

    ``nonces`` holds one per region; in a video a track keeps its nonce in every frame
    (so its key material, hence its synthetic identity, stays the same). ``extra``
    fields are added to the frame's record before its MAC (a video's frame number).
    ``crops``, when given, holds per region a new aligned face (float, ``[0, 255]``, as
    :func:`generate_faces` makes them) to paste as it is, or None to run the model on
    the region: a video reuses a track's one generated face in every frame."""

    pixels: np.ndarray
    regions: list[faces.FaceRegion]
    nonces: list[bytes]
    extra: dict = field(default_factory=dict)
    crops: list[np.ndarray | None] | None = None


def anonymize_sequence(
    frames: Sequence[SequenceFrame],
    secret: SecretKey,
    params: dict,
    *,
    model: Backbone | str | None = None,
    steps: int = 50,
    spacing: str = "leading",
    device: str | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    method: str = DEFAULT_METHOD,
    context: str = "masked",
    lossless: bool = False,
    flip: str = DEFAULT_FLIP,
) -> list[Anonymized]:
    """Anonymize the frames of one sequence, their faces batched together for the model.

    Every frame's record uses the same key: ``params`` (``type``, ``salt``, ``kdf``, as
    :meth:`KeySource.new_params` makes them) and ``secret``, its resolution (a
    passphrase is stretched once per sequence, not per frame). Faces and nonces are the
    caller's (no detection here). Never deniable. Options are those of :func:`anonymize`.

    Faces given a new crop (``SequenceFrame.crops``) are not this frame's own diffusion
    result, so no diffusion can recover them: ``lossless`` must be set, and the records
    of such a call offer lossless recovery only.

    Raises:
        InputError: a frame without faces, or bad nonces, crops or options.
    """
    _check_options(method, context, flip, False, lossless)
    if bytes(params["salt"]) != secret.salt:
        raise InputError("the key parameters do not belong to this resolved key")
    backbone = get_model(model, device)
    jobs: list[_Job | FaceveilError] = []
    size = backbone.image_size
    for frame in frames:
        if not frame.regions:
            raise InputError("every frame given to anonymize_sequence needs a face")
        given = list(frame.crops) if frame.crops is not None else [None] * len(frame.regions)
        if len(given) != len(frame.regions) or any(
                c is not None and np.shape(c) != (size, size, 3) for c in given):
            raise InputError(f"one new crop ({size}x{size} RGB) or None per face is needed")
        if any(c is not None for c in given) and not lossless:
            raise InputError("faces given a new crop can only be recovered from their sealed "
                             "originals: pass lossless=True")
        loaded = images.LoadedImage(np.ascontiguousarray(frame.pixels),
                                    grayscale=images.is_gray(frame.pixels))
        jobs.append(_Job(loaded, list(frame.regions), [], None,
                         _check_nonces(frame.nonces, len(frame.regions)), params, secret,
                         extra=dict(frame.extra), crops=given))
    results = _anonymize_jobs(jobs, backbone, steps=steps, spacing=spacing, deniable=False,
                              batch_size=batch_size, progress=progress, method=method,
                              context=context, lossless=lossless, flip=flip)
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results  # type: ignore[return-value]


def _face_data(backbone: Backbone, region: faces.FaceRegion, nonce: bytes,
               secret: SecretKey) -> FaceData:
    return FaceData(box=tuple(int(v) for v in region.box), crop_size=int(region.crop_size),
                    nonce=nonce, transform=np.asarray(region.transform, dtype=np.float64),
                    mask=region.mask > 0, latent_mask=_latent_mask(backbone, region.mask > 0),
                    source=region.source, key=secret.face(nonce))


def _generate(backbone: Backbone, engine: Engine, face_data: Sequence[FaceData],
              crops: Sequence[np.ndarray], *, hide: bool, batch_size: int, method: str,
              context: str, flip: str) -> tuple[list[np.ndarray], list[float | None],
                                                list[float]]:
    """The engine's new crops for these faces, with their original noise norms (None
    where the norm was kept) and exact-inversion residuals."""
    rms = _mixing_rms(backbone)
    targets = [mixing.target_radius(_masked_count(backbone, f.latent_mask), rms) if hide
               else None for f in face_data]
    radii: list[float | None] = [None] * len(face_data)
    op = _key_op(backbone, face_data, 2, flip, targets=targets, radii=radii)
    new_crops, residuals = _run_engine(backbone, engine, crops,
                                       [f.latent_mask for f in face_data], op, batch_size,
                                       method, context)
    return new_crops, radii, residuals


def generate_faces(
    pixels: Sequence[np.ndarray],
    regions: Sequence[faces.FaceRegion],
    nonces: Sequence[bytes],
    secret: SecretKey,
    *,
    model: Backbone | str | None = None,
    steps: int = 50,
    spacing: str = "leading",
    device: str | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    method: str = DEFAULT_METHOD,
    context: str = "masked",
    flip: str = DEFAULT_FLIP,
) -> list[np.ndarray]:
    """The new aligned face of each region of ``pixels[i]`` (the engine step alone).

    Returns float32 crops (``model.image_size`` square, ``[0, 255]``), changed only
    inside each region's latent mask, ready for ``SequenceFrame.crops``: a video
    generates a track's face once and pastes it into every frame. ``regions[i]`` is a
    face of ``pixels[i]``, ``nonces[i]`` its key nonce (``secret.face(nonce)``).
    """
    _check_options(method, context, flip, False, False)
    if not len(pixels) == len(regions) == len(nonces):
        raise InputError("one image, region and nonce per face is needed")
    backbone = get_model(model, device)
    size = backbone.image_size
    data = [_face_data(backbone, r, bytes(n), secret) for r, n in zip(regions, nonces,
                                                                      strict=True)]
    crops = [faces.extract(p, r.transform, size) for p, r in zip(pixels, regions,
                                                                 strict=True)]
    engine = Engine(backbone, steps=steps, spacing=spacing, progress=progress)
    new, _, _ = _generate(backbone, engine, data, crops, hide=flip == "mixed",
                          batch_size=batch_size, method=method, context=context, flip=flip)
    return new


def _anonymize_jobs(jobs: Sequence[_Job | Exception], backbone: Backbone, *, steps: int,
                    spacing: str, deniable: bool, batch_size: int, progress: Progress | None,
                    method: str, context: str, lossless: bool,
                    flip: str) -> list[Anonymized | Exception]:
    """The faces of every prepared image through the engine in shared batches, then each
    image's new faces pasted and its record built (errors stay in their place). Faces
    given a new crop (``_Job.crops``) skip the engine."""
    ready = [j for j in jobs if isinstance(j, _Job)]
    all_faces: list[FaceData] = []
    given: list[np.ndarray | None] = []
    for job in ready:
        job.first = len(all_faces)
        all_faces += [_face_data(backbone, region, nonce, job.secret)
                      for region, nonce in zip(job.regions, job.nonces, strict=True)]
        given += job.crops if job.crops is not None else [None] * len(job.regions)
    run = [i for i, c in enumerate(given) if c is None]
    size = backbone.image_size
    pixels_of = [job.loaded.pixels for job in ready for _ in job.regions]
    regions_all = [region for job in ready for region in job.regions]

    hide = flip == "mixed" and not deniable
    engine = Engine(backbone, steps=steps, spacing=spacing, progress=progress)
    new_crops = [None if c is None else np.asarray(c, np.float32) for c in given]
    radii: list[float | None] = [None] * len(all_faces)
    residuals = [0.0] * len(all_faces)
    if run:
        made, made_radii, made_residuals = _generate(
            backbone, engine, [all_faces[i] for i in run],
            [faces.extract(pixels_of[i], regions_all[i].transform, size) for i in run],
            hide=hide, batch_size=batch_size, method=method, context=context, flip=flip)
        for k, i in enumerate(run):
            new_crops[i], radii[i], residuals[i] = made[k], made_radii[k], made_residuals[k]

    # A face given its crop is not its own diffusion result: only its sealed original
    # brings it back.
    reused = len(run) < len(all_faces)
    sampler = {
        "name": "ddim", "eta": 0, "steps": steps, "spacing": spacing,
        "timesteps": list(engine.schedule.timesteps), "inversion": method, "context": context,
        "flip": flip, "norm": "hidden" if hide else "kept",
        "recovery_methods": (["lossless"] if lossless else [])
        + ([] if reused else list(RECOVERY_METHODS)),
        "default_recovery": "lossless" if lossless else method,
    }
    results: list[Anonymized | Exception] = []
    for job in jobs:
        if not isinstance(job, _Job):
            results.append(job)
            continue
        span = range(job.first, job.first + len(job.regions))
        try:
            results.append(_finish(job, backbone, sampler, [all_faces[i] for i in span],
                                   [new_crops[i] for i in span], [radii[i] for i in span],
                                   [residuals[i] for i in span], deniable, lossless,
                                   [given[i] is not None for i in span]))
        except Exception as e:  # noqa: BLE001 - reported per image, as above
            if len(jobs) == 1:
                raise
            results.append(e)
    return results


def _prepare(source: ImageInput, key: KeySource, backbone: Backbone, *, aligned: bool,
             mask: np.ndarray | None, regions: Sequence[faces.FaceRegion] | None,
             nonces: Sequence[bytes] | None, deniable: bool, kdf: dict | None,
             salt: bytes | None = None, **find_kwargs) -> _Job:
    """Decode an image, find its faces and resolve its key (a fresh salt per file)."""
    loaded = _load(source)
    pixels = loaded.pixels
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != pixels.shape[:2]:
            raise InputError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{pixels.shape[1]}x{pixels.shape[0]}; they must be the same size"
            )
    skipped: list[dict] = []
    if regions is None:
        regions, skipped = find_regions(pixels, backbone, aligned=aligned, mask=mask,
                                        **find_kwargs)
    regions = list(regions)
    if not regions:
        small = sum(s.get("kind") == "small" for s in skipped)
        error = NoFaceError("no face found" + (f" ({small} too small)" if small else ""))
        error.skipped = skipped  # what was left out, for a report
        raise error
    if deniable and "text:faceveil" in loaded.metadata:
        raise InputError("this image is itself an anonymized faceveil file; its inner record "
                         "cannot be kept in a deniable file (recover it first, or anonymize "
                         "it without --deniable)")
    nonces = _check_nonces(nonces if nonces is not None else
                           [secrets.token_bytes(NONCE_BYTES) for _ in regions], len(regions))
    params = key.new_params(kdf)
    if salt is not None:
        if len(salt) != len(params["salt"]):
            raise InputError(f"a salt must be {len(params['salt'])} bytes")
        params["salt"] = bytes(salt)
    return _Job(loaded, regions, skipped, mask, nonces, params, key.resolve(params))


def _finish(job: _Job, backbone: Backbone, sampler: dict, face_data: list[FaceData],
            new_crops: list[np.ndarray], radii: list[float | None], residuals: list[float],
            deniable: bool, lossless: bool, given: list[bool]) -> Anonymized:
    """Paste one image's new faces and build its record (``given``: faces whose crop was
    given, which get no precision residual: diffusion cannot recover them)."""
    pixels = job.loaded.pixels
    out = pixels
    for region, crop in zip(job.regions, new_crops, strict=True):
        out = faces.paste(out, crop, region.transform, region.mask)
    if job.loaded.grayscale:  # a grayscale photo stays grayscale (faces too)
        out = images.to_gray(out)
    if job.mask is not None:  # black in the user's mask means "keep", exactly
        out = np.where(job.mask[:, :, None], out, pixels)
        # What anonymization changed, exactly: recovery changes no more.
        face_data[0].photo_mask = job.mask
    notes = list(job.loaded.notes)
    for f, region, crop, radius, reused in zip(face_data, job.regions, new_crops, radii,
                                               given, strict=True):
        q = None if reused else _residual(crop, out, region)
        f.residual = public_residual(q, region) if deniable and q is not None else q
        f.window_sha256 = _crop_window_hash(out, region.transform, region.crop_size)
        f.radius = radius
        if lossless:
            f.lossless = _lossless_png(pixels, region)
    metadata = job.loaded.metadata
    if deniable and metadata:
        notes.append("deniable mode: the input's own metadata (" + ", ".join(sorted(metadata))
                     + ") was removed and not kept, since nothing in a deniable file may "
                     "authenticate")
    record = {
        "format": container.FORMAT,
        "version": container.VERSION,
        "created_by": f"faceveil {__version__}",
        "model": backbone.describe(),
        "sampler": sampler,
        "key": {
            "type": job.params["type"],
            "salt": container.b64e(job.params["salt"]),
            "kdf": job.params.get("kdf"),
            "check": None if deniable else container.b64e(job.secret.check_value()),
        },
        "image": {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
        "faces": [container.face_entry(f, job.secret, deniable) for f in face_data],
        "original_metadata": None if deniable else container.seal_metadata(job.secret,
                                                                            metadata),
        **job.extra,
    }
    mac = None if deniable else job.secret.mac(container.canonical_bytes(record))
    record = container.finalize(record, mac)
    notes += resolution_notes(job.regions, backbone)
    notes += _convergence_notes(residuals, "recovery",
                                [_face_number(r, i) for i, r in enumerate(job.regions)])
    return Anonymized(out, record, job.regions, job.skipped, notes)


# ---------------------------------------------------------------------------
# Recover
# ---------------------------------------------------------------------------


def _region(f: FaceData) -> faces.FaceRegion:
    return faces.FaceRegion(box=f.box, transform=f.transform, crop_size=f.crop_size,
                            mask=f.mask.astype(np.float32), landmarks=None, source=f.source,
                            score=None)


def read_record(image: ImageInput, meta: str | os.PathLike | dict | None = None) -> dict:
    """The metadata record for an anonymized image: from ``meta`` or the PNG chunk."""
    return container.read_record(image, meta)


def recover(
    image: ImageInput,
    key: KeySource,
    *,
    meta: str | os.PathLike | dict | None = None,
    model: Backbone | str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    method: str | None = None,
    residual: bool = True,
    deniable: bool = False,
) -> Recovered:
    """Restore the original faces of an anonymized image with the right key.

    The model is reloaded from the reference in the record unless ``model`` says
    where to find it; either way its weights must hash to the recorded value.
    ``method`` picks the recovery ("lossless", "exact-steps" or "plain"; default: the
    one the file names). ``residual=False`` ignores the stored precision residual (to
    measure the reference method as it was). ``deniable=True`` accepts a file without
    key check and MAC (made with ``--deniable``): nothing in it is authenticated, a
    wrong key yields other faces, and its model reference is only followed when it
    names a preset (pass ``model`` otherwise).

    Raises:
        WrongKeyError: the key is not the one the file was made with.
        MetadataError: missing, corrupt, modified or (without ``deniable``)
            unauthenticated metadata.
        ModelError: the model cannot be found or has different weights.
    """
    result = recover_many([image], key, metas=[meta], model=model, device=device,
                          batch_size=batch_size, progress=progress, method=method,
                          residual=residual, deniable=deniable)[0]
    if isinstance(result, Exception):
        raise result
    return result


@dataclass
class _Restore:
    """One image on its way through recovery."""

    loaded: images.LoadedImage
    record: dict
    opened: OpenedRecord
    out: np.ndarray
    todo: list[int]  # faces recovered by diffusion
    restored: list[int]  # faces restored from their sealed originals
    intact: list[bool]
    method: str
    notes: list[str]


def recover_many(
    sources: Sequence[ImageInput],
    key: KeySource,
    *,
    metas: Sequence[str | os.PathLike | dict | None] | None = None,
    model: Backbone | str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    method: str | None = None,
    residual: bool = True,
    deniable: bool = False,
) -> list[Recovered | FaceveilError]:
    """:func:`recover` for several images (``metas``: one metadata source per image, or
    None), the faces of those made with the same model and sampler batched together for
    the model (the frames of a video).

    Returns:
        One entry per source: its :class:`Recovered`, or the :class:`FaceveilError`
        that stopped it, so one bad image does not stop the rest.
    """
    metas = [None] * len(sources) if metas is None else list(metas)
    if len(metas) != len(sources):
        raise InputError("one metadata source per image is needed")
    items: list[_Restore | FaceveilError] = []
    for source, meta in zip(sources, metas, strict=True):
        try:
            items.append(_plan_recovery(source, key, meta, method, deniable))
        except FaceveilError as e:
            items.append(e)
    groups: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        if isinstance(item, _Restore) and item.todo:
            if not all(item.intact[i] for i in item.todo) and residual:
                item.notes.append(
                    "the image was re-encoded since anonymization (e.g. JPEG): its faces "
                    "were recovered by diffusion from the re-encoded pixels alone, which "
                    "usually fails to restore them (about 15 dB with the built-in model); "
                    "keep the PNG, or anonymize with --lossless to recover faces after "
                    "re-encoding")
            r = item.record
            # Faces share a model run only when model, sampler and key scheme agree.
            same = [r["model"], r["sampler"], item.method, r["version"],
                    r["key"]["salt"] if r["version"] == 1 else None]
            groups.setdefault(json.dumps(same, sort_keys=True), []).append(n)
    for members in groups.values():
        group = [items[n] for n in members]
        try:
            residuals = _diffusion_recover(group, model, device, batch_size, progress,
                                           residual)
        except FaceveilError as e:
            for n in members:
                items[n] = e
            continue
        for item, r in zip(group, residuals, strict=True):
            item.notes += _convergence_notes(r, "recovered face", item.todo)
    results: list[Recovered | FaceveilError] = []
    for item in items:
        try:
            results.append(item if isinstance(item, FaceveilError) else _finish_recovery(item))
        except FaceveilError as e:
            results.append(e)
    return results


def _plan_recovery(image: ImageInput, key: KeySource, meta, method: str | None,
                   deniable: bool) -> _Restore:
    """Open an image's record with the key and decide how each face comes back."""
    loaded = _load(image)
    record = read_record(loaded, meta)
    pixels = loaded.pixels
    size = record["image"]
    if (pixels.shape[1], pixels.shape[0]) != (size["width"], size["height"]):
        raise InputError(
            f"image is {pixels.shape[1]}x{pixels.shape[0]} but its metadata describes "
            f"{size['width']}x{size['height']}: not the image this metadata belongs to"
        )
    opened = container.open_record(record, key, deniable=deniable)
    sampler = record["sampler"]
    supported = sampler.get("recovery_methods", ["plain"])
    method = method or sampler.get("default_recovery", "plain")
    if method not in supported:
        raise InputError(f"this file supports recovery methods {supported}, not {method!r}")
    notes = list(loaded.notes)
    # Whether the published pixels around each face are those anonymization wrote.
    intact = [f.window_sha256 == _crop_window_hash(pixels, f.transform, f.crop_size)
              for f in opened.faces]
    todo = list(range(len(opened.faces)))
    if method == "lossless":
        restored = [i for i in todo if opened.faces[i].lossless is not None]
        todo = [i for i in todo if i not in restored]
        if restored and not all(intact[i] for i in restored):
            notes.append("the image was re-encoded since anonymization: its faces were "
                         "restored bit-exactly from their sealed originals, and the rest of "
                         "the image is the re-encoded one")
        method = sampler.get("inversion", "plain")
    else:
        restored = []
    return _Restore(loaded, record, opened, pixels.copy(), todo, restored, intact, method,
                    notes)


def _finish_recovery(item: _Restore) -> Recovered:
    """Put back the sealed originals, apply the user mask and the grayscale flag."""
    out, pixels, opened = item.out, item.loaded.pixels, item.opened
    for i in item.restored:  # lossless faces win where faces overlap
        _lossless_restore(out, _region(opened.faces[i]), opened.faces[i].lossless)
    for f in opened.faces:
        if f.photo_mask is not None:  # a user mask: pixels outside it were never changed
            if f.photo_mask.shape != pixels.shape[:2]:
                raise MetadataError("faceveil metadata is corrupt (the mask does not fit)")
            out = np.where(f.photo_mask[:, :, None], out, pixels)
    if item.loaded.grayscale:  # the anonymized file is grayscale, so was the original
        out = images.to_gray(out)
    return Recovered(out, opened.metadata, item.notes, item.record, opened.faces)


def _recovery_model(opened: OpenedRecord, model, device) -> Backbone:
    recorded = opened.record["model"]
    reference = recorded["reference"]
    if model is None and not opened.authenticated and "preset" not in reference:
        # An unauthenticated record could point anywhere (a path, a hub repository):
        # only the user says where to load code and weights from.
        raise ModelError(
            f"this deniable file names the model {reference}; faceveil does not follow a "
            "model location from an unauthenticated file: pass --model to say where it is"
        )
    try:
        return get_model(model if model is not None else reference, device,
                         expect_sha256=recorded.get("sha256"))
    except ModelError:
        preset = reference.get("preset")
        if model is None and preset and PRESETS.get(preset) and PRESETS[preset].folder:
            # Built-in weights never change under one name; a mismatch means another
            # release. The file names the one that made it.
            raise ModelError(
                f"this file was made with built-in model {preset!r} of "
                f"{opened.record.get('created_by', 'another faceveil release')}, whose "
                "weights this installation does not have; recover it with that release"
            ) from None
        raise


def _diffusion_recover(items: Sequence[_Restore], model, device, batch_size, progress,
                       residual) -> list[list[float]]:
    """Recover the ``todo`` faces of images made with one model and sampler by running
    the engine on their (residual-corrected) crops in shared batches; each item's
    ``out`` gets its faces. Returns each item's per-face convergence residuals."""
    first = items[0].opened
    backbone = _recovery_model(first, model, device)
    face_data = [item.opened.faces[i] for item in items for i in item.todo]
    for f in face_data:
        if f.crop_size != backbone.image_size or f.latent_mask.shape != backbone.latent_shape[1:]:
            raise ModelError("the model's resolution does not match the file's face crops")
    sampler = first.sampler
    engine = Engine(backbone, steps=int(sampler["steps"]), spacing=sampler["spacing"],
                    progress=progress)
    if list(engine.schedule.timesteps) != list(sampler["timesteps"]):
        raise MetadataError("the file's DDIM timesteps do not match this model's scheduler")
    flip_kind = sampler.get("flip", "signs")
    radii = None
    if first.version >= 2 and flip_kind == "mixed" and sampler.get("norm") == "hidden":
        radii = [f.radius for f in face_data]
        if any(r is None for r in radii):
            raise MetadataError("faceveil metadata is corrupt (a face's noise radius)")
    op = _key_op(backbone, face_data, first.version, flip_kind, radii=radii,
                 secret=first.secret)
    crops = []
    for item in items:
        for i in item.todo:
            f = item.opened.faces[i]
            crop = faces.extract(item.loaded.pixels, f.transform, backbone.image_size)
            crops.append(crop + f.residual if residual and item.intact[i]
                         and f.residual is not None else crop)
    new_crops, residuals = _run_engine(backbone, engine, crops,
                                       [f.latent_mask for f in face_data], op, batch_size,
                                       items[0].method, sampler.get("context", "own"))
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


def inspect(image: ImageInput, meta: str | os.PathLike | None = None) -> dict:
    """The metadata record of an anonymized image (nothing secret is in it)."""
    return container.read_record(image, meta)


def open_record(image: ImageInput, key: KeySource, *,
                meta: str | os.PathLike | dict | None = None,
                deniable: bool = False) -> OpenedRecord:
    """The key holder's view of an anonymized file: its record opened with the key
    (key check and MAC verified, sealed per-face geometry, residuals and original
    metadata decrypted). See :func:`faceveil.container.open_record`."""
    return container.open_record(read_record(image, meta), key, deniable=deniable)


def sidecar_path(output: str | os.PathLike) -> Path:
    """Where ``anonymize --sidecar`` writes the metadata for ``output``."""
    out = Path(output)
    return out.with_name(out.stem + ".faceveil.json")


# ---------------------------------------------------------------------------
# Video (faceveil.video; needs the `video` extra, PyAV)
# ---------------------------------------------------------------------------


def anonymize_video(src: str | os.PathLike, dst: str | os.PathLike, key: KeySource,
                    **options):
    """Anonymize a clip, one synthetic identity per tracked person: see
    :func:`faceveil.video.anonymize_video` (returns its :class:`~faceveil.video.VideoResult`)."""
    from . import video

    return video.anonymize_video(src, dst, key, **options)


def recover_video(src: str | os.PathLike, dst: str | os.PathLike, key: KeySource,
                  **options):
    """Restore the original faces of an anonymized clip: see
    :func:`faceveil.video.recover_video`."""
    from . import video

    return video.recover_video(src, dst, key, **options)
