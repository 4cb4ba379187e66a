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
from .format import fields

MAX_PIXELS = 64_000_000
"""Largest image accepted (64 megapixels); larger ones are refused as possible bombs."""


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


_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


class _RecordChunks:
    """faceveil's record chunks in a PNG, found by walking its chunks (bodies of other
    chunks are skipped, not read): their byte ranges, the record's text (the last
    chunk's, as Pillow's text dict keeps), or why it cannot be read."""

    def __init__(self, fp) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.text: str | None = None
        self.damage: str | None = None
        fp.seek(0, os.SEEK_END)
        self.size = fp.tell()
        fp.seek(0)
        if fp.read(8) != _PNG_SIGNATURE:
            return
        while self.damage is None:
            start = fp.tell()
            head = fp.read(8)
            if len(head) < 8:
                return
            length, ctype = struct.unpack(">I4s", head)
            end = start + 12 + length
            if ctype == b"IEND":
                return
            peek = fp.read(min(length, 80)) if ctype in _TEXT_CHUNKS else b""
            if peek.partition(b"\0")[0] != RECORD_CHUNK.encode():
                fp.seek(end)
                continue
            self.ranges.append((start, min(end, self.size)))
            if length > fields.MAX_CHUNK:
                self.damage = "it is too large"
                return
            body = peek + fp.read(length - len(peek))
            crc = fp.read(4)
            if len(body) < length or len(crc) < 4:
                self.damage = "it is cut short"
            elif zlib.crc32(ctype + body) != int.from_bytes(crc, "big"):
                self.damage = "its checksum does not match"
            else:
                self.text, self.damage = _chunk_text(ctype, body.partition(b"\0")[2])


def _record_chunks(fp, name: str) -> _RecordChunks:
    record = _RecordChunks(fp)
    if record.damage:
        raise MetadataError(
            f"{name!r}: the faceveil metadata chunk is damaged ({record.damage}); "
            "recover it with the metadata exported by `inspect --export` or "
            "`--sidecar` (recover --meta)")
    return record


def record_text(data: bytes) -> str | None:
    """The text of the faceveil record chunk of PNG bytes, read without decoding the
    pixels (None: it has none).

    Raises:
        MetadataError: the chunk is damaged, cut short or too large.
    """
    return _record_chunks(io.BytesIO(data), _name(data)).text


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of encoded image bytes from their header, nothing decoded
    (None when Pillow cannot tell: :func:`load_image` then says why)."""
    try:
        record = _RecordChunks(io.BytesIO(data))
        view = io.BufferedReader(_Without(io.BytesIO(data), record.ranges, record.size)) \
            if record.ranges else io.BytesIO(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(view) as img:
                return img.size
    except Exception:  # noqa: BLE001 - any failure is load_image's to explain
        return None


def _chunk_text(ctype: bytes, rest: bytes) -> tuple[str | None, str | None]:
    """A text chunk's value after its keyword, inflated with faceveil's own bound:
    ``(text, None)`` or ``(None, why not)``."""
    try:
        if ctype == b"tEXt":
            return rest.decode("latin-1"), None
        if ctype == b"zTXt":
            return fields.inflate(rest[1:], fields.MAX_CHUNK, "").decode("latin-1"), None
        compressed, rest = rest[:1] == b"\x01", rest[2:]
        value = rest.split(b"\0", 2)[2]
        if compressed:
            value = fields.inflate(value, fields.MAX_CHUNK, "")
        return value.decode("utf-8"), None
    except MetadataError as e:
        return None, ("it is too large" if "larger" in str(e)
                      else "its compressed data is damaged")
    except (IndexError, UnicodeDecodeError):
        return None, "its text is malformed"


class _Without(io.RawIOBase):
    """A read-only, seekable view of a file with some byte ranges left out: Pillow reads
    a PNG through it without faceveil's record chunks, so its own text-chunk limits
    stay as they are for every other chunk."""

    def __init__(self, fp, ranges: list[tuple[int, int]], size: int) -> None:
        super().__init__()
        self._fp = fp
        self._parts: list[tuple[int, int, int]] = []  # (view start, file start, length)
        view = at = 0
        for a, b in sorted(ranges):
            self._parts.append((view, at, a - at))
            view, at = view + a - at, b
        self._parts.append((view, at, max(0, size - at)))
        self._size = view + max(0, size - at)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        for view, at, length in self._parts:
            if view <= self._pos < view + length:
                self._fp.seek(at + self._pos - view)
                data = self._fp.read(min(len(buffer), view + length - self._pos))
                buffer[: len(data)] = data
                self._pos += len(data)
                return len(data)
        return 0


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


def _open(source, notes: list[str]) -> tuple[Image.Image, str | None]:
    """The image, decoded, and the text of its faceveil record chunk (None: none).

    The record chunk is read here with faceveil's own bound and hidden from Pillow,
    whose default text-chunk limits then hold for every other chunk (a text chunk that
    inflates past them is refused without being inflated)."""
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
    try:
        with (io.BytesIO(source) if isinstance(source, (bytes, bytearray))
              else open(source, "rb")) as fp:
            record = _record_chunks(fp, name)
            if record.ranges:
                view = io.BufferedReader(_Without(fp, record.ranges, record.size))
                return _decode(view, name, notes), record.text
    except PermissionError as e:
        raise InputError(f"cannot read {name!r}: {e.strerror}") from None
    except OSError as e:
        raise InputError(f"cannot read {name!r}: {e.strerror or e}") from None
    return _decode(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                   name, notes), None


def _decode(source, name: str, notes: list[str]) -> Image.Image:
    """Pillow's decoding of a file (a path or an open file), its errors as InputErrors."""
    try:
        img = Image.open(source)
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
        raise InputError(f"{name!r} is not an image Pillow can read") from None
    except PermissionError as e:
        raise InputError(f"cannot read {name!r}: {e.strerror}") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, struct.error,
            zlib.error) as e:
        raise InputError(f"{name!r} is corrupt or truncated ({e})") from None
    if note:
        notes.append(note)
    return img


BAND_PIXELS = 1 << 18
"""Pixels converted at a time: whole-image steps work on bands of rows of about this
many pixels (a 64-megapixel photo is converted with temporaries of a few megabytes,
never a float64 copy of it)."""


_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _bands(height: int, width: int) -> list[slice]:
    rows = max(1, BAND_PIXELS // max(1, width))
    return [slice(y, min(y + rows, height)) for y in range(0, height, rows)]


def _band(img: Image.Image, rows: slice) -> Image.Image:
    return img.crop((0, rows.start, img.width, rows.stop))


def _alpha(img: Image.Image) -> np.ndarray | None:
    """The alpha channel (uint8) of an image that has one, else None."""
    if img.mode in _ALPHA_MODES:
        return np.asarray(img.getchannel("A"))
    if "transparency" in img.info:
        out = np.empty((img.height, img.width), np.uint8)
        try:
            for rows in _bands(img.height, img.width):
                out[rows] = np.asarray(_band(img, rows).convert("RGBA").getchannel("A"))
        except ValueError:  # a mode Pillow cannot convert: treated as opaque, said
            return None
        return out
    return None


def _wide_gray(img: Image.Image, rows: slice, top: float) -> np.ndarray:
    """A band of a 16- or 32-bit image as 8-bit gray (``top``: the image's maximum)."""
    a = np.asarray(_band(img, rows), dtype=np.float64)  # one band: a few MB
    if img.mode.startswith("I;16"):
        a = a / 257.0
    elif top > 255:
        a = a * (255.0 / top)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def flatten(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` (uint8) composited onto white with ``alpha`` (uint8), in place: in integers,
    rounded to nearest (an exact half never occurs: the divisor 255 is odd)."""
    for rows in _bands(*rgb.shape[:2]):
        a = alpha[rows, :, None].astype(np.uint16)
        mixed = rgb[rows] * a + BACKGROUND * (255 - a)  # at most 255 * 255: fits uint16
        rgb[rows] = (mixed + 127) // 255
    return rgb


def to_rgb(img: Image.Image, notes: list[str]) -> np.ndarray:
    """8-bit RGB pixels of any Pillow image, transparent pixels flattened onto white;
    what was converted is added to ``notes``. Converted band by band: the only
    whole-image allocation is the result."""
    if img.mode not in (*_WIDE_MODES, "L", "P", "RGB", "1", "RGBX", *_ALPHA_MODES):
        notes.append(f"converted {img.mode} to RGB")
    rgb = np.empty((img.height, img.width, 3), np.uint8)
    top = 0.0
    if img.mode in ("I", "F"):
        extrema = img.getextrema()
        top = max(0.0, float(extrema[1])) if isinstance(extrema, tuple) else 0.0
    try:
        for rows in _bands(img.height, img.width):
            if img.mode in _WIDE_MODES:
                rgb[rows] = _wide_gray(img, rows, top)[:, :, None]
            else:
                band = _band(img, rows)
                rgb[rows] = np.asarray(band if band.mode == "RGB" else band.convert("RGB"))
    except ValueError:
        raise InputError(f"images in pixel mode {img.mode} are not supported") from None
    alpha = _alpha(img)
    if alpha is not None and (alpha < 255).any():
        flatten(rgb, alpha)
    return rgb


def is_gray(pixels: np.ndarray) -> bool:
    """Whether the three channels of an RGB array are equal everywhere."""
    return all(bool((band[:, :, 0] == band[:, :, 1]).all()
                    and (band[:, :, 1] == band[:, :, 2]).all())
               for band in (pixels[rows] for rows in _bands(*pixels.shape[:2])))


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """RGB pixels as gray (ITU-R 601 luma, as Pillow's ``convert("L")``), still 3 channels.
    Gray pixels are unchanged."""
    out = np.empty(pixels.shape[:2] + (3,), np.uint8)
    for rows in _bands(*pixels.shape[:2]):
        p = pixels[rows].astype(np.uint32)
        y = (p[:, :, 0] * 19595 + p[:, :, 1] * 38470 + p[:, :, 2] * 7471 + 0x8000) >> 16
        out[rows] = y.astype(np.uint8)[:, :, None]
    return out


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
        record = None
        if isinstance(source, Image.Image):
            img = source
            _refuse_frames(img, "<image>", notes)
            img.load()
        else:
            img, record = _open(source, notes)
        fmt = img.format
        text = {str(k): str(v) for k, v in getattr(img, "text", {}).items()
                if isinstance(v, str)}
        if record is not None:
            text[RECORD_CHUNK] = record
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
    """Colours that, composited on white with ``alpha``, look like ``pixels`` (band by
    band: float64 only for a few rows at a time)."""
    out = np.empty(pixels.shape, np.uint8)
    for rows in _bands(*pixels.shape[:2]):
        a = alpha[rows, :, None].astype(np.float64) / 255.0
        colour = (pixels[rows].astype(np.float64) - BACKGROUND * (1.0 - a)) / np.maximum(a, 1e-6)
        out[rows] = np.where(a > 0, np.clip(np.round(colour), 0, 255), 0)
    return out


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
