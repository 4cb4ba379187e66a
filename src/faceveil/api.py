"""The Python API: anonymize, recover and inspect images. The CLI is a thin skin on it.

Anonymize, as data: image -> faces (crops, masks, transforms) -> keys (one nonce and
one sign tensor per face) -> engine (one batched pass) -> faces (blend back) ->
container (metadata record) -> PNG. Recover runs the same arrows backwards from the
record stored in the file.

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
import os
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import __version__, container, faces, images
from .engine import CONTEXTS, METHODS, Engine, Progress
from .errors import InputError, MetadataError, ModelError, NoFaceError, WrongKeyError
from .keys import NONCE_BYTES, KeySource, SecretKey
from .models import PRESETS, Backbone, load_model

ImageInput = str | os.PathLike | np.ndarray | Image.Image
RECOVERY_METHODS = METHODS  # "plain" (the paper's one-pass inversion), "exact-steps"
DEFAULT_METHOD = "exact-steps"
PARSER_FEATHER = 0.04  # soft edge of parser masks, as a fraction of the crop side


@dataclass
class Anonymized:
    """An anonymized image and the metadata record that makes it recoverable."""

    pixels: np.ndarray
    record: dict
    regions: list[faces.FaceRegion] = field(default_factory=list)
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
    """A recovered image and the original metadata (EXIF, ...) restored with it."""

    pixels: np.ndarray
    metadata: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)  # the anonymized file's metadata

    def encode(self, fmt: str = "PNG") -> bytes:
        return images.encode_image(self.pixels, fmt, metadata=self.metadata)

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
    if isinstance(image, Image.Image):
        notes: list[str] = []
        return images.LoadedImage(images.to_rgb(image, notes), {}, notes, image.format)
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
            raise InputError("an image array must be uint8 with shape (H, W, 3)")
        return images.LoadedImage(np.ascontiguousarray(a[:, :, :3]))
    return images.load_image(image)


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


def _run_engine(
    backbone: Backbone,
    engine: Engine,
    crops: Sequence[np.ndarray],
    regions: Sequence[faces.FaceRegion],
    signs: Sequence[np.ndarray],
    latent_masks: Sequence[np.ndarray],
    batch_size: int,
    method: str,
    context: str,
) -> list[np.ndarray]:
    """Run face crops (float, [0, 255]) through the engine in batches; return the new
    crops, changed only inside the pixel footprint of each latent mask.

    The footprint, not the (smaller) hard pixel mask: for a pixel model the decoded
    latent is then exactly the crop, so recovery can invert it exactly. Pasting into the
    photo with the facial mask as alpha keeps everything outside the mask unchanged."""
    out: list[np.ndarray] = []
    for start in range(0, len(regions), batch_size):
        part = range(start, min(start + batch_size, len(regions)))
        batch = np.stack([crops[i] for i in part])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        z0 = backbone.encode(x)
        k = torch.from_numpy(np.stack([signs[i] for i in part])).to(z0.device)
        m = torch.from_numpy(np.stack([latent_masks[i] for i in part]))[:, None].to(z0.device)
        z = engine.transform(z0, k, m, method=method, context=context)
        x_new = backbone.decode(z).float().cpu()
        new = ((x_new + 1.0) * 127.5).permute(0, 2, 3, 1).numpy()
        scale = backbone.scale_factor
        for j, i in enumerate(part):
            cells = np.kron(latent_masks[i], np.ones((scale, scale), bool)).astype(bool)
            out.append(np.where(cells[:, :, None], new[j], batch[j]).astype(np.float32))
    return out


# The precision residual: what 8-bit rounding, clipping to [0, 255] and resampling did to
# each anonymized crop, stored in 1/RESIDUAL_SCALE pixel steps. Recovery adds it back to
# the crop it extracts, so the engine inverts exactly the latent anonymization produced.
# It is a function of the anonymized face alone (like a 16-bit copy of the output) and
# says nothing about the original face beyond what the anonymized image does.
RESIDUAL_SCALE = 64


def _crop_window_hash(pixels: np.ndarray, region: faces.FaceRegion) -> str:
    """SHA-256 of the photo pixels a face's crop is sampled from (detects re-encoding)."""
    ones = np.ones((region.crop_size, region.crop_size), np.float32)
    _, (rows, cols) = faces.footprint(ones, region.transform, pixels.shape)
    window = np.ascontiguousarray(pixels[rows, cols])
    return hashlib.sha256(window.tobytes() + repr(window.shape).encode()).hexdigest()


def _residual_record(new_crop: np.ndarray, pixels: np.ndarray, region: faces.FaceRegion) -> dict:
    diff = new_crop - faces.extract(pixels, region.transform, region.crop_size)
    q = np.clip(np.rint(diff * RESIDUAL_SCALE), -32768, 32767).astype("<i2")
    return {
        "scale": RESIDUAL_SCALE,
        "window_sha256": _crop_window_hash(pixels, region),
        "data": container.b64e(zlib.compress(q.tobytes(), 9)),
    }


def _apply_residual(crop: np.ndarray, record: dict | None) -> np.ndarray:
    """The crop corrected by its stored residual (only valid on unmodified pixels)."""
    if not record:
        return crop
    try:
        q = np.frombuffer(zlib.decompress(container.b64d(record["data"], "residual")), "<i2")
        q = q.reshape(crop.shape).astype(np.float32)
    except (KeyError, ValueError, zlib.error):
        raise MetadataError("faceveil metadata is corrupt (a precision residual)") from None
    return crop + q / float(record["scale"])


def _face_window(region: faces.FaceRegion, shape) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Where a face's hard mask lands in the photo: (boolean footprint, window)."""
    warped, window = faces.footprint((region.mask > 0).astype(np.float32), region.transform,
                                     shape)
    return warped > 0, window


def _lossless_record(original: np.ndarray, region: faces.FaceRegion, secret: SecretKey,
                     nonce: bytes) -> dict:
    """The original pixels under a face's footprint, PNG-compressed and sealed under a
    key derived from the secret key and the face's nonce."""
    inside, window = _face_window(region, original.shape)
    patch = np.where(inside[:, :, None], original[window], 0).astype(np.uint8)
    png = images.encode_image(patch, "PNG")
    return {"data": container.b64e(secret.seal("lossless", png, nonce=nonce)), "bytes": len(png)}


def _lossless_restore(out: np.ndarray, region: faces.FaceRegion, face: dict, secret: SecretKey,
                      strict: bool) -> bool:
    """Put a face's original pixels back from its sealed copy; False if it does not open
    (a wrong key in deniable mode). Raises when it should open and does not."""
    png = secret.open("lossless", container.b64d(face["lossless"]["data"], "lossless data"),
                      nonce=container.b64d(face["nonce"], "nonce"))
    if png is None:
        if strict:
            raise MetadataError("the lossless data does not authenticate (tampered)")
        return False
    inside, window = _face_window(region, out.shape)
    patch = images.load_image(png).pixels
    if patch.shape[:2] != inside.shape:
        raise MetadataError("the lossless data does not fit its face (corrupt metadata)")
    region_pixels = out[window]
    region_pixels[inside] = patch[inside]
    return True


def _face_record(region: faces.FaceRegion, nonce: bytes, latent_mask: np.ndarray) -> dict:
    return {
        "box": [int(v) for v in region.box],
        "transform": np.asarray(region.transform, dtype=float).round(10).tolist(),
        "crop_size": int(region.crop_size),
        "source": region.source,
        "nonce": container.b64e(nonce),
        "mask": container.pack_mask(region.mask > 0),
        "latent_mask": container.pack_mask(latent_mask),
    }


def _latent_mask(backbone: Backbone, hard: np.ndarray) -> np.ndarray:
    m = backbone.latent_mask(torch.from_numpy(hard)[None, None])
    return m[0, 0].cpu().numpy().astype(bool)


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
    min_face: int = 40,
    parser: torch.nn.Module | None = None,
) -> tuple[list[faces.FaceRegion], list[dict]]:
    """The face regions to anonymize in ``pixels`` for this model's crop framing.

    With a face ``parser`` (see :mod:`faceveil.parsing`) the masks come from its
    segmentation instead of the landmarks; a user ``mask`` overrides both.
    """
    framing = _framing(backbone)
    size = backbone.image_size
    if aligned or mask is not None:
        regions = [faces.aligned_region(pixels, framing=framing, crop_size=size, mask=mask)]
        skipped: list[dict] = []
    else:
        kwargs = {} if detector is None else {"detector": detector}
        regions, skipped = faces.find_faces(pixels, framing=framing, crop_size=size,
                                            min_face=min_face, boxes=boxes, exclude=exclude,
                                            **kwargs)
    if parser is not None and mask is None:
        from .parsing import INPUT_SIZE, parse_mask

        for r in regions:
            # Parse a sharp crop at the parser's own resolution, straight from the photo,
            # and bring the labels down to the model's crop.
            sharp = np.vstack([np.asarray(r.transform) * (INPUT_SIZE / size)])
            sharp[:, 2] += 0.5 * (INPUT_SIZE / size) - 0.5  # keep pixel centres aligned
            hard = parse_mask(parser, faces.extract(pixels, sharp, INPUT_SIZE), size=size)
            if hard.any():
                r.mask = faces.soften(hard, PARSER_FEATHER * size)
    return regions, skipped


def resolution_notes(regions: Sequence[faces.FaceRegion], backbone: Backbone) -> list[str]:
    """Warnings for faces much larger than the model's crops (they come out soft)."""
    notes = []
    for i, r in enumerate(regions):
        scale = float(np.sqrt(abs(np.linalg.det(np.asarray(r.transform)[:, :2]))))
        if scale < 0.5:
            notes.append(
                f"face {i} is shrunk {1 / scale:.1f}x to fit the {backbone.image_size}px model: "
                "its anonymized and recovered versions will look soft; a higher-resolution "
                "model (--model ldm-celebahq-256, or sd15) would do better"
            )
    return notes


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
        deniable: store no key-check value, so a wrong key silently yields a face.
        kdf: Argon2id parameters for passphrases (default: 64 MiB, 3 passes).
        nonces: per-face nonces (random by default; fixed ones make runs repeatable).
        method: how the face is inverted to noise: "exact-steps" (each DDIM step solved
            exactly, so recovery can be near-exact) or "plain" (the paper's one pass).
        context: what is re-injected outside the mask while denoising: "masked" (a
            trajectory recovery can recompute exactly) or "own" (the paper's: the
            original image's trajectory, which recovery can only approximate).
        lossless: also store each face's original pixels, compressed and sealed under the
            key, so recovery with the key is bit-exact at full resolution.
        find_kwargs: detection options (``boxes``, ``exclude``, ``detector``, ``min_face``).

    Raises:
        NoFaceError: when no face is found.
    """
    if method not in METHODS or context not in CONTEXTS:
        raise InputError(f"method must be one of {METHODS} and context one of {CONTEXTS}")
    loaded = _load(image)
    pixels = loaded.pixels
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != pixels.shape[:2]:
            raise InputError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{pixels.shape[1]}x{pixels.shape[0]}; they must be the same size"
            )
    backbone = get_model(model, device)
    skipped: list[dict] = []
    if regions is None:
        regions, skipped = find_regions(pixels, backbone, aligned=aligned, mask=mask,
                                        **find_kwargs)
    regions = list(regions)
    if not regions:
        raise NoFaceError("no face found" + (f" ({len(skipped)} too small)" if skipped else ""))

    params = key.new_params(kdf)
    secret = key.resolve(params)
    nonces = list(nonces) if nonces is not None else [
        secrets.token_bytes(NONCE_BYTES) for _ in regions
    ]
    if len(nonces) != len(regions):
        raise ValueError("one nonce per face is needed")
    latent_masks = [_latent_mask(backbone, r.mask > 0) for r in regions]
    signs = [secret.signs(n, backbone.latent_shape) for n in nonces]

    engine = Engine(backbone, steps=steps, spacing=spacing, progress=progress)
    size = backbone.image_size
    crops = [faces.extract(pixels, r.transform, size) for r in regions]
    new_crops = _run_engine(backbone, engine, crops, regions, signs, latent_masks, batch_size,
                            method, context)
    out = pixels
    for region, crop in zip(regions, new_crops):
        out = faces.paste(out, crop, region.transform, region.mask)
    if mask is not None:  # black in the user's mask means "keep", exactly
        out = np.where(mask[:, :, None], out, pixels)
    residuals = [_residual_record(c, out, r) for c, r in zip(new_crops, regions)]
    extras = [{"residual": res} for res in residuals]
    if lossless:
        for extra, region, nonce in zip(extras, regions, nonces):
            extra["lossless"] = _lossless_record(pixels, region, secret, nonce)

    sealed = None
    if loaded.metadata:
        blob = json.dumps({k: container.b64e(v) for k, v in loaded.metadata.items()}).encode()
        sealed = container.b64e(secret.seal("original-metadata", blob))
    record = {
        "format": container.FORMAT,
        "version": container.VERSION,
        "created_by": f"faceveil {__version__}",
        "model": backbone.describe(),
        "sampler": {
            "name": "ddim",
            "eta": 0,
            "steps": steps,
            "spacing": spacing,
            "timesteps": list(engine.schedule.timesteps),
            "inversion": method,
            "context": context,
            "recovery_methods": (["lossless"] if lossless else []) + list(RECOVERY_METHODS),
            "default_recovery": "lossless" if lossless else method,
        },
        "key": {
            "type": params["type"],
            "salt": container.b64e(params["salt"]),
            "kdf": params.get("kdf"),
            "check": None if deniable else container.b64e(secret.check_value()),
        },
        "image": {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])},
        "faces": [{**_face_record(r, n, m), **extra}
                  for r, n, m, extra in zip(regions, nonces, latent_masks, extras)],
        "original_metadata": sealed,
    }
    mac = None if deniable else secret.mac(container.canonical_bytes(record))
    record = container.finalize(record, mac)
    notes = loaded.notes + resolution_notes(regions, backbone)
    return Anonymized(out, record, regions, skipped, notes)


# ---------------------------------------------------------------------------
# Recover
# ---------------------------------------------------------------------------


def _unlock(record: dict, key: KeySource) -> SecretKey:
    """Resolve the key for a record and check it; wrong keys fail unless deniable."""
    info = record["key"]
    try:
        params = {"type": info["type"], "salt": container.b64d(info["salt"], "salt"),
                  "kdf": info.get("kdf")}
    except (KeyError, TypeError):
        raise MetadataError("faceveil metadata is corrupt (key parameters)") from None
    if params["type"] == "passphrase" and key.kind == "file":
        raise WrongKeyError("wrong key: this file was anonymized with a passphrase, not a key file")
    secret = key.resolve(params)
    if info.get("check") is not None:
        if not secret.matches(container.b64d(info["check"], "key check")):
            raise WrongKeyError("wrong key: this file was anonymized with a different key")
        mac = record.get("mac")
        expected = secret.mac(container.canonical_bytes(record))
        if mac is None or not secrets.compare_digest(container.b64d(mac, "mac"), expected):
            raise MetadataError("faceveil metadata was modified after anonymization (MAC mismatch)")
    return secret


def _regions_from_record(record: dict) -> list[faces.FaceRegion]:
    regions = []
    for i, face in enumerate(record["faces"]):
        try:
            hard = container.unpack_mask(face["mask"])
            transform = np.asarray(face["transform"], dtype=np.float64)
            if transform.shape != (2, 3) or hard.shape != (face["crop_size"],) * 2:
                raise ValueError
            regions.append(faces.FaceRegion(
                box=tuple(face["box"]), transform=transform, crop_size=int(face["crop_size"]),
                mask=hard.astype(np.float32), landmarks=None, source=face.get("source", "file"),
                score=None,
            ))
        except (KeyError, TypeError, ValueError):
            raise MetadataError(f"faceveil metadata is corrupt (face {i})") from None
    return regions


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
) -> Recovered:
    """Restore the original faces of an anonymized image with the right key.

    The model is reloaded from the reference in the record unless ``model`` says
    where to find it; either way its weights must hash to the recorded value.
    ``method`` picks the recovery ("lossless", "exact-steps" or "plain"; default: the
    one the file names). ``residual=False`` ignores the stored precision residual (to
    measure the reference method as it was).

    Raises:
        WrongKeyError: the key is not the one the file was made with (unless the file
            is deniable, in which case a wrong key silently yields other faces).
        MetadataError: missing, corrupt or modified metadata.
        ModelError: the model cannot be found or has different weights.
    """
    if isinstance(image, (str, os.PathLike)):
        container.allow_large_chunks()
    loaded = _load(image)
    record = read_record(loaded, meta)
    pixels = loaded.pixels
    size = record["image"]
    if (pixels.shape[1], pixels.shape[0]) != (size.get("width"), size.get("height")):
        raise InputError(
            f"image is {pixels.shape[1]}x{pixels.shape[0]} but its metadata describes "
            f"{size.get('width')}x{size.get('height')}: not the image this metadata belongs to"
        )
    secret = _unlock(record, key)
    regions = _regions_from_record(record)
    sampler = record["sampler"]
    supported = sampler.get("recovery_methods", ["plain"])
    method = method or sampler.get("default_recovery", "plain")
    if method not in supported:
        raise InputError(f"this file supports recovery methods {supported}, not {method!r}")
    notes = list(loaded.notes)
    # Whether the anonymized pixels are still those anonymization wrote (not re-encoded).
    intact = [residual and
              face.get("residual", {}).get("window_sha256") == _crop_window_hash(pixels, r)
              for r, face in zip(regions, record["faces"])]
    if residual and any(face.get("residual") for face in record["faces"]) and not all(intact):
        notes.append("the image was re-encoded since anonymization (e.g. JPEG): recovering "
                     "by diffusion from its pixels alone, less exactly")

    out = pixels.copy()
    todo = list(range(len(regions)))
    if method == "lossless":
        strict = record["key"].get("check") is not None
        todo = [i for i in todo if not (intact[i] and "lossless" in record["faces"][i] and
                _lossless_restore(out, regions[i], record["faces"][i], secret, strict))]
        method = sampler.get("inversion", "plain")
    if todo:
        out = _diffusion_recover(out, pixels, record, [regions[i] for i in todo],
                                 [record["faces"][i] for i in todo], [intact[i] for i in todo],
                                 secret, method, model, device, batch_size, progress)
        if len(todo) < len(regions):  # lossless faces win where faces overlap
            for i in set(range(len(regions))) - set(todo):
                _lossless_restore(out, regions[i], record["faces"][i], secret, True)

    restored: dict[str, bytes] = {}
    if record.get("original_metadata"):
        blob = secret.open("original-metadata", container.b64d(record["original_metadata"]))
        if blob is not None:
            restored = {k: container.b64d(v) for k, v in json.loads(blob).items()}
        elif record["key"].get("check") is not None:
            raise MetadataError("the encrypted original metadata does not authenticate")
    return Recovered(out, restored, notes, record)


def _diffusion_recover(out, pixels, record, regions, face_records, intact, secret, method,
                       model, device, batch_size, progress) -> np.ndarray:
    """Recover faces by running the engine on their (residual-corrected) crops."""
    recorded = record["model"]
    try:
        backbone = get_model(model if model is not None else recorded["reference"], device,
                             expect_sha256=recorded.get("sha256"))
    except ModelError as e:
        preset = recorded["reference"].get("preset")
        if model is None and preset and PRESETS.get(preset) and PRESETS[preset].folder:
            # Built-in weights never change under one name; a mismatch means another
            # release. The file names the one that made it.
            raise ModelError(
                f"this file was made with built-in model {preset!r} of "
                f"{record.get('created_by', 'another faceveil release')}, whose weights this "
                "installation does not have; recover it with that release"
            ) from None
        raise e
    for r in regions:
        if r.crop_size != backbone.image_size:
            raise ModelError("the model's resolution does not match the file's face crops")
    sampler = record["sampler"]
    engine = Engine(backbone, steps=int(sampler["steps"]), spacing=sampler["spacing"],
                    progress=progress)
    if list(engine.schedule.timesteps) != list(sampler.get("timesteps", [])):
        raise MetadataError("the file's DDIM timesteps do not match this model's scheduler")
    latent_masks = [container.unpack_mask(f["latent_mask"]) for f in face_records]
    signs = [secret.signs(container.b64d(f["nonce"], "nonce"), backbone.latent_shape)
             for f in face_records]
    crops = []
    for region, face, ok in zip(regions, face_records, intact):
        crop = faces.extract(pixels, region.transform, backbone.image_size)
        crops.append(_apply_residual(crop, face.get("residual")) if ok else crop)
    new_crops = _run_engine(backbone, engine, crops, regions, signs, latent_masks, batch_size,
                            method, sampler.get("context", "own"))
    for region, crop in zip(regions, new_crops):
        # Paste hard over the whole footprint: the soft edge of anonymization mixed the
        # anonymized face into the photo there, and the recovered crop replaces it.
        out = faces.paste(out, crop, region.transform, (region.mask > 0).astype(np.float32))
    return out


def inspect(image: ImageInput, meta: str | os.PathLike | None = None) -> dict:
    """The metadata record of an anonymized image (nothing secret is in it)."""
    return container.read_record(image, meta)


def sidecar_path(output: str | os.PathLike) -> Path:
    """Where ``anonymize --sidecar`` writes the metadata for ``output``."""
    out = Path(output)
    return out.with_name(out.stem + ".faceveil.json")
