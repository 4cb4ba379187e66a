"""What an image file carries besides its pixels: split off when it is read (so it can be
sealed under the key instead of published) and restored when an image is written.

:attr:`faceveil.images.LoadedImage.metadata` maps a name to bytes; these names are all
there is (the encoding of each value is fixed here, whatever type Pillow returned):

=================  ===========================================================
``exif``           EXIF as a TIFF structure with its ``Exif\\0\\0`` header; for
                   TIFF inputs, the file's descriptive tags (not its layout)
``xmp``            the XMP packet, UTF-8
``icc_profile``    the ICC colour profile
``comment``        the JPEG or GIF comment
``photoshop``      Photoshop image resources (IPTC captions, credits...): the
                   ``8BIM`` resource blocks of a JPEG APP13 segment
``text:NAME``      each PNG text chunk (tEXt, zTXt, iTXt) but XMP, UTF-8; an
                   anonymized PNG's own record is carried as ``text:faceveil``
``alpha``          the alpha channel of a transparent input, as an 8-bit PNG
=================  ===========================================================

Encoding parameters (dpi, JFIF density, progressive, gamma, palette transparency,
animation timing...) describe the file, not its content, and are not kept. Anything
else is dropped with a note. When the orientation is applied, it is removed from the
EXIF and XMP that are kept, so the restored file is not turned twice.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import ExifTags, Image

# Info keys that describe how the file is encoded, not what it shows: not kept.
_ENCODING_KEYS = {
    "dpi", "jfif", "jfif_version", "jfif_unit", "jfif_density", "adobe", "adobe_transform",
    "progressive", "progression", "interlace", "gamma", "srgb", "chromaticity", "cHRM",
    "transparency", "duration", "loop", "background", "version", "compression",
    "resolution", "aspect", "mp", "mpoffset", "mpinfo", "bbox", "disposal", "blend",
    "extension", "default_image", "frame", "tile", "icc_profile_name", "quality",
    "subsampling", "optimize", "huffman_ac", "huffman_dc", "quantization", "flags",
    "unit", "sizes", "compression_name", "timestamp",
}


XMP_KEYS = ("xmp", "XML:com.adobe.xmp")


# TIFF tags that describe the pixel layout (not kept: the output has its own).
_TIFF_LAYOUT_TAGS = {
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 274, 277, 278, 279, 280,
    281, 282, 283, 284, 286, 287, 290, 291, 296, 297, 317, 318, 319, 320, 321, 322, 323,
    324, 325, 330, 332, 338, 339, 340, 341, 347, 512, 513, 514, 515, 517, 518, 519, 520,
    521, 529, 530, 531, 532, 700, 34675, 37724,
}


# What each output format can hold of the kept metadata (the rest is said in a note).
_RESTORABLE = {
    "PNG": {"exif", "xmp", "icc_profile", "comment", "text:", "alpha"},
    "JPEG": {"exif", "xmp", "icc_profile", "comment", "photoshop"},
    "WEBP": {"exif", "xmp", "icc_profile", "alpha"},
    "TIFF": {"exif", "xmp", "icc_profile", "alpha"},
    "BMP": set(),
}


WHAT = {
    "exif": "EXIF", "xmp": "XMP", "icc_profile": "ICC profile", "comment": "comment",
    "photoshop": "Photoshop/IPTC block", "alpha": "alpha channel (transparency)",
}


def as_bytes(value) -> bytes | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape")
    return None


def _exif_bytes(value) -> bytes | None:
    if isinstance(value, Image.Exif):
        if not len(value):
            return None
        value = value.tobytes()
    data = as_bytes(value) if not isinstance(value, str) else None
    if data and data[:4] in (b"II*\0", b"MM\0*"):
        data = b"Exif\0\0" + data
    return data


def _photoshop_bytes(resources) -> bytes:
    """Photoshop image resources as ``8BIM`` blocks (the body of a JPEG APP13)."""
    if isinstance(resources, (bytes, bytearray)):
        return bytes(resources)
    out = bytearray()
    for rid, data in dict(resources).items():
        if not (isinstance(rid, int) and 0 <= rid < 65536 and isinstance(data, bytes)):
            raise ValueError("unexpected Photoshop resource")
        out += b"8BIM" + rid.to_bytes(2, "big") + b"\0\0" + len(data).to_bytes(4, "big")
        out += data + (b"\0" if len(data) % 2 else b"")
    return bytes(out)


def _tiff_exif(img: Image.Image, notes: list[str]) -> bytes | None:
    """A TIFF's descriptive tags (artist, copyright, GPS, dates...) as EXIF bytes."""
    try:
        exif = img.getexif()
        kept = Image.Exif()
        odd = []
        for tag, value in exif.items():
            if tag in _TIFF_LAYOUT_TAGS:
                continue
            if tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
                value = exif.get_ifd(tag)
            try:
                _single(tag, value).tobytes()
            except Exception:
                odd.append(tag)
                continue
            kept[tag] = value
        if odd:
            notes.append(f"dropped TIFF tag(s) {', '.join(map(str, odd))} of unusual type "
                         "(not published, not kept)")
        return kept.tobytes() if len(kept) else None
    except Exception:
        notes.append("the TIFF tags could not be read: dropped (not published, not kept)")
        return None


def _single(tag: int, value) -> Image.Exif:
    e = Image.Exif()
    e[tag] = value
    return e


_ORIENTATION_XMP = (rb'\s*tiff:Orientation="[0-9]"', rb"<tiff:Orientation>[0-9]</tiff:Orientation>")


def without_orientation(meta: dict[str, bytes], notes: list[str]) -> None:
    """Remove the orientation from kept EXIF and XMP once the pixels are upright."""
    if "exif" in meta:
        try:
            exif = Image.Exif()
            exif.load(meta["exif"])
            exif.pop(ExifTags.Base.Orientation, None)
            for tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
                if tag in exif:
                    exif[tag] = exif.get_ifd(tag)
            meta["exif"] = exif.tobytes()
        except Exception:
            del meta["exif"]
            notes.append("EXIF dropped: unreadable after applying its orientation")
    if "xmp" in meta:
        for pattern in _ORIENTATION_XMP:
            meta["xmp"] = re.sub(pattern, b"", meta["xmp"])


def collect(img: Image.Image, text: dict[str, str], notes: list[str]) -> dict:
    meta: dict[str, bytes] = {}
    dropped: list[str] = []
    info = dict(img.info)
    for key, value in info.items():
        if key in _ENCODING_KEYS or key in text:
            continue
        if key == "exif":
            if img.format != "TIFF":
                data = _exif_bytes(value)
                if data:
                    meta["exif"] = data
                elif value:
                    dropped.append(f"EXIF ({type(value).__name__})")
        elif key in XMP_KEYS:
            data = as_bytes(value)
            if data:
                meta["xmp"] = data
            elif value is not None:
                dropped.append(f"XMP ({type(value).__name__})")
        elif key in ("icc_profile", "comment"):
            data = as_bytes(value)
            if data:
                meta[key] = data
            elif value:
                dropped.append(f"{WHAT[key]} ({type(value).__name__})")
        elif key == "photoshop":
            try:
                meta["photoshop"] = _photoshop_bytes(value)
            except (TypeError, ValueError):
                dropped.append("Photoshop/IPTC block (unreadable)")
        else:
            dropped.append(str(key))
    if img.format == "TIFF":
        data = _tiff_exif(img, notes)
        if data:
            meta["exif"] = data
    for key, value in text.items():
        if key in XMP_KEYS:
            meta.setdefault("xmp", value.encode("utf-8", errors="surrogateescape"))
        elif key == "Raw profile type exif":  # ImageMagick's EXIF in a PNG: hex after 3 lines
            try:
                data = _exif_bytes(bytes.fromhex("".join(value.split("\n")[3:])))
            except ValueError:
                data = None
            if data:
                meta.setdefault("exif", data)
            else:
                dropped.append("Raw profile type exif (unreadable)")
        else:
            meta[f"text:{key}"] = value.encode("utf-8", errors="surrogateescape")
    if dropped:
        notes.append(f"metadata dropped (not published, not kept): {', '.join(dropped)}")
    return {k: v for k, v in meta.items() if v}


def orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a broken EXIF block must not stop anonymization
        return 1
    return value if 1 <= value <= 8 else 1


def encode_alpha(alpha: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, "PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def restorable(key: str, fmt: str) -> bool:
    allowed = _RESTORABLE.get(fmt, set())
    return key in allowed or (key.startswith("text:") and "text:" in allowed)


def icc_space(icc: bytes) -> bytes:
    return icc[16:20] if len(icc) >= 20 else b""


def jpeg_with_photoshop(data: bytes, resources: bytes) -> bytes | None:
    """JPEG bytes with an APP13 Photoshop segment after its leading APPn segments."""
    payload = b"Photoshop 3.0\0" + resources
    if len(payload) > 65533:
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    segment = b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:pos] + segment + data[pos:]
