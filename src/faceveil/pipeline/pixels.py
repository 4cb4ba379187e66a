"""Pixel bookkeeping around a face: the published window's hash, the precision residual,
and the sealed original pixels (``lossless``) with their restoration."""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
from PIL import Image

from .. import faces, images
from ..errors import MetadataError
from ..format.fields import RESIDUAL_SCALE


def crop_window(transform: np.ndarray, crop_size: int, shape) -> tuple[slice, slice]:
    """The photo window a face's whole crop reaches (pasting never changes a pixel
    outside it)."""
    ones = np.ones((crop_size, crop_size), np.float32)
    return faces.footprint(ones, transform, shape)[1]


def window_hash(pixels: np.ndarray, transform: np.ndarray, crop_size: int) -> str:
    """SHA-256 of the photo pixels a face's crop is sampled from (detects re-encoding)."""
    window = np.ascontiguousarray(pixels[crop_window(transform, crop_size, pixels.shape)])
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


def original_patch(original: np.ndarray, anonymized: np.ndarray, mask: np.ndarray,
                   transform: np.ndarray) -> bytes:
    """A face's sealed original (format 3): an RGBA PNG over its crop window whose colour
    is the original's and whose alpha is 255 on the face's footprint and wherever
    anonymization changed a pixel (0, and colour 0, elsewhere). Recovery restores those
    pixels, so it is bit-exact whatever the paste touched, and the whole face comes back
    from a re-encoded copy too."""
    inside, (rows, cols) = face_window(mask, transform, original.shape)
    changed = inside | (anonymized[rows, cols] != original[rows, cols]).any(axis=2)
    rgba = np.zeros(changed.shape + (4,), np.uint8)
    rgba[changed, :3] = original[rows, cols][changed]
    rgba[changed, 3] = 255
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG", optimize=True)
    return buf.getvalue()


def restore_original(out: np.ndarray, mask: np.ndarray, transform: np.ndarray,
                     crop_size: int, png: bytes) -> None:
    """Put a face's original pixels back (in place) from its unsealed patch: an RGBA
    patch of its crop window (format 3), or an RGB patch of its hard mask's footprint
    (formats 1 and 2)."""
    try:
        with Image.open(io.BytesIO(png)) as img:
            if img.format != "PNG" or img.width * img.height > images.MAX_PIXELS:
                raise ValueError("not a patch")
            patch = np.asarray(img.convert("RGBA") if img.mode == "RGBA" else img.convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        raise MetadataError("the lossless data of a face is corrupt") from None
    if patch.shape[2] == 4:
        window = crop_window(transform, crop_size, out.shape)
        inside = patch[:, :, 3] == 255
    else:
        inside, window = face_window(mask, transform, out.shape)
    region_pixels = out[window]
    if patch.shape[:2] != region_pixels.shape[:2]:
        raise MetadataError("the lossless data does not fit its face (corrupt metadata)")
    region_pixels[inside] = patch[:, :, :3][inside]
