"""Reading images safely and writing outputs atomically.

Inputs are decoded with Pillow under a pixel limit (decompression bombs are refused),
EXIF orientation is applied, and every mode is brought to 8-bit RGB. The input's own
metadata (EXIF, XMP, ICC profile, comments, text chunks) is split off so the caller
can keep it encrypted instead of publishing it.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import InputError

MAX_PIXELS = 64_000_000
"""Largest image accepted (64 megapixels); larger ones are refused as possible bombs."""

# Metadata blobs Pillow exposes in ``Image.info`` that can identify or locate people.
_BLOB_KEYS = ("exif", "xmp", "icc_profile", "comment", "XML:com.adobe.xmp", "photoshop")


@dataclass
class LoadedImage:
    """An input image as 8-bit RGB pixels plus the metadata removed from it."""

    pixels: np.ndarray  # (H, W, 3) uint8
    metadata: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    format: str | None = None
    text: dict[str, str] = field(default_factory=dict)  # PNG text chunks, incl. faceveil's


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        if not Path(source).exists():
            raise InputError(f"{name!r} not found")
        if Path(source).is_dir():
            raise InputError(f"{name!r} is a folder, not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            if img.width * img.height > MAX_PIXELS:
                raise InputError(
                    f"{name!r} is {img.width}x{img.height} pixels, more than the limit of "
                    f"{MAX_PIXELS:,} pixels (a possible decompression bomb)"
                )
            img.load()
        except InputError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise InputError(f"{name!r} is too large to decode safely") from None
        except UnidentifiedImageError:
            raise InputError(f"{name!r} is not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{name!r} is corrupt or truncated ({e})") from None
    return img


def to_rgb(img: Image.Image, notes: list[str]) -> np.ndarray:
    """8-bit RGB pixels of any Pillow image; what was converted is added to ``notes``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        scale = 257.0 if a.max(initial=0) > 255 else 1.0
        a = np.clip(np.round(a / scale), 0, 255).astype(np.uint8)
        notes.append(f"converted {img.mode} to 8-bit RGB")
        return np.repeat(a[:, :, None], 3, axis=2)
    if img.mode == "F":
        a = np.clip(np.round(np.asarray(img)), 0, 255).astype(np.uint8)
        notes.append("converted float image to 8-bit RGB")
        return np.repeat(a[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        notes.append("alpha channel dropped (output is RGB)")
    if img.mode != "RGB":
        if img.mode not in ("L", "P", "RGBA", "LA", "PA", "1"):
            notes.append(f"converted {img.mode} to RGB")
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def load_image(source: str | os.PathLike | bytes) -> LoadedImage:
    """Decode an image file to 8-bit RGB with its EXIF orientation applied."""
    img = _open(source)
    fmt = img.format
    text = {k: v for k, v in getattr(img, "text", {}).items() if isinstance(v, str)}
    try:
        oriented = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block must not stop anonymization
        oriented = img
    metadata: dict[str, bytes] = {}
    for key in _BLOB_KEYS:
        value = oriented.info.get(key, img.info.get(key))
        if value:
            metadata[key] = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    for key, value in text.items():
        if key != "faceveil":
            metadata[f"text:{key}"] = value.encode("utf-8")
    notes: list[str] = []
    pixels = to_rgb(oriented, notes)
    return LoadedImage(pixels, metadata, notes, fmt, text)


def load_mask(source: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """A binary mask image (white = replace) of exactly ``size`` = (width, height)."""
    img = _open(source)
    if (img.width, img.height) != tuple(size):
        raise InputError(
            f"mask {str(source)!r} is {img.width}x{img.height} but the image is "
            f"{size[0]}x{size[1]}; they must be the same size"
        )
    mask = np.asarray(ImageOps.exif_transpose(img).convert("L")) >= 128
    if not mask.any():
        raise InputError(f"mask {str(source)!r} is all black: nothing to anonymize")
    return mask


def encode_image(
    pixels: np.ndarray,
    fmt: str = "PNG",
    *,
    text: dict[str, str] | None = None,
    metadata: dict[str, bytes] | None = None,
) -> bytes:
    """Encode uint8 RGB pixels, with optional text chunks and restored metadata."""
    fmt = fmt.upper()
    metadata = dict(metadata or {})
    img = Image.fromarray(pixels, "RGB")
    kwargs: dict = {}
    for key in ("exif", "icc_profile"):
        if key in metadata:
            kwargs[key] = metadata.pop(key)
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in (text or {}).items():
            info.add_itxt(key, value, zip=True)
        for key, value in metadata.items():
            name = key[5:] if key.startswith("text:") else key
            if name == "xmp":
                name = "XML:com.adobe.xmp"
            info.add_itxt(name, value.decode("utf-8", errors="replace"), zip=True)
        kwargs["pnginfo"] = info
    elif fmt in ("JPEG", "WEBP"):
        if "xmp" in metadata:
            kwargs["xmp"] = metadata["xmp"]
        if fmt == "JPEG":
            kwargs["quality"] = 95
            if "comment" in metadata:
                kwargs["comment"] = metadata["comment"]
        else:
            kwargs["lossless"] = True
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **kwargs)
    except (KeyError, ValueError, OSError) as e:
        raise InputError(f"cannot write {fmt} output: {e}") from None
    return buf.getvalue()


def check_output(output: str | os.PathLike, inputs: list[str | os.PathLike], force: bool) -> Path:
    """Refuse outputs that would overwrite an input, exist already, or have no folder."""
    out = Path(output)
    for src in inputs:
        if src is None:
            continue
        src_p = Path(src)
        if out.resolve() == src_p.resolve() or (
            out.exists() and src_p.exists() and os.path.samefile(out, src_p)
        ):
            raise InputError(f"output {str(out)!r} is an input file; choose another name")
    if not out.parent.exists():
        raise InputError(f"output folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise InputError(f"output {str(out)!r} is a folder; give a file name")
    if out.exists() and not force:
        raise InputError(f"{str(out)!r} exists; use --force to overwrite it")
    return out


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename: never half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_format(path: str | os.PathLike) -> str:
    """Pillow format name for an output path's extension."""
    ext = Path(path).suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
               ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
    if ext not in formats:
        raise InputError(f"cannot tell the output format from {str(path)!r}; use .png")
    return formats[ext]
