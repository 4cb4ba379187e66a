"""Reading images safely, and encoding them again.

Inputs are decoded with Pillow under a pixel limit (decompression bombs are refused),
their orientation (EXIF or XMP) is applied, and every pixel mode is brought to 8-bit
RGB. What the file carries besides its pixels is split off so the caller can seal it
under the key instead of publishing it, and restored by :func:`encode_image`.

**Metadata** is split off and restored by :mod:`faceveil.imagemeta`.

**Pixels**: transparent pixels are flattened onto white (what was hidden under
transparency is never published) and the alpha channel is kept in ``alpha``;
grayscale inputs are flagged (:attr:`LoadedImage.grayscale`) and written back as
grayscale; 16- and 32-bit inputs are reduced to 8 bits, with a note. Files of several
frames are refused (a face on another frame would be published), except MPO, whose
first image is the picture and whose others are views of it that are not published.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from . import imagemeta
from .errors import InputError, MetadataError

MAX_PIXELS = 64_000_000
"""Largest image accepted (64 megapixels); larger ones are refused as possible bombs."""


MAX_TEXT_CHUNK = 256 * 1024 * 1024
"""Largest PNG text chunk read (Pillow's default, 1 MB, is too small for some records)."""


BACKGROUND = 255
"""Transparent pixels are flattened onto this gray level (white), as viewers show them."""


RECORD_CHUNK = "faceveil"  # the keyword of an anonymized PNG's record chunk


# Files whose other frames are views of the first image (stereo pair, previews).
_PRIMARY_IMAGE_FORMATS = {"MPO"}


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class LoadedImage:
    """An input image as 8-bit RGB pixels plus the metadata removed from it."""

    pixels: np.ndarray  # (H, W, 3) uint8
    metadata: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    format: str | None = None
    text: dict[str, str] = field(default_factory=dict)  # PNG text chunks, incl. faceveil's
    grayscale: bool = False  # the three channels are equal: outputs are grayscale too


def _name(source) -> str:
    return "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)


def _png_record_damage(fp) -> str | None:
    """Why a PNG's faceveil record chunk cannot be read, or None (fine or absent)."""
    fp.seek(0)
    if fp.read(8) != _PNG_SIGNATURE:
        return None
    while True:
        head = fp.read(8)
        if len(head) < 8:
            return None
        length, ctype = struct.unpack(">I4s", head)
        if ctype == b"IEND":
            return None
        if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
            fp.seek(length + 4, os.SEEK_CUR)
            continue
        body, crc = fp.read(length), fp.read(4)
        keyword, _, rest = body.partition(b"\0")
        if keyword != RECORD_CHUNK.encode():
            continue
        if len(body) < length or len(crc) < 4:
            return "it is cut short"
        if zlib.crc32(ctype + body) != int.from_bytes(crc, "big"):
            return "its checksum does not match"
        try:
            if ctype == b"zTXt":
                zlib.decompress(rest[1:])
            elif ctype == b"iTXt" and rest[:1] == b"\x01":
                zlib.decompress(rest[2:].split(b"\0", 2)[2])
        except (zlib.error, IndexError):
            return "its compressed data is damaged"
        return None


def _damaged_record_error(source) -> MetadataError | None:
    """A MetadataError when the cause of a problem is a damaged faceveil chunk."""
    try:
        with (io.BytesIO(source) if isinstance(source, (bytes, bytearray))
              else open(source, "rb")) as fp:
            why = _png_record_damage(fp)
    except OSError:
        return None
    if why is None:
        return None
    return MetadataError(f"{_name(source)!r}: the faceveil metadata chunk is damaged ({why}); "
                         "recover it with the metadata exported by `inspect --export` or "
                         "`--sidecar` (recover --meta)")


def _refuse_frames(img: Image.Image, name: str, notes: list[str]) -> None:
    """Several frames: refuse, or (MPO) keep the first image with a note."""
    try:
        frames = int(getattr(img, "n_frames", 1) or 1)
    except Exception:  # counting frames reads the whole file; a broken one says so later
        frames = 1
    if frames <= 1:
        return
    if img.format in _PRIMARY_IMAGE_FORMATS:
        notes.append(
            f"this {img.format} file holds {frames} images (a stereo view or previews of "
            "the same picture): only the first is anonymized and kept; the others are "
            "not published and not kept"
        )
        return
    raise InputError(
        f"{name!r} has {frames} frames or pages ({img.format}); faceveil anonymizes single "
        "images, and a face on another frame would be published: split it into single "
        "images first"
    )


def _drop_odd_xmp(img: Image.Image, notes: list[str]) -> None:
    """An XMP that is neither bytes nor text (a TIFF tag typed SHORT) is no XMP: drop it
    before Pillow searches it for an orientation (a TypeError)."""
    for key in imagemeta.XMP_KEYS:
        if key in img.info and imagemeta.as_bytes(img.info[key]) is None:
            value = img.info.pop(key)
            notes.append(f"XMP of unexpected type ({type(value).__name__}) dropped "
                         "(not published, not kept)")


def _bit_depth_note(img: Image.Image) -> str | None:
    raw = " ".join(str(t.args) for t in (getattr(img, "tile", None) or []))
    if img.mode.startswith("I;16") or ";16" in raw:
        return "16-bit image reduced to 8 bits per channel"
    if img.mode in ("I", "F"):
        return "32-bit image reduced to 8 bits per channel"
    return None


def _open(source, notes: list[str]) -> Image.Image:
    name = _name(source)
    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{name!r} not found")
        if path.is_dir():
            raise InputError(f"{name!r} is a folder, not an image")
        try:
            if path.stat().st_size == 0:
                raise InputError(f"{name!r} is empty (0 bytes)")
        except OSError as e:
            raise InputError(f"cannot read {name!r}: {e.strerror}") from None
    elif not source:
        raise InputError("the image data is empty (0 bytes)")
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, MAX_TEXT_CHUNK)
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        if img.width * img.height > MAX_PIXELS:
            raise InputError(
                f"{name!r} is {img.width}x{img.height} pixels, more than the limit of "
                f"{MAX_PIXELS:,} pixels (a possible decompression bomb)"
            )
        _refuse_frames(img, name, notes)
        _drop_odd_xmp(img, notes)  # before load(): Pillow's TIFF load() reads the XMP
        note = _bit_depth_note(img)
        img.load()
    except InputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InputError(f"{name!r} is too large to decode safely") from None
    except UnidentifiedImageError:
        raise _damaged_record_error(source) or InputError(
            f"{name!r} is not an image Pillow can read") from None
    except PermissionError as e:
        raise InputError(f"cannot read {name!r}: {e.strerror}") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, struct.error,
            zlib.error) as e:
        raise _damaged_record_error(source) or InputError(
            f"{name!r} is corrupt or truncated ({e})") from None
    if note:
        notes.append(note)
    if img.format == "PNG" and RECORD_CHUNK not in getattr(img, "text", {}):
        damaged = _damaged_record_error(source)  # Pillow drops text chunks it cannot inflate
        if damaged:
            raise damaged
    return img


def _alpha(img: Image.Image) -> np.ndarray | None:
    """The alpha channel (uint8) of an image that has one, else None."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return np.asarray(img.getchannel("A"))
    if "transparency" in img.info:
        try:
            return np.asarray(img.convert("RGBA"))[:, :, 3]
        except ValueError:  # a mode Pillow cannot convert: treated as opaque, said
            return None
    return None


def to_rgb(img: Image.Image, notes: list[str]) -> np.ndarray:
    """8-bit RGB pixels of any Pillow image, transparent pixels flattened onto white;
    what was converted is added to ``notes``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            a = a / 257.0
        elif a.max(initial=0) > 255:
            a = a * (255.0 / a.max())
        gray = np.clip(np.round(a), 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    elif img.mode == "RGB":
        rgb = np.array(img, dtype=np.uint8)
    else:
        if img.mode not in ("L", "P", "RGBA", "LA", "PA", "1", "RGBa", "La", "RGBX"):
            notes.append(f"converted {img.mode} to RGB")
        try:
            rgb = np.array(img.convert("RGB"), dtype=np.uint8)
        except ValueError:
            raise InputError(f"images in pixel mode {img.mode} are not supported") from None
    alpha = _alpha(img)
    if alpha is not None and (alpha < 255).any():
        a = alpha[:, :, None].astype(np.float64) / 255.0
        flat = rgb.astype(np.float64) * a + BACKGROUND * (1.0 - a)
        rgb = np.clip(np.round(flat), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def is_gray(pixels: np.ndarray) -> bool:
    """Whether the three channels of an RGB array are equal everywhere."""
    return bool((pixels[:, :, 0] == pixels[:, :, 1]).all()
                and (pixels[:, :, 1] == pixels[:, :, 2]).all())


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """RGB pixels as gray (ITU-R 601 luma, as Pillow's ``convert("L")``), still 3 channels.
    Gray pixels are unchanged."""
    p = pixels.astype(np.uint32)
    y = (p[:, :, 0] * 19595 + p[:, :, 1] * 38470 + p[:, :, 2] * 7471 + 0x8000) >> 16
    return np.repeat(y.astype(np.uint8)[:, :, None], 3, axis=2)


def load_image(source: str | os.PathLike | bytes | Image.Image) -> LoadedImage:
    """Decode an image to 8-bit RGB, upright, with its metadata split off.

    Raises:
        InputError: not an image, unreadable, too large, or several frames.
        MetadataError: a PNG whose faceveil metadata chunk is damaged.
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if isinstance(source, Image.Image):
            img = source
            _refuse_frames(img, "<image>", notes)
            img.load()
        else:
            img = _open(source, notes)
        fmt = img.format
        text = {str(k): str(v) for k, v in getattr(img, "text", {}).items()
                if isinstance(v, str)}
        _drop_odd_xmp(img, notes)
        metadata = imagemeta.collect(img, text, notes)
        orientation = imagemeta.orientation(img)
        oriented = img
        if orientation > 1:
            try:
                oriented = ImageOps.exif_transpose(img) or img
                imagemeta.without_orientation(metadata, notes)
            except Exception:
                notes.append(f"the orientation tag ({orientation}) could not be applied")
        pixels = to_rgb(oriented, notes)
        alpha = _alpha(oriented)
        if alpha is not None:
            if (alpha < 255).any():
                metadata["alpha"] = imagemeta.encode_alpha(alpha)
                notes.append("transparent pixels flattened onto white (what they hid is not "
                             "published); the alpha channel is kept encrypted and restored "
                             "by recover")
            else:
                notes.append("opaque alpha channel dropped")
    for w in caught:  # Pillow's warnings, as notes without library paths
        message = str(w.message)
        if message not in notes:
            notes.append(message)
    return LoadedImage(pixels, metadata, notes, fmt, text, is_gray(pixels))


def load_mask(source: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """A binary mask image (white = replace) of exactly ``size`` = (width, height).

    A pixel is white when its gray level is at least half the maximum; transparent
    pixels count as black. The mask's EXIF orientation is applied before comparing
    sizes.
    """
    loaded = load_image(source)
    pixels = loaded.pixels
    if "alpha" in loaded.metadata:  # flattened onto white: transparent must mean keep
        alpha = np.asarray(Image.open(io.BytesIO(loaded.metadata["alpha"])))
        pixels = np.where(alpha[:, :, None] >= 128, pixels, 0).astype(np.uint8)
    if (pixels.shape[1], pixels.shape[0]) != tuple(size):
        raise InputError(
            f"mask {str(source)!r} is {pixels.shape[1]}x{pixels.shape[0]} but the image is "
            f"{size[0]}x{size[1]}; they must be the same size"
        )
    mask = to_gray(pixels)[:, :, 0] >= 128
    if not mask.any():
        raise InputError(f"mask {str(source)!r} has no white pixel: nothing to anonymize")
    return mask


def _unflatten(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colours that, composited on white with ``alpha``, look like ``pixels``."""
    a = alpha[:, :, None].astype(np.float64) / 255.0
    colour = (pixels.astype(np.float64) - BACKGROUND * (1.0 - a)) / np.maximum(a, 1e-6)
    return np.where(a > 0, np.clip(np.round(colour), 0, 255), 0).astype(np.uint8)


def encode_image(
    pixels: np.ndarray,
    fmt: str = "PNG",
    *,
    text: dict[str, str] | None = None,
    metadata: dict[str, bytes] | None = None,
    notes: list[str] | None = None,
) -> bytes:
    """Encode uint8 RGB pixels, with optional PNG text chunks and restored metadata.

    Pixels whose channels are all equal are written as grayscale (as RGB when an RGB
    colour profile comes with them). Metadata the format cannot hold (see the module
    docstring) is left out and said in ``notes``.
    """
    fmt = fmt.upper()
    metadata = dict(metadata or {})
    all_keys = list(metadata)
    # Gray pixels are written as gray, unless an RGB colour profile is to be restored.
    rgb_profile = imagemeta.icc_space(metadata.get("icc_profile", b"")) == b"RGB "
    gray = is_gray(pixels) and not (imagemeta.restorable("icc_profile", fmt) and rgb_profile)
    missing = sorted({imagemeta.WHAT.get(k, "PNG text chunks") for k in metadata
                      if not imagemeta.restorable(k, fmt)})
    metadata = {k: v for k, v in metadata.items() if imagemeta.restorable(k, fmt)}
    img = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]), "L") if gray \
        else Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    if "alpha" in metadata:
        try:
            alpha = np.asarray(Image.open(io.BytesIO(metadata.pop("alpha"))).convert("L"))
        except Exception:
            alpha = None
        if alpha is None or alpha.shape != pixels.shape[:2]:
            missing.append("alpha channel (it does not fit the image)")
        else:
            colour = _unflatten(pixels, alpha)
            img = Image.fromarray(np.dstack([colour[:, :, 0], alpha]), "LA") if gray \
                else Image.fromarray(np.dstack([colour, alpha]), "RGBA")
    kwargs: dict = {}
    if "exif" in metadata:
        kwargs["exif"] = metadata.pop("exif")
    if "icc_profile" in metadata:
        icc = metadata.pop("icc_profile")
        if imagemeta.icc_space(icc) == (b"GRAY" if gray else b"RGB "):
            kwargs["icc_profile"] = icc
        else:
            space = imagemeta.icc_space(icc).decode("latin-1").strip()
            missing.append(f"ICC profile (made for {space} images, the output is "
                           f"{'gray' if gray else 'RGB'})")
    xmp = metadata.pop("xmp", None)
    comment = metadata.pop("comment", None)
    photoshop = metadata.pop("photoshop", None)
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in (text or {}).items():
            info.add_itxt(key, value, zip=True)
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", errors="replace"), zip=True)
        if comment:
            info.add_itxt("Comment", comment.decode("utf-8", errors="replace"), zip=True)
        for key, value in metadata.items():
            if key.startswith("text:"):
                info.add_itxt(key[5:], value.decode("utf-8", errors="replace"), zip=True)
        kwargs["pnginfo"] = info
    elif fmt in ("JPEG", "WEBP"):
        if xmp:
            kwargs["xmp"] = xmp
        if fmt == "JPEG":
            kwargs["quality"] = 95
            if comment:
                kwargs["comment"] = comment
        else:
            kwargs["lossless"] = True
    elif fmt == "TIFF" and xmp:
        exif = Image.Exif()
        if "exif" in kwargs:
            exif.load(kwargs["exif"])
        exif[700] = xmp
        kwargs["exif"] = exif
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.save(buf, fmt, **kwargs)
    except (KeyError, ValueError, OSError, TypeError, struct.error) as e:
        raise InputError(f"cannot write {fmt} output: {e}") from None
    data = buf.getvalue()
    if photoshop:
        with_block = imagemeta.jpeg_with_photoshop(data, photoshop)
        if with_block is None:
            missing.append("Photoshop/IPTC block (too large for one JPEG segment)")
        else:
            data = with_block
    if missing and notes is not None:
        left = [k for k in all_keys if not imagemeta.restorable(k, fmt)]
        fits = next((f for f in ("PNG", "JPEG")
                     if left and all(imagemeta.restorable(k, f) for k in left)), None)
        hint = f" (write a .{'jpg' if fits == 'JPEG' else 'png'} to keep it)" if fits else ""
        notes.append(f"kept metadata that {fmt} cannot hold was left out: "
                     f"{', '.join(missing)}{hint}")
    return data
