"""The Python API: anonymize, recover and inspect images and clips. The command line, the
web page and the Ray runner are thin skins on it.

Anonymize, as data: image -> faces (:mod:`faceveil.faces`) -> keys (a nonce and key
material per face) -> the engine (:mod:`faceveil.pipeline`) -> the record
(:mod:`faceveil.format`) -> PNG. Recover runs the same arrows backwards from the record
stored in the file, opened with the key (:func:`faceveil.format.auth.open`).

Example::

    from faceveil import api, keys
    from faceveil.options import Options

    key = keys.KeySource.from_key_file("my.key")
    result = api.anonymize("photo.jpg", key)            # default options
    result.save("anon.png")
    back = api.recover("anon.png", key)
    back.save("back.png")
    fast = api.anonymize("photo.jpg", key, options=Options.of(steps=25))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .diffusion import backends
from .diffusion.engine import Progress
from .errors import FaceveilError, InputError
from .faces import FaceRegion
from .format import auth, holders, png
from .format.records import Opened, Record
from .keys import FaceShare, KeySource, SecretKey
from .options import DEFAULTS, FixedKeys, Options
from .pipeline import anonymize as anon
from .pipeline import generate as gen
from .pipeline import recover as rec
from .pipeline.anonymize import SequenceFrame
from .pipeline.results import (
    Anonymized,
    ImageInput,
    Outputs,
    Recovered,
    anonymized_outputs,
    load,
    publish,
    recovered_outputs,
    resume_check,
)
from .recipients import Identities, Recipients
from .timings import Timings

if TYPE_CHECKING:
    from .diffusion.models import Backbone
    from .video import VideoResult

__all__ = [
    "Anonymized", "Outputs", "Recovered", "SequenceFrame", "anonymize", "anonymize_many",
    "anonymized_outputs", "publish", "recovered_outputs", "resume_check",
    "anonymize_sequence", "anonymize_video", "box_region", "detect_video", "find_regions",
    "generate_faces", "get_model", "inspect", "inspect_video", "open_record", "read_record",
    "recover", "recover_many", "recover_video", "resolution_notes", "rewrap", "share_face",
    "Timings",
]

Meta = str | os.PathLike | dict | Record | None
Key = KeySource | Identities
"""What opens a file: a key file or passphrase, or the identities of its recipients."""


def get_model(model: Backbone | str | dict | None = None, device: str | None = None,
              expect_sha256: str | None = None, *, options: Options | None = None
              ) -> Backbone:
    """A loaded model for a preset, folder, hub id or record reference (cached per
    process), or the loaded model given; ``expect_sha256`` refuses other weights.

    Without ``options``: the torch model (exact numerics, any model). With ``options``:
    the one :func:`anonymize` uses for them, on their device unless ``device`` says
    otherwise: the built-in model through onnxruntime on a CPU where their faces come
    back only from their sealed originals (:class:`faceveil.options.Runtime`), else
    torch."""
    if options is None:
        return backends.get_model(model, device, expect_sha256)
    return backends.get_model(model, device or options.runtime.device, expect_sha256,
                              backend=backends.backend_for(options))


def _model(model: Backbone | str | None, options: Options,
           timings: Timings | None = None) -> Backbone:
    with (timings or Timings()).phase("model load"):
        return get_model(model, options=options)


# ---------------------------------------------------------------------------
# Photos
# ---------------------------------------------------------------------------


def anonymize(image: ImageInput, key: KeySource | Recipients, *, options: Options | None = None,
              model: Backbone | str | None = None,
              regions: Sequence[FaceRegion] | None = None, mask: np.ndarray | None = None,
              progress: Progress | None = None, fixed: FixedKeys | None = None,
              timings: Timings | None = None) -> Anonymized:
    """Replace every face in ``image`` with another identity, reversibly under ``key``.

    Args:
        image: a path, PNG or JPEG bytes, PIL image or uint8 (H, W, 3) array.
        key: the secret (:class:`~faceveil.keys.KeySource`), or public-key recipients
            (:class:`~faceveil.recipients.Recipients`): then nothing this process keeps
            can recover the faces, only the recipients' identities can.
        options: :class:`~faceveil.options.Options` (sampling, detection, protection,
            runtime); default: :data:`faceveil.options.DEFAULTS`.
        model: a loaded backbone, a preset name, a diffusers folder or a hub id
            (default: the default model, :func:`faceveil.diffusion.hub.default_model`).
        regions: explicit face regions (skips detection).
        mask: boolean (H, W) mask of what to replace (white = replace); implies an
            aligned input.
        progress: called after every model evaluation with (phase, done, total).
        fixed: a fixed salt and nonces (:class:`~faceveil.options.FixedKeys`) to make a
            run repeatable; never reuse them for another image.
        timings: a :class:`~faceveil.timings.Timings` that gets the seconds of each phase
            (model load, reading, detection, key, model, harmonize/paste, record) and the
            model's network calls.

    Returns:
        :class:`~faceveil.pipeline.results.Anonymized`: the pixels, the record, the
        regions anonymized and what detection left out (``skipped``).

    Raises:
        NoFaceError: no face was found (what was left out is in its ``skipped``).
        InputError: a bad image, mask, nonce or option.
        ModelError: the model cannot be loaded.
    """
    options = options or DEFAULTS
    timings = timings or Timings()
    backbone = _model(model, options, timings)
    job = anon.prepare(image, key, backbone, options, regions=regions, mask=mask, fixed=fixed,
                       timings=timings)
    return anon.anonymize_jobs([job], backbone, options, progress, timings)[0]


def anonymize_many(sources: Sequence[ImageInput], key: KeySource | Recipients, *,
                   options: Options | None = None, model: Backbone | str | None = None,
                   progress: Progress | None = None, timings: Timings | None = None
                   ) -> list[Anonymized | Exception]:
    """:func:`anonymize` for several images, their faces batched together for the model
    (a folder of small photos fills the batches). Each image gets its own salt and
    nonces.

    Returns:
        One entry per source: its :class:`Anonymized`, or the exception that stopped it
        (a :class:`FaceveilError` such as a bad file or no face; anything else is a
        bug), so one bad image does not stop the rest.
    """
    options = options or DEFAULTS
    timings = timings or Timings()
    backbone = _model(model, options, timings)
    jobs: list[anon.Job | Exception] = []
    for source in sources:
        try:
            jobs.append(anon.prepare(source, key, backbone, options, timings=timings))
        except FaceveilError as e:
            jobs.append(e)
        except Exception as e:  # noqa: BLE001 - a bug on one image must not stop the others
            if len(sources) == 1:
                raise
            jobs.append(e)
    return anon.anonymize_jobs(jobs, backbone, options, progress, timings)


def read_record(image: ImageInput | None = None, meta: Meta = None) -> Record:
    """The record of an anonymized image: from ``meta`` (a sidecar, its contents or a
    :class:`Record`) when given, else from the image's PNG chunk. Needs no key."""
    return png.read(image, meta)


def inspect(image: ImageInput | None = None, meta: Meta = None) -> dict:
    """The public record of an anonymized image, as JSON (nothing secret is in it)."""
    return read_record(image, meta).public()


def open_record(image: ImageInput, key: Key, *, meta: Meta = None,
                deniable: bool = False) -> Opened:
    """The key holder's view of an anonymized file: its record opened with the key (key
    check and MAC verified, per-face geometry, residuals, sealed originals and original
    metadata decrypted). ``deniable`` also accepts a file without key check and MAC
    (:func:`faceveil.format.auth.open_unauthenticated`)."""
    record = read_record(image, meta)
    return (auth.open_unauthenticated if deniable else auth.open)(record, key)


def recover(image: ImageInput, key: Key | FaceShare, *, meta: Meta = None,
            options: Options | None = None, model: Backbone | str | None = None,
            method: str | None = None, deniable: bool = False,
            progress: Progress | None = None, residual: bool = True,
            timings: Timings | None = None) -> Recovered:
    """Restore the original faces of an anonymized image with the right key.

    ``method`` picks the recovery ("lossless": the sealed originals, bit-exact, no
    model; "exact-steps" or "plain": by diffusion; default: the one the file names). The
    model is reloaded from the record's reference unless ``model`` says where to find it;
    either way its weights must hash to the recorded value. ``deniable=True`` accepts a
    file without key check and MAC (made with ``--deniable``): nothing in it is
    authenticated, a wrong key yields other faces, and its model reference is only
    followed when it names a preset. ``residual=False`` ignores the stored precision
    residual (to measure the paper's method as it was). ``key`` is a key file or
    passphrase, the :class:`~faceveil.recipients.Identities` of a recipient, or a face
    key (:func:`share_face`): that face alone comes back, the others stay anonymized.

    Raises:
        WrongKeyError: the key is not the one the file was made with.
        MetadataError: missing, corrupt, modified or (without ``deniable``)
            unauthenticated metadata.
        ModelError: the model cannot be found or has different weights.
    """
    result = recover_many([image], key, metas=[meta], options=options, model=model,
                          method=method, deniable=deniable, progress=progress,
                          residual=residual, timings=timings)[0]
    if isinstance(result, Exception):
        raise result
    return result


def recover_many(sources: Sequence[ImageInput], key: Key | FaceShare, *,
                 metas: Sequence[Meta] | None = None, options: Options | None = None,
                 model: Backbone | str | None = None, method: str | None = None,
                 deniable: bool = False, progress: Progress | None = None,
                 residual: bool = True, timings: Timings | None = None
                 ) -> list[Recovered | FaceveilError]:
    """:func:`recover` for several images (``metas``: one metadata source per image, or
    None), the faces of those made with the same model and sampler batched together.

    Returns:
        One entry per source: its :class:`Recovered`, or the :class:`FaceveilError`
        that stopped it, so one bad image does not stop the rest. ``timings`` gets the
        seconds of opening the records, the model's load and run (diffusion only) and
        putting the faces back.
    """
    options = options or DEFAULTS
    timings = timings or Timings()
    metas = [None] * len(sources) if metas is None else list(metas)
    if len(metas) != len(sources):
        raise InputError("one metadata source per image is needed")
    opener = (holders.open_face if isinstance(key, FaceShare) else
              auth.open_unauthenticated if deniable else auth.open)
    planned: list[rec.Restore | FaceveilError] = []
    for source, meta in zip(sources, metas, strict=True):
        try:
            with timings.phase("record"):
                loaded = load(source)
                planned.append(rec.plan(loaded, opener(png.read(loaded, meta), key), method))
        except FaceveilError as e:
            planned.append(e)
    return rec.recover_planned(planned, model=model, runtime=options.runtime,
                               progress=progress, residual=residual, timings=timings)


def share_face(image: ImageInput, key: Key, face: int, *, meta: Meta = None) -> FaceShare:
    """The key of one face of a format 4 file (``FaceShare.to_bytes()`` is its file): it
    recovers that face alone, and nothing of the other faces or of other files.

    Raises:
        WrongKeyError: ``key`` does not open the file. InputError: no such face, or an
            older format.
    """
    return holders.share_face(read_record(image, meta), key, face)


def rewrap(path: str | os.PathLike, key: Key, *, add: Recipients | None = None,
           remove: Sequence[str] = (), to_key: KeySource | None = None,
           output: str | os.PathLike | None = None, force: bool = False) -> None:
    """Wrap the file key of an anonymized PNG or clip anew (to ``to_key``, or to its
    recipients plus ``add`` minus ``remove``) and write it again, atomically, at
    ``output`` (default: in place). Only the records change: a PNG's other chunks are
    kept byte for byte, a clip's other packets as they are.

    Raises:
        WrongKeyError: ``key`` does not open the file; nothing is written.
    """
    from pathlib import Path

    from . import media

    def new_key(info, secret):
        return holders.new_key_info(info, secret, add=add, remove=remove, to_key=to_key)

    path = Path(path)
    dst = Path(output) if output is not None else path
    replace = force or dst == path  # in place is the point; another name only with force
    if media.is_video(path):
        from .format import clip
        from .video import io as video_io

        records = clip.rewrap(video_io.raw_records(path, None), key, new_key)
        video_io.replace_records(path, dst, records, replace=replace)
        return
    with media.reading(path, "anonymized image", InputError) as f:
        src = f.read()
    record = holders.rewrap(read_record(src), key, new_key)
    media.write_atomic(dst, png.replace_record(src, record), replace=replace)


# ---------------------------------------------------------------------------
# Faces
# ---------------------------------------------------------------------------


def find_regions(pixels: np.ndarray, *, options: Options | None = None,
                 model: Backbone | str | None = None, mask: np.ndarray | None = None
                 ) -> tuple[list[FaceRegion], list[dict]]:
    """The faces :func:`anonymize` would replace in ``pixels`` for this model, and what
    detection left out (excluded and too small detections, low-score candidates, each
    with its ``kind`` and ``reason``)."""
    options = options or DEFAULTS
    return anon.find_regions(pixels, _model(model, options), options, mask)


def box_region(pixels: np.ndarray, box: Sequence[int], *, model: Backbone | str | None = None,
               index: int | None = None) -> FaceRegion:
    """The region of a face marked by hand with a box (x, y, w, h), framed for this model
    as ``--box`` frames it, without running the detector."""
    from . import faces

    backbone = backends.get_model(model, backend="auto")  # its framing alone
    return faces.box_region(pixels, box, framing=gen.framing(backbone),
                            crop_size=backbone.image_size, index=index)


def resolution_notes(regions: Sequence[FaceRegion], model: Backbone | str | None = None
                     ) -> list[str]:
    """Warnings for faces much larger than the model's crops (they come out soft), with
    what to do about it."""
    return anon.resolution_notes(regions, backends.get_model(model, backend="auto"))


# ---------------------------------------------------------------------------
# Sequences and clips
# ---------------------------------------------------------------------------


def generate_faces(pixels: Sequence[np.ndarray], regions: Sequence[FaceRegion],
                   nonces: Sequence[bytes], secret: SecretKey, *,
                   options: Options | None = None, model: Backbone | str | None = None,
                   progress: Progress | None = None) -> list[np.ndarray]:
    """The new aligned face of each region (the engine step alone), for your own frame
    loop: see :func:`faceveil.pipeline.generate.generate_faces`."""
    options = options or DEFAULTS
    return gen.generate_faces(pixels, regions, nonces, secret, _model(model, options),
                              options.sampler, options.runtime, progress)


def anonymize_sequence(frames: Sequence[SequenceFrame], secret: SecretKey, params: dict, *,
                       options: Options | None = None, model: Backbone | str | None = None,
                       progress: Progress | None = None) -> list[Anonymized]:
    """Anonymize the frames of one sequence under one resolved key (``params`` as
    :meth:`KeySource.new_params` made them, ``secret`` their resolution), their faces
    batched together. Faces given a new crop (``SequenceFrame.crops``) need
    ``lossless``; never deniable.

    Raises:
        InputError: a frame without faces, or bad nonces, crops or options.
    """
    options = options or DEFAULTS
    if options.protection.deniable:
        raise InputError("a sequence's records are never deniable")
    backbone = _model(model, options)
    jobs = anon.sequence_jobs(frames, secret, params, backbone, options)
    results = anon.anonymize_jobs(jobs, backbone, options, progress)
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results  # type: ignore[return-value]


def anonymize_video(src: str | os.PathLike, dst: str | os.PathLike, key: KeySource,
                    **kwargs) -> VideoResult:
    """Anonymize a clip, one synthetic identity per tracked person: see
    :func:`faceveil.video.anonymize_video`."""
    from . import video

    return video.anonymize_video(src, dst, key, **kwargs)


def recover_video(src: str | os.PathLike, dst: str | os.PathLike, key: KeySource,
                  **kwargs) -> VideoResult:
    """Restore the original faces of an anonymized clip: see
    :func:`faceveil.video.recover_video`."""
    from . import video

    return video.recover_video(src, dst, key, **kwargs)


def detect_video(src: str | os.PathLike, dst: str | os.PathLike, **kwargs) -> dict:
    """What :func:`anonymize_video` would replace: see :func:`faceveil.video.detect_video`."""
    from . import video

    return video.detect_video(src, dst, **kwargs)


def inspect_video(src: str | os.PathLike, **kwargs) -> dict:
    """A clip's public records: see :func:`faceveil.video.inspect_video`."""
    from . import video

    return video.inspect_video(src, **kwargs)
