"""A corpus of awkward real-world inputs, made at test time in a second or two.

:func:`build` writes one small file of each class into a folder and returns what each
should give: the exit status of ``faceveil anonymize --aligned`` and a phrase the output
must contain. Pixels are smooth noise (no face), so detection finds nothing: the point
is decoding, metadata, modes, frames, names and errors, not faces.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFilter, PngImagePlugin, TiffImagePlugin, TiffTags

W, H = 48, 32  # stored size of most files (wider than tall, so turning shows)
HIDDEN = (201, 13, 177)  # an unlikely colour: a saturating model makes (255, 0, 255)


@dataclass
class Case:
    """One corpus file and what anonymizing it must give."""

    name: str
    anonymize: int = 0  # expected exit status
    says: str = ""  # a phrase the messages must contain
    upright: tuple[int, int] = (W, H)  # (width, height) of the output, when there is one
    gray: bool = False  # the output must be grayscale
    tags: set[str] = field(default_factory=set)  # what to check further (see the test)


def pixels(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
    return np.asarray(noise.filter(ImageFilter.GaussianBlur(2)))


def rgb(w: int = W, h: int = H, seed: int = 0) -> Image.Image:
    return Image.fromarray(pixels(w, h, seed))


def _png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def raw_png(width: int, height: int, depth: int, colour: int, rows: bytes,
            extra: bytes = b"") -> bytes:
    """A PNG written by hand: for 16-bit RGB (Pillow writes 8) and lying headers."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra
            + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))


def photoshop_segment(caption: bytes) -> bytes:
    """A JPEG APP13 segment: Photoshop resources with an IPTC caption and a resource of
    odd length (Pillow returns them as a dict, which ``bytes()`` cannot take)."""
    iptc = b"\x1c\x02\x78" + struct.pack(">H", len(caption)) + caption
    body = b"Photoshop 3.0\0"
    for rid, data in ((0x0404, iptc), (0x0425, b"\x01" * 15)):
        body += b"8BIM" + struct.pack(">H", rid) + b"\0\0" + struct.pack(">I", len(data))
        body += data + (b"\0" if len(data) % 2 else b"")
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def with_segment(jpeg: bytes, segment: bytes) -> bytes:
    return jpeg[:2] + segment + jpeg[2:]


def jpeg(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def png(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def exif(orientation: int | None = None, make: str = "SecretCam") -> Image.Exif:
    e = Image.Exif()
    e[0x010F] = make
    if orientation is not None:
        e[0x0112] = orientation
    return e


XMP_ORIENT6 = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
    '22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" tiff:Orientation="6" '
    'dc:creator="Secret Person"/></rdf:RDF></x:xmpmeta>'
)


def build(folder: Path) -> list[Case]:
    """Write the corpus into ``folder`` (made if missing); return its cases."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    cases: list[Case] = []

    def add(name: str, data: bytes, **expect) -> None:
        files[name] = data
        cases.append(Case(name, **expect))

    base = rgb()
    # --- JPEG -----------------------------------------------------------------
    add("photoshop_iptc.jpg", with_segment(jpeg(base), photoshop_segment(b"Secret caption")),
        tags={"photoshop"})
    add("xmp.jpg", jpeg(base, xmp=XMP_ORIENT6.replace('tiff:Orientation="6" ', "").encode()),
        tags={"xmp"})
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    add("icc.jpg", jpeg(base, icc_profile=icc), tags={"icc"})
    add("comment.jpg", jpeg(base, comment=b"Secret comment"), tags={"comment"})
    for o in range(1, 9):
        upright = (H, W) if o >= 5 else (W, H)
        add(f"orientation{o}.jpg", jpeg(base, exif=exif(o)), upright=upright, tags={"exif"})
    add("broken_exif.jpg", with_segment(jpeg(base), b"\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff"
                                        b"\xff\xff"))
    add("stereo.mpo", save(base, "MPO", save_all=True, append_images=[rgb(seed=1)]),
        says="only the first")
    add("cmyk.jpg", jpeg(base.convert("CMYK")), says="CMYK")
    add("gray.jpg", jpeg(base.convert("L")), gray=True)
    add("progressive.jpg", jpeg(base, progressive=True))
    # --- PNG in every mode -------------------------------------------------------
    add("mode_1.png", png(base.convert("1")), gray=True)
    add("mode_L.png", png(base.convert("L")), gray=True)
    la = base.convert("LA")
    la.putalpha(Image.linear_gradient("L").resize((W, H)))
    add("mode_LA.png", png(la), gray=True, says="flattened", tags={"alpha"})
    p = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p_pixels = np.array(p)
    p_pixels[:, :4] = 15
    add("mode_P_transparency.png", png(_palette(p, p_pixels), transparency=15),
        says="flattened", tags={"alpha"})
    add("mode_RGB.png", png(base))
    rgba = np.dstack([pixels(), np.full((H, W), 255, np.uint8)])
    rgba[:, W - 8:, :3] = HIDDEN  # a band hidden under full transparency
    rgba[:, W - 8:, 3] = 0
    rgba[:, W - 12 : W - 8, 3] = 128
    add("mode_RGBA.png", png(Image.fromarray(rgba, "RGBA")), says="flattened",
        tags={"alpha", "hidden"})
    gray16 = (np.asarray(base.convert("L"), np.uint16) * 257).astype(np.uint16)
    add("mode_I16.png", png(Image.fromarray(gray16)), gray=True, says="16-bit")
    rows = b"".join(b"\0" + (pixels().astype(">u2") * 257)[y].tobytes() for y in range(H))
    add("rgb16.png", raw_png(W, H, 16, 2, rows), says="16-bit")
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Secret Author")
    text.add_text("Description", "Secret description", zip=True)
    text.add_itxt("Title", "Sécret títle", lang="fr", tkey="Titre")
    add("text_chunks.png", png(base, pnginfo=text), tags={"text"})
    spoof = PngImagePlugin.PngInfo()
    spoof.add_itxt("faceveil", '{"format": "faceveil", "version": 1, "spoofed": true}')
    add("spoofed_record.png", png(base, pnginfo=spoof), tags={"spoofed"})
    good = png(base, pnginfo=spoof)
    at = good.index(b"iTXt") - 4
    length = struct.unpack(">I", good[at : at + 4])[0]
    crc_at = at + 8 + length
    damaged = good[:crc_at] + bytes(b ^ 0xFF for b in good[crc_at : crc_at + 4]) + \
        good[crc_at + 4 :]
    add("damaged_record.png", damaged, anonymize=4, says="metadata chunk is damaged")
    plain = png(base)  # a record chunk whose checksum is right but whose zlib data is not
    bad_zip = _png_chunk(b"iTXt", b"faceveil\0\x01\x00\0\0not zlib data")
    add("damaged_compression.png", plain[:-12] + bad_zip + plain[-12:], anonymize=4,
        says="compressed data is damaged")
    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", XMP_ORIENT6)
    add("xmp_orientation6.png", png(base, pnginfo=xmp), upright=(H, W), tags={"xmp6"})
    add("animated.png", save(base, "PNG", save_all=True, append_images=[rgb(seed=2)]),
        anonymize=1, says="frames")
    # --- GIF, TIFF, WebP, BMP ---------------------------------------------------------
    add("animated.gif", save(base, "GIF", save_all=True, append_images=[rgb(seed=3)]),
        anonymize=1, says="frames")
    add("single.gif", save(base, "GIF"))
    blank = Image.new("RGB", (W, H), (128, 128, 128))
    add("face_on_page2.tif", save(blank, "TIFF", save_all=True, append_images=[base],
                                  tiffinfo=_odd_tiff_tags()), anonymize=1, says="frames")
    add("odd_tags.tif", save(base, "TIFF", tiffinfo=_odd_tiff_tags()), says="XMP",
        tags={"tiff"})
    add("lossy.webp", save(base, "WEBP", quality=80))
    add("lossless.webp", save(base, "WEBP", lossless=True))
    add("animated.webp", save(base, "WEBP", save_all=True, append_images=[rgb(seed=4)]),
        anonymize=1, says="frames")
    add("plain.bmp", save(base, "BMP"))
    # --- sizes ---------------------------------------------------------------------
    add("tiny_8x8.png", png(rgb(8, 8)), upright=(8, 8))
    add("thin_1x2000.png", png(rgb(1, 2000)), upright=(1, 2000))
    add("bomb_header.png", raw_png(40000, 40000, 8, 2, b"\0" * 64), anonymize=1,
        says="too large")
    # --- broken files ------------------------------------------------------------------
    add("truncated.jpg", jpeg(base)[:300], anonymize=1, says="truncated")
    add("truncated.png", png(base)[:200], anonymize=1, says="truncated")
    add("zero_bytes.png", b"", anonymize=1, says="empty")
    add("text_file.jpg", b"this is not a picture\n", anonymize=1, says="not an image")
    # --- names -----------------------------------------------------------------------
    add("fötö ünïcode 顔.png", png(base))
    add("with spaces.jpg", jpeg(base))
    add("same.jpg", jpeg(base))  # same.jpg and same.png: folder outputs must not collide
    add("same.png", png(rgb(seed=5)))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "folder.jpg").mkdir(exist_ok=True)  # a folder named like an image
    return cases


def _palette(p: Image.Image, indices: np.ndarray) -> Image.Image:
    out = Image.fromarray(indices.astype(np.uint8), "P")
    out.putpalette(p.getpalette())
    return out


def _odd_tiff_tags() -> TiffImagePlugin.ImageFileDirectory_v2:
    """Tags of unusual types: XMP typed SHORT (Pillow returns an int), a private LONG
    tuple, a RATIONAL, and descriptive strings that must not be published."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[700] = 5
    ifd.tagtype[700] = TiffTags.SHORT
    ifd[315] = "Secret Artist"
    ifd[270] = "Secret description"
    ifd[40000] = (1, 2, 3)
    ifd.tagtype[40000] = TiffTags.LONG
    ifd[41000] = TiffImagePlugin.IFDRational(1, 3)
    ifd.tagtype[41000] = TiffTags.RATIONAL
    return ifd
