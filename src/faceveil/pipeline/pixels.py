"""Pixel bookkeeping around a face: the published window's hash, the precision residual,
and the sealed original pixels (``lossless``) with their restoration."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from .. import faces, images
from ..errors import InputError, MetadataError
from ..format.fields import RESIDUAL_SCALE


def window_hash(pixels: np.ndarray, transform: np.ndarray, crop_size: int) -> str:
    """SHA-256 of the photo pixels a face's crop is sampled from (detects re-encoding)."""
    ones = np.ones((crop_size, crop_size), np.float32)
    _, (rows, cols) = faces.footprint(ones, transform, pixels.shape)
    window = np.ascontiguousarray(pixels[rows, cols])
    return hashlib.sha256(window.tobytes() + repr(window.shape).encode()).hexdigest()


def residual(new_crop: np.ndarray, pixels: np.ndarray, region: faces.FaceRegion) -> np.ndarray:
    """The precision residual: what 8-bit rounding, clipping to [0, 255] and resampling
    did to an anonymized crop, in steps of 1/RESIDUAL_SCALE pixel (int16). Recovery adds
    it back to the crop it extracts, so the engine inverts exactly the latent that
    anonymization produced."""
    diff = new_crop - faces.extract(pixels, region.transform, region.crop_size)
    return np.clip(np.rint(diff * RESIDUAL_SCALE), -32768, 32767).astype(np.int16)


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
    safe = faces.erode(soft >= 1.0, r, False) | faces.erode(soft <= 0.0, r, True)
    return np.where(safe[:, :, None], q, 0).astype(np.int16)


def face_window(mask: np.ndarray, transform: np.ndarray, shape) -> tuple[np.ndarray,
                                                                         tuple[slice, slice]]:
    """Where a face's hard crop mask lands in the photo: (boolean footprint, window)."""
    warped, window = faces.footprint((np.asarray(mask) > 0).astype(np.float32), transform,
                                     shape)
    return warped > 0, window


def original_patch(original: np.ndarray, region: faces.FaceRegion) -> bytes:
    """The original pixels under a face's footprint, PNG-compressed (sealed later)."""
    inside, window = face_window(region.mask, region.transform, original.shape)
    patch = np.where(inside[:, :, None], original[window], 0).astype(np.uint8)
    return images.encode_image(patch, "PNG")


def restore_original(out: np.ndarray, mask: np.ndarray, transform: np.ndarray,
                     png: bytes) -> None:
    """Put a face's original pixels back (in place) from its unsealed patch."""
    inside, window = face_window(mask, transform, out.shape)
    try:
        patch = images.load_image(png).pixels
    except InputError:
        raise MetadataError("the lossless data of a face is corrupt") from None
    if patch.shape[:2] != inside.shape:
        raise MetadataError("the lossless data does not fit its face (corrupt metadata)")
    region_pixels = out[window]
    region_pixels[inside] = patch[inside]
