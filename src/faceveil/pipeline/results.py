"""What the pipeline hands back: an anonymized image with its record, a recovered image
with its original metadata; how any image input becomes decoded pixels; and what a
result writes (:class:`Outputs`: format check, sidecar, no-face policy) and how it is
published (:func:`publish`), the one way the command line, Ray, the web page and
:meth:`Anonymized.save` turn a result into files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import images, media
from ..errors import FaceveilError, InputError, NoFaceError
from ..faces import FaceRegion
from ..format import png
from ..format.records import FaceData, Record
from ..options import Output

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

    def save(self, path: str | os.PathLike, *, force: bool = False,
             sidecar: bool = False) -> None:
        """Write the anonymized PNG (and with ``sidecar`` its record beside it) atomically;
        an existing file is overwritten only with ``force``."""
        media.check_output(path, [], force)
        publish(anonymized_outputs(self, path, Output(sidecar=sidecar, force=force)),
                replace=force)

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
        """Write the recovered image (format from the extension) atomically; an existing
        file is overwritten only with ``force``."""
        media.check_output(path, [], force)
        publish(recovered_outputs(self, path), replace=force)

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)


# ---------------------------------------------------------------------------
# What a result writes, and publishing it
# ---------------------------------------------------------------------------


@dataclass
class Outputs:
    """What one result writes: ``files`` as (path, bytes), the main output first (it is
    published last, see :class:`faceveil.media.Staged`); none for a file without a face
    under the "skip" policy. ``faces`` and ``notes`` are what to say of it."""

    files: list[tuple[Path, bytes]]
    faces: int
    notes: list[str]


def anonymized_outputs(result: Anonymized | NoFaceError, dst: str | os.PathLike,
                       output: Output, original: images.LoadedImage | None = None
                       ) -> Outputs:
    """The files of an anonymized image: ``dst`` (a PNG, its record in its chunk) and,
    with ``output.sidecar``, the record beside it; for an image without a face (``result``
    is the :class:`NoFaceError`), what ``output.no_face`` says: nothing, a copy of the
    ``original`` pixels stripped of metadata, or the error raised.

    Raises:
        InputError: ``dst`` is not a .png name.
        NoFaceError: no face, with the "error" policy.
    """
    from .. import batch

    dst = media.anonymized_output(dst)
    if isinstance(result, NoFaceError):
        files: list[tuple[Path, bytes]] = []

        def copy() -> None:
            if original is None:
                raise result
            files.append((dst, images.encode_image(original.pixels, "PNG")))

        notes = batch.no_face(output.no_face, result, copy)
        return Outputs(files, 0, [*(original.notes if original else []), *notes])
    files = [(dst, result.png_bytes())]
    if output.sidecar:
        files.append((media.sidecar_path(dst), result.sidecar_bytes()))
    return Outputs(files, len(result.regions),
                   list(result.notes) + batch.left_out_notes(result.skipped))


def recovered_outputs(result: Recovered, dst: str | os.PathLike,
                      notes: Sequence[str] = ()) -> Outputs:
    """The file of a recovered image: ``dst`` in the format its extension names, its
    original metadata restored (what that format cannot hold joins the notes).

    Raises:
        InputError: an extension faceveil cannot write.
    """
    dst = Path(dst)
    said = [*notes, *result.notes]
    data = result.encode(media.output_format(dst), said)
    return Outputs([(dst, data)], len(result.faces), said)


def publish(outputs: Outputs, *, replace: bool) -> None:
    """Write ``outputs`` atomically (:func:`faceveil.media.write_all`): a name taken
    meanwhile is never overwritten unless ``replace`` (``--force``).

    Raises:
        OutputExistsError: a name was taken meanwhile (nothing of this result stays).
        InputError: the files cannot be written (a full disk, permissions).
    """
    if outputs.files:
        media.write_all(outputs.files, replace=replace)


def incomplete(outputs: Sequence[Path], *, anonymized: bool, copies: bool = False
               ) -> str | None:
    """Why a finished run's outputs (the main output first, then its sidecar) are not
    complete and valid, or None when they are (``--skip-existing``): every file there, the
    image decodes in full, and for an anonymized image its record verifies (digest) and
    matches its sidecar. ``copies``: a PNG without a record counts (``--no-face copy``).
    Checked without the key, so another run's output is kept, never redone."""
    main, *rest = outputs
    missing = [p.name for p in outputs if not p.is_file()]
    if missing:
        return "missing " + ", ".join(missing)
    if media.is_video(main):
        return None  # published atomically, so there whole; not decoded again
    try:
        loaded = load(main)
        record = png.from_text_chunks(loaded.text) if anonymized else None
        if anonymized and record is None and not copies:
            return f"{main.name} has no faceveil record"
        for side in rest:
            if record is None or png.read_sidecar(side).digest != record.digest:
                return f"{side.name} does not match {main.name}"
    except FaceveilError as e:
        return str(e)
    return None


def resume_check(output: Output, *, anonymized: bool):
    """What ``--skip-existing`` asks of a planned folder item (for
    :func:`faceveil.batch.plan`'s ``resume``), or None without it."""
    if not output.skip_existing:
        return None
    copies = output.no_face == "copy"
    return lambda item: incomplete(item.outputs, anonymized=anonymized, copies=copies)
