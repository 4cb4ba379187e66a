"""What the pipeline hands back: an anonymized image with its record, a recovered image
with its original metadata; and how any image input becomes decoded pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .. import images, media
from ..errors import InputError
from ..faces import FaceRegion
from ..format import png
from ..format.records import FaceData, Record

ImageInput = str | os.PathLike | bytes | np.ndarray | Image.Image | images.LoadedImage


def load(image: ImageInput) -> images.LoadedImage:
    """Decoded pixels (and metadata) of a path, bytes, PIL image or uint8 array."""
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
        png.allow_large_chunks()
    return images.load_image(image)


@dataclass
class Anonymized:
    """An anonymized image and the record that makes it recoverable.

    ``skipped`` lists the detections left out (excluded, too small) and the low-score
    candidates (see :func:`faceveil.faces.find_faces`).
    """

    pixels: np.ndarray
    record: Record
    regions: list[FaceRegion] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label: bool = True  # the XMP label that says the faces are synthetic

    def png_bytes(self) -> bytes:
        """The anonymized PNG, its record in the ``faceveil`` chunk (and its label)."""
        return images.encode_image(self.pixels, "PNG",
                                   text=png.png_text(self.record, self.label))

    def sidecar_bytes(self) -> bytes:
        """The record as a sidecar file holds it (``--sidecar``, ``recover --meta``)."""
        return png.sidecar_bytes(self.record)

    def save(self, path: str | os.PathLike, *, force: bool = False) -> None:
        """Write the anonymized PNG atomically."""
        media.check_output(path, [], force)
        media.write_atomic(path, self.png_bytes())

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)


@dataclass
class Recovered:
    """A recovered image and the original metadata (EXIF, ...) restored with it.

    ``faces`` holds what the record says of each face once opened with the key
    (geometry, masks), for callers that measure the result; ``method`` names how the
    faces came back ("lossless": from their sealed originals, no model; "exact-steps"
    or "plain": by diffusion; "mixed" when faces differed).
    """

    pixels: np.ndarray
    metadata: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    record: Record | None = None
    faces: list[FaceData] = field(default_factory=list)
    method: str = ""

    def encode(self, fmt: str = "PNG", notes: list[str] | None = None) -> bytes:
        """The image with its original metadata; what ``fmt`` cannot hold is said in
        ``notes``."""
        return images.encode_image(self.pixels, fmt, metadata=self.metadata, notes=notes)

    def save(self, path: str | os.PathLike, *, force: bool = False) -> None:
        media.check_output(path, [], force)
        media.write_atomic(path, self.encode(media.output_format(path)))

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)
