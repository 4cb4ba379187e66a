"""Video: reversible anonymization of clips, with one stable synthetic identity per person.

Anonymize, as data: clip -> PyAV decodes frames one at a time (upright, RGB) -> faces
found in each frame (:func:`faceveil.api.find_regions`) -> linked into tracks
(:class:`Tracker`) -> frames the detector missed inside a track filled in -> each
track's face made once per segment (:func:`faceveil.api.generate_faces`, keyframes of
several tracks batched) and pasted into its frames, each face's original sealed
(:func:`faceveil.api.anonymize_sequence`) -> each frame re-encoded with its own
timestamp, muxed with the untouched audio and subtitle packets and its record.
Recover runs the same arrows backwards (:func:`faceveil.api.recover_many`).

**Tracks.** Faces are linked from frame to frame by box overlap (IoU >= 0.3 with the
track's box extrapolated from its last two detections), then, for what overlap left
unmatched, by dlib's face embedding (distance <= 0.6, dlib's same-person threshold). A
track lives on while it is missed for at most ``track_gap`` frames in a row; in those
frames its face is still anonymized, with the crop transform interpolated between the
detections on either side and their masks joined and grown by 4% of the crop side. A
track's face is also anonymized for ``track_gap`` frames after its last detection and
before its first (the transform carried, the mask grown), because a
detector that loses a face, or finds it late, usually does so for a few frames while it
is still there. A person who leaves and comes back after more than ``track_gap`` frames
without a detection, whom the embedding does not link back, starts a new track: one
clip can then show them with two synthetic identities.

**Segments: one face per person.** A diffusion model does not give the same face for
two frames of one person, even with the same key: exact DDIM inversion turns the small
changes between two frames (a few grey levels of resampling and compression) into
noise 50 to 95% different, and the keyed mixing turns that into another face
(``benchmarks/video.py``, ``--per-frame``: consecutive anonymized faces 0.52 to 0.56
apart for dlib, flicker 4 to 9 times the original's). So, by default, a track's face
is made once, from its first frame (the keyframe), over the keyframe's mask dilated by
12% of the crop plus twice the distance the paste reads around a pixel (more for
smaller faces), and that one crop is pasted into every following frame with the
frame's own crop transform (blended over the keyframe's mask dilated by 6%, or the
frame's own mask where it reaches further): it moves, turns and scales with the head,
and does not change. A frame whose paste would read past the face made, or whose head
pose moved (eye and nose landmarks 5% of the crop away from the keyframe's), starts a new
segment (:class:`Segment`), with a new keyframe and a new face. The pasted face is not
that frame's diffusion result, so no diffusion can bring the frame's original back:
every face's original pixels are sealed in its record (as ``--lossless``) and
recovery restores them bit-exactly, whatever the codec. Its expression does not follow
the person's (a mouth that talks stays as the keyframe's): following it would publish
the original's landmarks. ``--per-frame`` runs the model on every frame instead (no
sealed originals needed with ``.mkv``, about ten times slower, a face that changes
from frame to frame).

**Keys.** One clip, one key salt (every frame's record carries the same one); one
track, one random nonce, so the track's key material (``SecretKey.face(nonce)``) is the
same in every frame and the person keeps one synthetic identity. Reusing a (salt,
nonce) pair across a track's frames is by design: see SECURITY.md, "Video: one key
material per track".

**Records.** Every frame with faces gets one ordinary format-2 record
(:mod:`faceveil.container`: key check, sealed per-face geometry, the sealed original
pixels, with ``--per-frame`` a precision residual, HMAC over the whole record) with
one more field, covered by its MAC::

    "video": {"frame": N, "pts": P}     # frame number (0-based, decode order) and time

After the last frame comes one clip record::

    {"format": "faceveil-video", "version": 1, "created_by": ...,
     "key":  {"type", "salt", "kdf", "check"},          # as in the frame records
     "clip": {"frames": N, "records": R, "faces": F, "tracks": T, "width": W,
              "height": H, "rotation": 0|90|180|270, "codec": "ffv1"|"h264",
              "time_base": [num, den]},
     "chain": hex,    # SHA-256 chain over (frame number, digest) of every frame record
     "original_metadata": b64 | null,   # the input's container and stream tags, sealed
     "digest": hex, "mac": b64}

The chain, covered by the clip record's MAC, ties the frame records to their frames
and to each other: a record dropped, added, reordered or taken from another clip is
refused, as is a record without key check and MAC (video is never deniable).

**Where records live.** Inside the output file, in a stream of their own titled
``faceveil records``, one packet per frame with faces at that frame's time, and the
clip record last: in Matroska a text subtitle track (S_TEXT/UTF8: the records are
JSON; the track is not a default track, so players do not show it unless asked), in
MP4 a timed-metadata (data) track. Streams are written as the frames go, so memory
stays bounded however long the clip. ``--sidecar`` also writes them to
``OUT.faceveil.jsonl`` (one JSON record per line), for clips whose record stream is
lost (``recover --meta``).

**Codecs.** ``.mkv`` defaults to FFV1 with 8-bit RGB pixels (``bgr0``): bit-exact, so
a recovered clip is bit-exact in every pixel, and with ``--per-frame`` the diffusion
recovery and its precision residual work as for PNG. ``.mp4`` (or ``--codec h264``)
encodes H.264 with libx264 (``yuv420p``, CRF 18 by default; 4:4:4 for odd sizes):
lossy, so each face's original pixels are sealed in its record (as ``--lossless``),
``--per-frame`` too, and recovery restores the faces bit-exactly from them; the rest of
the frame is the re-encoded one. Recovered clips are written the same way (``.mkv``:
lossless; ``.mp4``: re-encoded, faces no longer exact).

**Timing, streams, rotation.** Every frame keeps its own timestamp (variable frame
rate too; Matroska stores milliseconds, so timestamps from another container are
rounded to 1 ms there). Audio and subtitle packets are copied untouched; data streams
(GPS telemetry, timecodes) and attachments are dropped (not published, not kept). The
container's and the video stream's own tags (creation time, location, device) are not
published: they are sealed in the clip record and restored by recovery. The display
matrix (rotation) is copied as it is; faces are found on the upright picture when the
rotation is a multiple of 90 degrees.

**Memory.** Frames are decoded, held for ``track_gap`` frames (a detection that late
can still fill them in) plus one model batch, written and dropped: memory depends on
the frame size, ``track_gap`` and ``batch_size``, never on the clip's length.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__, container, images
from .errors import FaceveilError, InputError, MetadataError, NoFaceError, WrongKeyError
from .keys import KeySource, SecretKey

if TYPE_CHECKING:  # torch is imported only where faces are found or the model runs
    from .faces import FaceRegion
    from .models import Backbone

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                  ".mts", ".m2ts", ".wmv", ".flv", ".3gp", ".ogv"}
OUTPUT_CODECS = {".mkv": "ffv1", ".mp4": "h264"}  # default codec per output extension
MUXERS = {".mkv": "matroska", ".mp4": "mp4"}
CODECS = ("ffv1", "h264")
LOSSY = {"h264"}
DEFAULT_TRACK_GAP = 5
DEFAULT_CRF = 18
RECORD_TITLE = "faceveil records"
CLIP_FORMAT = "faceveil-video"
CLIP_VERSION = 1
INSTALL = "pip install 'faceveil[video]'"
MAX_FRAMES = 1 << 31
MAX_RECORD = container.MAX_CHUNK
_IOU_LINK = 0.3  # box overlap that links a detection to a track
_DLIB_SAME = 0.6  # dlib embedding distance under which two faces are the same person
# Tags that describe a file's structure (rewritten by the muxer), not its content.
_STRUCTURAL = {"major_brand", "minor_version", "compatible_brands", "encoder", "handler_name",
               "vendor_id", "duration", "language"}
_CANDIDATES_KEPT = 200  # low-score candidates listed in a report, per clip


def is_video(path: str | os.PathLike) -> bool:
    """Whether a path names a video, by its extension."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sidecar_path(output: str | os.PathLike) -> Path:
    """Where ``anonymize --sidecar`` writes a clip's records (JSON Lines)."""
    out = Path(output)
    return out.with_name(out.stem + ".faceveil.jsonl")


def output_codec(path: str | os.PathLike, codec: str | None = None) -> str:
    """The video codec an output path gets: ``codec``, or its extension's default."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_CODECS:
        raise InputError(f"a video output must be .mkv or .mp4, not {str(path)!r}")
    codec = codec or OUTPUT_CODECS[suffix]
    if codec not in CODECS:
        raise InputError(f"the video codec must be one of {', '.join(CODECS)}, not {codec!r}")
    if codec == "ffv1" and suffix != ".mkv":
        raise InputError("FFV1 (lossless) video is written to .mkv files; use a .mkv output "
                         "or --codec h264")
    return codec


def require_av():
    """PyAV, or a clear error naming the extra that installs it."""
    try:
        import av
        import av.error  # noqa: F401
    except ImportError:
        raise InputError(f"video needs PyAV, which is not installed: {INSTALL}") from None
    return av


def _av_message(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e).strip() or type(e).__name__


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@dataclass
class _Frame:
    """One decoded frame: its number, timestamp and duration (stream time base) and its
    upright RGB pixels."""

    index: int
    pts: int
    duration: int
    pixels: np.ndarray


def _title(stream) -> str | None:
    meta = dict(stream.metadata or {})
    for k in ("title", "name", "handler_name"):
        if meta.get(k) == RECORD_TITLE:
            return RECORD_TITLE
    return None


class _Input:
    """An open input clip: its video stream, the streams to copy, its record stream."""

    def __init__(self, path: Path) -> None:
        av = require_av()
        name = str(path)
        if not path.exists():
            raise InputError(f"{name!r} not found")
        if path.is_dir():
            raise InputError(f"{name!r} is a folder, not a video")
        if path.stat().st_size == 0:
            raise InputError(f"{name!r} is empty (0 bytes)")
        self.path = path
        try:
            self.container = av.open(name, "r", metadata_errors="replace")
        except av.error.FFmpegError as e:
            raise InputError(f"{name!r} is not a video faceveil can read, or it is corrupt "
                             f"or truncated ({_av_message(e)})") from None
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {name!r}: {e}") from None
        try:
            self._pick_streams(av)
        except BaseException:
            self.container.close()
            raise

    def _pick_streams(self, av) -> None:
        c, name = self.container, str(self.path)
        pic = av.stream.Disposition.attached_pic
        videos = [s for s in c.streams.video if not (s.disposition & pic)]
        if not videos:
            raise InputError(f"{name!r} has no video stream")
        self.video = videos[0]
        if self.video.codec_context is None:
            raise InputError(f"{name!r}: its video codec cannot be decoded by this PyAV build")
        self.video.thread_type = "AUTO"
        self.time_base = self.video.time_base or Fraction(1, 90000)
        self.records = next((s for s in c.streams if s.type in ("subtitle", "data")
                             and _title(s)), None)
        self.copy = [s for s in c.streams if s.type in ("audio", "subtitle")
                     and s is not self.records]
        self.notes: list[str] = []
        dropped = [f"{s.type} stream #{s.index}" for s in c.streams
                   if s not in self.copy and s is not self.video and s is not self.records
                   and not (s.type == "video" and s.disposition & pic)]
        dropped += [f"cover picture #{s.index}" for s in c.streams.video
                    if s.disposition & pic]
        if dropped:
            self.notes.append(f"not copied (not published, not kept): {', '.join(dropped)}")
        # The input's own tags (creation time, location, device...) are sealed, not
        # published; those that only describe the file's structure are dropped.
        self.metadata = {f"container:{k}": str(v).encode() for k, v in c.metadata.items()
                         if k.lower() not in _STRUCTURAL}
        self.metadata.update({f"video:{k}": str(v).encode()
                              for k, v in self.video.metadata.items()
                              if k.lower() not in _STRUCTURAL})
        rate = self.video.average_rate or self.video.guessed_rate
        self.rate = Fraction(rate) if rate else Fraction(25)
        frames = int(self.video.frames or 0)
        if not frames and c.duration:
            frames = int(c.duration / 1_000_000 * float(self.rate))
        self.frames_hint = frames or None

    def close(self) -> None:
        self.container.close()

    def frames(self, on_packet: Callable | None = None) -> Iterator[_Frame]:
        """The video's frames in order, upright RGB; other packets of the streams to copy
        go to ``on_packet`` as they are read."""
        av = require_av()
        index, size, last_pts = 0, None, None
        self.matrix, self.turns = None, 0
        step = max(1, round(1 / (self.rate * self.time_base)))
        copy = {s.index for s in self.copy}
        try:
            for packet in self.container.demux():
                if packet.stream.index in copy:
                    if on_packet is not None and packet.size:
                        on_packet(packet)
                    continue
                if packet.stream.index != self.video.index:
                    continue
                for frame in packet.decode():
                    if size is None:
                        size = (frame.width, frame.height)
                        self.matrix, self.turns = _rotation(frame, self.notes)
                    elif (frame.width, frame.height) != size:
                        raise InputError(
                            f"{str(self.path)!r}: the frame size changes at frame {index} "
                            f"({size[0]}x{size[1]} to {frame.width}x{frame.height}); "
                            "faceveil needs one frame size per clip (split the clip there)")
                    pts = frame.pts if frame.pts is not None else (
                        0 if last_pts is None else last_pts + step)
                    if last_pts is not None and pts <= last_pts:
                        raise InputError(f"{str(self.path)!r}: the timestamps of its frames "
                                         f"do not increase (frame {index})")
                    duration = int(frame.duration or 0) or step
                    pixels = np.rot90(_to_rgb(frame), self.turns) if self.turns else \
                        _to_rgb(frame)
                    yield _Frame(index, int(pts), duration, np.ascontiguousarray(pixels))
                    index, last_pts = index + 1, pts
        except av.error.FFmpegError as e:
            raise InputError(f"{str(self.path)!r} is corrupt or truncated (after frame "
                             f"{index}: {_av_message(e)})") from None
        if index == 0:
            raise InputError(f"{str(self.path)!r}: no frame could be decoded (corrupt, "
                             "truncated or empty video stream)")
        if self.video.frames and index < self.video.frames:
            self.notes.append(f"the video stream ends early: {index} of the "
                              f"{self.video.frames} frames its header announces were "
                              "decoded (a truncated file?)")


def _rotation(frame, notes: list[str]) -> tuple[tuple[int, ...] | None, int]:
    """The frame's display matrix (9 ints, to copy) and the quarter turns that make its
    picture upright (0 when the rotation is not a multiple of 90 degrees)."""
    matrix = None
    for sd in frame.side_data:
        if "DISPLAYMATRIX" in str(getattr(sd, "type", "")) and len(bytes(sd)) == 36:
            matrix = struct.unpack("<9i", bytes(sd))
    angle = float(frame.rotation or 0) if matrix else 0.0
    turns = round(angle / 90)
    if abs(angle - 90 * turns) > 1:
        notes.append(f"the video is displayed rotated by {angle:g} degrees: faces are looked "
                     "for in the stored, unrotated picture")
        turns = 0
    return matrix, turns % 4


def _to_rgb(frame) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB, read with its own colour space and range."""
    if frame.format.name in ("rgb24", "bgr0", "bgra", "rgba", "gbrp", "bgr24"):
        return frame.to_ndarray(format="rgb24")
    rgb = frame.reformat(format="rgb24", src_color_range=frame.color_range or None,
                         dst_color_range="JPEG")
    return rgb.to_ndarray()


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


class _Writer:
    """An output clip: the re-encoded video, the copied streams and (optionally) the
    record stream, timestamps and display matrix taken from the input."""

    def __init__(self, path: Path, suffix: str, codec: str, crf: int, inp: _Input,
                 shape: tuple[int, int], *, records: bool,
                 metadata: dict[str, bytes] | None = None) -> None:
        av = require_av()
        self.av, self.inp, self.codec = av, inp, codec
        self.turns = inp.turns
        h, w = shape  # upright
        sh, sw = (w, h) if self.turns % 2 else (h, w)  # stored
        # Matroska: only the streams we mark are default tracks (never the records), and
        # timestamps stay as they are (no shift when audio starts before 0, e.g. AAC
        # priming), so every frame keeps its own time.
        options = ({"default_mode": "passthrough", "avoid_negative_ts": "disabled"}
                   if suffix == ".mkv" else {})
        self.out = av.open(str(path), "w", format=MUXERS[suffix], options=options)
        try:
            self._streams(inp, sw, sh, crf, records, metadata or {})
        except BaseException:
            self.out.close()
            raise
        self.durations: dict[int, int] = {}
        self.last_record = -1

    def _streams(self, inp: _Input, width: int, height: int, crf: int, records: bool,
                 metadata: dict[str, bytes]) -> None:
        av, out = self.av, self.out
        for k, v in metadata.items():
            where, _, name = k.partition(":")
            if where == "container":
                out.metadata[name] = v.decode("utf-8", errors="replace")
        if self.codec == "ffv1":
            vs = out.add_stream("ffv1", rate=inp.rate, options={"level": "3", "slicecrc": "1"})
            vs.pix_fmt = "bgr0"
        else:
            even = width % 2 == 0 and height % 2 == 0
            vs = out.add_stream("libx264", rate=inp.rate,
                                options={"crf": str(int(crf)), "preset": "medium"})
            vs.pix_fmt = "yuv420p" if even else "yuv444p"
            src = inp.video.codec_context
            for attr in ("colorspace", "color_range", "color_primaries", "color_trc"):
                with contextlib.suppress(AttributeError, ValueError, TypeError):
                    setattr(vs.codec_context, attr, getattr(src, attr))
        vs.width, vs.height = width, height
        vs.time_base = inp.time_base
        vs.codec_context.time_base = inp.time_base
        vs.disposition = av.stream.Disposition.default
        if inp.video.metadata.get("language"):
            vs.metadata["language"] = inp.video.metadata["language"]
        for k, v in metadata.items():
            where, _, name = k.partition(":")
            if where == "video" and name.lower() not in ("duration", "encoder"):
                vs.metadata[name] = v.decode("utf-8", errors="replace")
        if inp.matrix is not None:
            vs.set_display_matrix(list(inp.matrix))
        self.video = vs
        self.copies = {}
        for s in inp.copy:
            name = s.codec_context.name if s.codec_context else s.name
            if out.supported_codecs and name not in out.supported_codecs:
                raise InputError(
                    f"the {s.type} stream #{s.index} ({name}) of {str(inp.path)!r} cannot be "
                    f"copied into {Path(out.name).suffix or 'this'} files; write a .mkv "
                    "output (Matroska holds nearly every codec)")
            o = out.add_stream_from_template(s)
            for k in ("language", "title"):
                if s.metadata.get(k):
                    o.metadata[k] = s.metadata[k]
            o.disposition = s.disposition
            self.copies[s.index] = o
        self.records = None
        if records:
            if self.out.format.name.startswith("matroska"):
                rs = out.add_mux_stream("subrip")
            else:
                rs = out.add_data_stream("bin_data")
            rs.metadata["title"] = RECORD_TITLE
            rs.disposition = 0
            self.records = rs
        try:
            out.start_encoding()
        except self.av.error.FFmpegError as e:
            raise InputError(f"cannot write the output video ({_av_message(e)})") from None

    def frame(self, f: _Frame, pixels: np.ndarray) -> None:
        av = self.av
        stored = np.ascontiguousarray(np.rot90(pixels, -self.turns) if self.turns else pixels)
        vf = av.VideoFrame.from_ndarray(stored, format="rgb24")
        if self.codec != "ffv1":
            ctx = self.video.codec_context
            vf = vf.reformat(format=self.video.pix_fmt,
                             dst_colorspace=_colorspace(ctx.colorspace),
                             src_color_range="JPEG",
                             dst_color_range=ctx.color_range or "MPEG")
        vf.pts = f.pts
        vf.time_base = self.inp.time_base
        self.durations[f.pts] = f.duration
        self._mux(self.video.encode(vf))

    def _mux(self, packets) -> None:
        for p in packets:
            d = self.durations.pop(p.pts, None) if p.pts is not None else None
            if not p.duration and d:
                p.duration = d
            self.out.mux(p)

    def packet(self, packet) -> None:
        o = self.copies.get(packet.stream.index)
        if o is None or (packet.pts is None and packet.dts is None):
            return
        packet.stream = o
        self.out.mux(packet)

    def record(self, data: bytes, pts: int, duration: int) -> None:
        rs = self.records
        ts = int(Fraction(pts) * self.inp.time_base / rs.time_base)
        ts = max(ts, self.last_record + 1)
        p = self.av.Packet(data)
        p.stream = rs
        p.time_base = rs.time_base
        p.pts = p.dts = ts
        p.duration = max(1, int(Fraction(duration) * self.inp.time_base / rs.time_base))
        self.last_record = ts
        self.out.mux(p)

    def close(self) -> None:
        self._mux(self.video.encode(None))
        self.out.close()


def _colorspace(value) -> str:
    """A colour space swscale knows for this codec-context value (bt601 otherwise)."""
    names = {1: "ITU709", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020",
             10: "BT2020", 4: "FCC"}
    return names.get(int(value or 0), "ITU601")


class _Staged:
    """Outputs written to temporary files beside their destination and renamed into
    place by :meth:`commit`; anything else (an error, Ctrl-C) removes them."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.temps: list[Path] = []
        for p in self.paths:
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
            except OSError as e:
                self.discard()
                raise InputError(f"cannot write {str(p)!r}: {e.strerror or e}") from None
            os.close(fd)
            self.temps.append(Path(tmp))

    def commit(self, which: Sequence[int] | None = None) -> None:
        umask = os.umask(0)
        os.umask(umask)
        for i, (tmp, dst) in enumerate(zip(self.temps, self.paths, strict=True)):
            if which is not None and i not in which:
                continue
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, dst)
        self.discard()

    def discard(self) -> None:
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> _Staged:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


# ---------------------------------------------------------------------------
# Tracks
# ---------------------------------------------------------------------------


@dataclass
class Track:
    """A face followed through a clip: one nonce, hence one synthetic identity.

    ``seen`` holds its detections (frame number -> region) still needed to fill in
    frames; ``detected`` and ``filled`` count its faces found and filled in."""

    id: int
    nonce: bytes
    seen: dict[int, FaceRegion]
    first: int
    last: int
    embedding: np.ndarray | None = None
    detected: int = 0
    filled: int = 0
    boxes: list[list] = field(default_factory=list)  # [frame, x, y, w, h, kind] (detect)
    segment: Segment | None = None  # the synthetic face shown now (one-face mode)


# Pose change that starts a new segment: mean distance of the eye and nose landmarks
# from the keyframe's, in the aligned crop, as a fraction of its side.
_POSE_CHANGE = 0.05
_RIGID = list(range(27, 48))  # nose bridge and tip, both eyes: what expressions move least
_SEGMENT_GROW = 0.06  # a segment's mask: the keyframe's dilated by this fraction of the crop


@dataclass
class Segment:
    """A stretch of a track that shows one generated face: the keyframe's, made once by
    the model and pasted into every frame of the stretch with that frame's crop transform.

    ``mask`` is the soft crop-space blend mask of the stretch: the keyframe's, dilated
    by :data:`_SEGMENT_GROW` of the crop, so that it lies over the keyframe's mask moved
    that far, feathered edge included. A frame's blend mask is the larger of ``mask``
    and its own, so no pixel of its face keeps more of the original than its own mask
    would leave. The model makes the new face over ``made``: the hard ``mask`` dilated
    by as much again, plus twice the distance :func:`faceveil.faces.paste` reads around
    a pixel at the keyframe's scale. Outside ``made`` the crop still holds the
    keyframe's own pixels, which must not reach another frame; so a frame stays in the
    stretch only while everything its paste reads lies inside ``made``, and while its
    head pose stays close to the keyframe's (:data:`_POSE_CHANGE`); otherwise the track
    starts a new segment, with a new face."""

    frame: int
    mask: np.ndarray
    made: np.ndarray
    rigid: np.ndarray | None  # the keyframe's eye and nose landmarks, in the crop
    crop: np.ndarray | None = None  # the generated face, once made

    @staticmethod
    def start(region: FaceRegion, frame: int) -> Segment:
        mask = np.asarray(region.mask, np.float32)
        r = max(1, round(_SEGMENT_GROW * mask.shape[0]))
        if region.source not in ("interpolated", "carried"):  # those are grown already
            mask = _dilated(mask, r)
        made = _dilated((mask > 0).astype(np.float32), r + 2 * _read_reach(region)) > 0
        return Segment(frame, mask, made, _rigid(region))

    def fits(self, region: FaceRegion) -> bool:
        blend = ((self.mask > 0) | (np.asarray(region.mask) > 0)).astype(np.float32)
        read = _dilated(blend, 2 * _read_reach(region)) > 0  # the alpha's reach, the crop's
        if (read & ~self.made).any():
            return False
        rigid = _rigid(region)
        if rigid is None or self.rigid is None:  # a filled-in face: placed by its track
            return True
        moved = float(np.linalg.norm(rigid - self.rigid, axis=1).mean())
        return moved <= _POSE_CHANGE * self.mask.shape[0]

    def admit(self, region: FaceRegion) -> bool:
        """Whether ``region`` stays in this segment (:meth:`fits`). A segment made from a
        filled-in face, which has no landmarks, holds the pose of its first detection."""
        if not self.fits(region):
            return False
        if self.rigid is None:
            self.rigid = _rigid(region)
        return True

    def region(self, region: FaceRegion) -> FaceRegion:
        """``region`` with its blend mask in this segment (what is pasted, sealed and
        recorded): the larger of the segment's and its own."""
        import dataclasses

        return dataclasses.replace(region, mask=np.maximum(self.mask, region.mask))

    def keyframe(self, region: FaceRegion) -> FaceRegion:
        """The keyframe's region as the model sees it: its mask is ``made``."""
        import dataclasses

        return dataclasses.replace(region, mask=self.made.astype(np.float32))


def _read_reach(region: FaceRegion) -> int:
    """How far (crop pixels) :func:`faceveil.faces.paste` reads around a crop position
    for this region's scale (crop pixels per photo pixel)."""
    from .faces import paste_reach

    scale = math.sqrt(abs(np.linalg.det(np.asarray(region.transform, float)[:, :2])))
    return paste_reach(scale)


def _dilated(mask: np.ndarray, r: int) -> np.ndarray:
    """Grey dilation of a soft mask: each pixel the largest value within ``r`` pixels
    (Chebyshev). Any copy of ``mask`` shifted by up to ``r`` pixels lies under it, its
    feathered edge included."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None]
    return F.max_pool2d(t, 2 * r + 1, stride=1, padding=r)[0, 0].numpy()


def _rigid(region: FaceRegion) -> np.ndarray | None:
    if region.landmarks is None or len(region.landmarks) != 68:
        return None
    from .faces import apply_transform

    return apply_transform(np.asarray(region.transform, float),
                           np.asarray(region.landmarks, float)[_RIGID])


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    """Links each frame's faces to tracks (box overlap, then dlib embedding) and says,
    once a frame is ``gap`` frames old, every face to anonymize in it: detected,
    interpolated between detections, or carried from the nearest detection."""

    def __init__(self, gap: int, embed: Callable | None = None) -> None:
        if gap < 0:
            raise InputError("the track gap must be 0 or more frames")
        self.gap = gap
        self._embed = embed
        self.tracks: list[Track] = []
        self.count = 0

    def embed(self, pixels: np.ndarray, box) -> np.ndarray | None:
        if self._embed is None:
            from . import identity

            self._embed = identity.embed
        try:
            return self._embed(pixels, tuple(int(v) for v in box))
        except (RuntimeError, ValueError):  # dlib on a degenerate box
            return None

    def _predict(self, t: Track, index: int):
        frames = sorted(t.seen)[-2:]
        b1 = np.asarray(t.seen[frames[-1]].box, float)
        if len(frames) < 2:
            return b1
        b0 = np.asarray(t.seen[frames[0]].box, float)
        return b1 + (b1 - b0) * (index - frames[-1]) / (frames[-1] - frames[0])

    def update(self, index: int, regions: Sequence[FaceRegion], pixels: np.ndarray) -> None:
        """Assign frame ``index``'s detected faces to tracks (new tracks as needed)."""
        live = [t for t in self.tracks if index - t.last - 1 <= self.gap and t.last < index]
        pairs = sorted(((_iou(self._predict(t, index), r.box), ti, ri)
                        for ti, t in enumerate(live) for ri, r in enumerate(regions)),
                       reverse=True)
        taken_t: set[int] = set()
        taken_r: dict[int, Track] = {}
        for iou, ti, ri in pairs:
            if iou < _IOU_LINK:
                break
            if ti not in taken_t and ri not in taken_r:
                taken_t.add(ti)
                taken_r[ri] = live[ti]
        rest = [ri for ri in range(len(regions)) if ri not in taken_r]
        lost = [ti for ti in range(len(live)) if ti not in taken_t
                and live[ti].embedding is not None]
        embeddings: dict[int, np.ndarray | None] = {}
        if rest and lost:  # overlap failed (fast motion, a gap): is it the same person?
            for ri in rest:
                embeddings[ri] = self.embed(pixels, regions[ri].box)
            dist = sorted((float(np.linalg.norm(embeddings[ri] - live[ti].embedding)), ti, ri)
                          for ri in rest if embeddings[ri] is not None for ti in lost)
            for d, ti, ri in dist:
                if d > _DLIB_SAME:
                    break
                if ti not in taken_t and ri not in taken_r:
                    taken_t.add(ti)
                    taken_r[ri] = live[ti]
                    live[ti].embedding = embeddings[ri]
        for ri, r in enumerate(regions):
            t = taken_r.get(ri)
            if t is None:
                emb = embeddings[ri] if ri in embeddings else self.embed(pixels, r.box)
                t = Track(self.count, secrets.token_bytes(16), {}, index, index, emb)
                self.count += 1
                self.tracks.append(t)
            t.seen[index] = r
            t.last = index
            t.detected += 1

    def faces_at(self, f: int) -> list[tuple[Track, FaceRegion, str]]:
        """Every face to anonymize in frame ``f`` (call when frame ``f + gap`` has been
        updated, or at the end of the clip): (track, region, kind), kind one of
        ``detected``, ``interpolated`` or ``carried``."""
        out = []
        for t in self.tracks:
            if f in t.seen:
                out.append((t, t.seen[f], "detected"))
                continue
            before = [k for k in t.seen if f - self.gap - 1 <= k < f]
            after = [k for k in t.seen if f < k <= f + self.gap + 1]
            a = max(before) if before else None
            b = min(after) if after else None
            if a is not None and b is not None and b - a - 1 <= self.gap:
                region, kind = _between(t.seen[a], t.seen[b], (f - a) / (b - a)), "interpolated"
            elif a is not None and f - a <= self.gap and b is None:
                region, kind = _carried(t.seen[a]), "carried"
            elif b is not None and b - f <= self.gap and a is None:
                region, kind = _carried(t.seen[b]), "carried"
            else:
                continue
            t.filled += 1
            out.append((t, region, kind))
        return out

    def forget(self, before: int) -> None:
        """Drop what no frame from ``before`` on can need."""
        keep = []
        for t in self.tracks:
            for k in [k for k in t.seen if k < before - self.gap - 1]:
                del t.seen[k]
            if t.seen or t.last >= before - self.gap - 1:
                keep.append(t)
        self.tracks = keep


_FILL_GROW = 0.04  # a filled-in face's mask grows by this fraction of the crop side


def _filled_mask(*masks: np.ndarray) -> np.ndarray:
    """The mask of a face filled in where the detector missed it: the union of the masks
    of the detections it comes from, grown by :data:`_FILL_GROW` of the crop side (its
    place is a guess: the margin keeps the face's edge from showing), then feathered."""
    from .faces import soften

    hard = np.logical_or.reduce([np.asarray(m) > 0 for m in masks]).astype(np.float32)
    hard = _dilated(hard, max(1, round(_FILL_GROW * hard.shape[0]))) > 0
    return soften(hard, 0.06 * hard.shape[0])


def _between(a: FaceRegion, b: FaceRegion, w: float) -> FaceRegion:
    """A face between two detections: transform and box interpolated linearly, the mask
    (in crop space, so aligned) both detections' masks grown (:func:`_filled_mask`)."""
    from .faces import FaceRegion

    ta, tb = np.asarray(a.transform, float), np.asarray(b.transform, float)
    box = tuple(int(round((1 - w) * p + w * q)) for p, q in zip(a.box, b.box, strict=True))
    return FaceRegion(box=box, transform=(1 - w) * ta + w * tb, crop_size=a.crop_size,
                      mask=_filled_mask(a.mask, b.mask), landmarks=None,
                      source="interpolated", score=None)


def _carried(r: FaceRegion) -> FaceRegion:
    from .faces import FaceRegion

    return FaceRegion(box=tuple(r.box), transform=np.asarray(r.transform, float),
                      crop_size=r.crop_size, mask=_filled_mask(r.mask), landmarks=None,
                      source="carried", score=None)


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


def _record_bytes(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def _chain_start(salt: bytes) -> bytes:
    return hashlib.sha256(b"faceveil-video/v1/chain" + salt).digest()


def _chain_next(chain: bytes, record: dict) -> bytes:
    frame = int(record["video"]["frame"])
    return hashlib.sha256(chain + frame.to_bytes(8, "big")
                          + bytes.fromhex(record["digest"])).digest()


def _key_info(params: dict, secret: SecretKey) -> dict:
    return {"type": params["type"], "salt": container.b64e(params["salt"]),
            "kdf": params.get("kdf"), "check": container.b64e(secret.check_value())}


def _clip_record(params: dict, secret: SecretKey, clip: dict, chain: bytes,
                 metadata: dict[str, bytes]) -> dict:
    record = {"format": CLIP_FORMAT, "version": CLIP_VERSION,
              "created_by": f"faceveil {__version__}", "key": _key_info(params, secret),
              "clip": clip, "chain": chain.hex(),
              "original_metadata": container.seal_metadata(secret, metadata)}
    return container.finalize(record, secret.mac(container.canonical_bytes(record)))


def _corrupt(what: str) -> MetadataError:
    return MetadataError(f"the clip's faceveil records are corrupt ({what})")


def _check_int(d: dict, key: str, lo: int, hi: int, what: str) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _corrupt(f"{what}.{key}")
    return v


def _parse(data: bytes | str) -> dict:
    """One record of a clip, validated before the key is known (frame or clip record)."""
    if len(data) > MAX_RECORD:
        raise _corrupt("a record is too large")
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _corrupt("a record is not valid JSON") from None
    if isinstance(record, dict) and record.get("format") == CLIP_FORMAT:
        return _validate_clip(record)
    record = container.validate(record)
    v = record.get("video")
    if not isinstance(v, dict):
        raise _corrupt("a frame record has no video field")
    _check_int(v, "frame", 0, MAX_FRAMES, "video")
    if type(v.get("pts")) is not int:
        raise _corrupt("video.pts")
    return record


def _validate_clip(record: dict) -> dict:
    if record.get("version") != CLIP_VERSION:
        raise MetadataError(f"faceveil video records version {record.get('version')!r} are "
                            "not supported by this faceveil; use the release that made them")
    for k in ("key", "clip", "chain", "digest", "mac"):
        if k not in record:
            raise _corrupt(f"the clip record lacks {k}")
    if not isinstance(record["digest"], str) or not hmac.compare_digest(
            hashlib.sha256(container.canonical_bytes(record)).hexdigest(), record["digest"]):
        raise MetadataError("the clip's faceveil records are corrupt or were modified "
                            "(digest mismatch)")
    clip = record["clip"]
    if not isinstance(clip, dict):
        raise _corrupt("clip")
    for k in ("frames", "records", "faces", "tracks"):
        _check_int(clip, k, 0, MAX_FRAMES * container.MAX_FACES, "clip")
    _check_int(clip, "width", 1, container.MAX_SIDE, "clip")
    _check_int(clip, "height", 1, container.MAX_SIDE, "clip")
    if clip.get("rotation") not in (0, 90, 180, 270) or clip.get("codec") not in CODECS:
        raise _corrupt("clip rotation or codec")
    if not isinstance(record["chain"], str) or len(record["chain"]) != 64:
        raise _corrupt("chain")
    key = record["key"]
    if not isinstance(key, dict) or key.get("check") is None or record.get("mac") is None:
        raise MetadataError("the clip's faceveil records carry no key check or MAC "
                            "(removed to switch off tamper protection?); refusing them")
    container.b64d(key.get("salt"), "key salt", 64)
    return record


class ClipKey:
    """A key source resolved once for a clip's key parameters (a passphrase is
    stretched once, not once per frame); refuses the parameters of another clip."""

    def __init__(self, key: KeySource, params: dict) -> None:
        self.kind = key.kind
        self.params = params
        self.secret = key.resolve(params)

    def resolve(self, params: dict) -> SecretKey:
        if (params.get("type") != self.params["type"] or params.get("salt") != self.params["salt"]
                or params.get("kdf") != self.params.get("kdf")):
            raise MetadataError("the clip's faceveil records mix several clips (their key "
                                "salts differ)")
        return self.secret


def _params(record: dict) -> dict:
    info = record["key"]
    return {"type": info["type"], "salt": container.b64d(info["salt"], "salt", 64),
            "kdf": info.get("kdf")}


def _verify(record: dict, secret: SecretKey) -> None:
    check, mac = record["key"].get("check"), record.get("mac")
    if check is None or mac is None:
        raise MetadataError("a frame record of the clip carries no key check or MAC "
                            "(video records are never deniable); refusing it")
    if not secret.matches(container.b64d(check, "key check", 64)):
        raise WrongKeyError("wrong key: this clip was anonymized with a different key")
    if not hmac.compare_digest(container.b64d(mac, "MAC", 64),
                               secret.mac(container.canonical_bytes(record))):
        raise MetadataError("the clip's faceveil records were modified after anonymization "
                            "(MAC mismatch)")


class Records:
    """A clip's records in order, frame records then the clip record, each checked as
    it is read: with a key, its key check (:class:`WrongKeyError`) and MAC; always, that
    the frame numbers increase, that every record belongs to the clip, and that the
    chain in the clip record covers exactly these frame records (a record removed,
    added or reordered is :class:`MetadataError`, as is a missing clip record). The key
    is resolved once, into :attr:`key` (a :class:`ClipKey`)."""

    def __init__(self, raw: Iterable[bytes | str], key: KeySource | ClipKey | None) -> None:
        self.raw = raw
        self.source = key
        self.key: ClipKey | None = key if isinstance(key, ClipKey) else None
        self.clip: dict | None = None

    def __iter__(self) -> Iterator[dict]:
        chain = salt = None
        last, count = -1, 0
        for data in self.raw:
            if self.clip is not None:
                raise _corrupt("records follow the clip record")
            record = _parse(data)
            params = _params(record)
            if salt is None:
                salt = params["salt"]
                chain = _chain_start(salt)
                if self.source is not None and self.key is None:
                    self.key = ClipKey(self.source, params)  # type: ignore[arg-type]
            if self.key is not None:
                _verify(record, self.key.resolve(params))
            elif params["salt"] != salt:
                raise MetadataError("the clip's faceveil records mix several clips")
            if record.get("format") == CLIP_FORMAT:
                if record["chain"] != chain.hex() or record["clip"]["records"] != count:
                    raise MetadataError("the clip's faceveil records were modified: a frame "
                                        "record was removed, added or reordered (chain "
                                        "mismatch)")
                self.clip = record
                yield record
                continue
            frame = record["video"]["frame"]
            if frame <= last:
                raise MetadataError("the clip's faceveil records are out of order "
                                    "(modified?)")
            last, count = frame, count + 1
            chain = _chain_next(chain, record)
            yield record
        if self.clip is None:
            raise MetadataError("the clip's faceveil records are incomplete (the clip "
                                "record at their end is missing: was the file cut short?)")


def _file_records(path: Path) -> Iterator[bytes]:
    """The record packets of an anonymized clip, read on their own."""
    av = require_av()
    try:
        c = av.open(str(path), "r")
    except av.error.FFmpegError as e:
        raise InputError(f"{str(path)!r} cannot be read ({_av_message(e)})") from None
    try:
        stream = next((s for s in c.streams if s.type in ("subtitle", "data") and _title(s)),
                      None)
        if stream is None:
            raise MetadataError(
                f"{str(path)!r} has no faceveil records (was it re-encoded?); to recover it, "
                "pass the records saved with `anonymize --sidecar` or `inspect --export` as "
                "`recover --meta RECORDS.jsonl`")
        try:
            for packet in c.demux(stream):
                if packet.size:
                    yield bytes(packet)
        except av.error.FFmpegError as e:
            raise InputError(f"{str(path)!r} is corrupt or truncated "
                             f"({_av_message(e)})") from None
    finally:
        c.close()


def _sidecar_records(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    yield line
    except FileNotFoundError:
        raise MetadataError(f"metadata file {str(path)!r} not found") from None
    except IsADirectoryError:
        raise MetadataError(f"metadata file {str(path)!r} is a folder") from None
    except OSError as e:
        raise MetadataError(f"cannot read metadata file {str(path)!r}: {e.strerror}") from None


def _raw_records(src: Path, meta: str | os.PathLike | None) -> Iterator[bytes]:
    return _sidecar_records(Path(meta)) if meta is not None else _file_records(src)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass
class VideoResult:
    """What a video run did: counts for the summary, notes, and (anonymize) what was
    left out (low-score candidates, small faces, with their frame numbers)."""

    output: Path | None
    frames: int = 0
    tracks: int = 0
    faces: int = 0
    filled: int = 0  # faces the detector missed, filled in from their track
    segments: int = 0  # faces the model made (one per track segment; per-frame: 0)
    seconds: float = 0.0
    codec: str = ""
    notes: list[str] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    left_out: int = 0
    max_buffered: int = 0  # most frames held in memory at once

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        fps = self.faces / self.seconds if self.seconds else 0.0
        filled = (f" ({self.filled} filled in where the detector missed)"
                  if self.filled else "")
        made = (f", {self.segments} synthetic face(s) made (one per track segment)"
                if self.segments else "")
        return (f"{self.frames} frame(s), {self.tracks} track(s), {self.faces} face(s)"
                f"{filled}{made} in {self.seconds:.1f} s: {rate:.2f} frames/s, "
                f"{fps:.2f} faces/s")


def _tally(tally: dict[str, list], note: str) -> None:
    """Count a per-frame note; notes that differ only in their numbers count as one."""
    entry = tally.setdefault(re.sub(r"\d[\d.e-]*", "#", note), [note, 0])
    entry[1] += 1


def _tallied(tally: dict[str, list]) -> list[str]:
    return [n + (f" (in {c} frames)" if c > 1 else "") for n, c in tally.values()]


def read_frames(path: str | os.PathLike) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of a clip as faceveil sees it (upright RGB) with its time in seconds."""
    inp = _Input(Path(path))
    try:
        for f in inp.frames():
            yield float(f.pts * inp.time_base), f.pixels
    finally:
        inp.close()


def _check_outputs(paths: Sequence[Path], inputs: Sequence, force: bool) -> None:
    for p in paths:
        images.check_output(p, [i for i in inputs if i is not None], force)


# ---------------------------------------------------------------------------
# Anonymize
# ---------------------------------------------------------------------------


def anonymize_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key: KeySource,
    *,
    model: Backbone | str | None = None,
    codec: str | None = None,
    crf: int = DEFAULT_CRF,
    track_gap: int = DEFAULT_TRACK_GAP,
    steps: int = 50,
    spacing: str = "leading",
    method: str | None = None,
    context: str = "masked",
    lossless: bool = False,
    flip: str | None = None,
    deniable: bool = False,
    kdf: dict | None = None,
    device: str | None = None,
    batch_size: int = 8,
    sidecar: bool = False,
    no_face: str = "skip",
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    protected: Sequence[str | os.PathLike | None] = (),
    detector: str | None = None,
    threshold: float | None = None,
    min_face: int | None = None,
    parser=None,
    per_frame: bool = False,
) -> VideoResult:
    """Anonymize every face of a clip, one synthetic identity per track, reversibly.

    Writes ``dst`` (``.mkv``: FFV1, lossless; ``.mp4`` or ``codec="h264"``: H.264)
    atomically, and with ``sidecar`` its records to :func:`sidecar_path`. By default
    the model makes one face per track segment (:class:`Segment`), pasted into each of
    its frames, and every face's original pixels are sealed in its frame's record;
    ``per_frame`` runs the model on every frame's faces instead (recoverable by diffusion
    from ``.mkv``, with a face that changes from frame to frame). Options are those of
    :func:`faceveil.api.anonymize`, plus ``track_gap`` (frames a track may be missed
    and still anonymized), ``crf`` (H.264 quality), ``no_face`` ("skip": write nothing;
    "copy": write the clip without records; "error": raise :class:`NoFaceError`) and
    ``progress(done, total)``. ``deniable`` is refused: a clip's records must
    authenticate (see SECURITY.md).

    Raises:
        InputError: unreadable or unsupported video, bad options, existing output.
        NoFaceError: no face in the whole clip and ``no_face="error"``.
    """
    from . import api

    require_av()
    if deniable:
        raise InputError("--deniable is not available for video: a clip's records must be "
                         "authenticated (they tie every frame's faces to their frame and "
                         "track); anonymize without --deniable")
    if no_face not in ("skip", "copy", "error"):
        raise InputError(f"no_face must be skip, copy or error, not {no_face!r}")
    src, dst = Path(src), Path(dst)
    codec = output_codec(dst, codec)
    # One face per track segment is pasted into frames it was not made from, so only
    # the sealed originals bring those frames back (see "Segments" above).
    lossless = lossless or codec in LOSSY or not per_frame
    outputs = [dst, sidecar_path(dst)] if sidecar else [dst]
    _check_outputs(outputs, [src, *protected], force)
    backbone = api.get_model(model, device)
    params = key.new_params(kdf)
    secret = key.resolve(params)
    options = dict(model=backbone, steps=steps, spacing=spacing, batch_size=batch_size,
                   method=method or api.DEFAULT_METHOD, context=context, lossless=lossless,
                   flip=flip or api.DEFAULT_FLIP)
    api._check_options(options["method"], context, options["flip"], False, lossless)
    t0 = time.perf_counter()
    inp = _Input(src)
    if inp.records is not None:
        inp.close()
        raise InputError(f"{str(src)!r} is itself an anonymized faceveil clip (it has a "
                         "record stream); recover it first, or its earlier faces would be "
                         "lost")
    result = VideoResult(dst, codec=codec)
    try:
        with _Staged(outputs) as staged:
            run = _AnonymizeRun(inp, staged, result, codec, crf, track_gap, secret, params,
                                options, sidecar, progress, per_frame)
            for frame in inp.frames(run.packet):
                regions, skipped = api.find_regions(
                    frame.pixels, backbone, detector=detector, threshold=threshold,
                    min_face=min_face, parser=parser)
                run.add(frame, regions, skipped)
            run.finish()
            result.notes[:0] = inp.notes
            result.seconds = time.perf_counter() - t0
            if result.faces:
                staged.commit()
                return result
            if no_face == "error":
                raise NoFaceError(f"no face found in the {result.frames} frame(s) of "
                                  f"{str(src)!r}")
            if no_face == "copy":
                _without_records(staged.temps[0], dst)
                result.notes.append("no face found: copied without faceveil records")
            else:
                result.notes.append("no face found: nothing written")
                result.output = None
            return result
    finally:
        inp.close()


class _AnonymizeRun:
    """The state of one clip's anonymization: tracker, frames waiting, writer."""

    def __init__(self, inp: _Input, staged: _Staged, result: VideoResult, codec: str,
                 crf: int, gap: int, secret: SecretKey, params: dict, options: dict,
                 sidecar: bool, progress, per_frame: bool = False) -> None:
        self.inp, self.staged, self.result = inp, staged, result
        self.per_frame = per_frame
        self.codec, self.crf, self.gap = codec, crf, gap
        self.secret, self.params, self.options = secret, params, options
        self.tracker = Tracker(gap)
        self.window: deque[_Frame] = deque()
        self.pending: list[tuple[_Frame, list]] = []
        self.writer: _Writer | None = None
        self.early: list = []
        self.chain = _chain_start(params["salt"])
        self.records = 0
        self.last_frame: _Frame | None = None
        self.sidecar = open(staged.temps[1], "wb") if sidecar else None  # noqa: SIM115
        self.progress = progress
        self.cap = max(2 * options["batch_size"], 8)  # frames waiting for the model
        self.notes: dict[str, list] = {}

    def packet(self, packet) -> None:
        if self.writer is None:
            self.early.append(packet)
        else:
            self.writer.packet(packet)

    def add(self, frame: _Frame, regions, skipped) -> None:
        if self.writer is None:
            self.writer = _Writer(self.staged.temps[0], self.staged.paths[0].suffix.lower(),
                                  self.codec, self.crf, self.inp, frame.pixels.shape[:2],
                                  records=True)
            for p in self.early:
                self.writer.packet(p)
            self.early = []
        for s in skipped:
            self.result.left_out += 1
            if len(self.result.candidates) < _CANDIDATES_KEPT:
                self.result.candidates.append({"frame": frame.index, **s})
        self.tracker.update(frame.index, regions, frame.pixels)
        self.window.append(frame)
        while self.window and self.window[0].index <= frame.index - self.gap:
            self._final(self.window.popleft())

    def _final(self, frame: _Frame) -> None:
        found = self.tracker.faces_at(frame.index)
        self.tracker.forget(frame.index)
        self.pending.append((frame, found))
        buffered = len(self.window) + len(self.pending)
        self.result.max_buffered = max(self.result.max_buffered, buffered)
        if sum(len(f) for _, f in self.pending) >= self.options["batch_size"] \
                or len(self.pending) >= self.cap:
            self._flush()

    def _flush(self) -> None:
        from . import api

        todo = [(frame, found) for frame, found in self.pending if found]
        new = {}
        if todo:
            crops = [None] * len(todo) if self.per_frame else self._segment_faces(todo)
            seq = [api.SequenceFrame(frame.pixels, [r for _, r, _ in found],
                                     [t.nonce for t, _, _ in found],
                                     {"video": {"frame": frame.index, "pts": frame.pts}},
                                     crops=c)
                   for (frame, found), c in zip(todo, crops, strict=True)]
            results = api.anonymize_sequence(seq, self.secret, self.params, **self.options)
            new = {frame.index: r for (frame, _), r in zip(todo, results, strict=True)}
        for frame, found in self.pending:
            r = new.get(frame.index)
            self.writer.frame(frame, frame.pixels if r is None else r.pixels)
            if r is not None:
                data = _record_bytes(r.record)
                self.writer.record(data, frame.pts, frame.duration)
                if self.sidecar:
                    self.sidecar.write(data + b"\n")
                self.chain = _chain_next(self.chain, r.record)
                self.records += 1
                self.result.faces += len(found)
                self.result.filled += sum(kind != "detected" for _, _, kind in found)
                for note in r.notes:
                    _tally(self.notes, note)
            self.result.frames += 1
            self.last_frame = frame
            if self.progress:
                self.progress(self.result.frames, self.inp.frames_hint)
        self.pending = []

    def _segment_faces(self, todo: list) -> list[list[np.ndarray]]:
        """Give each face of ``todo`` its track's current segment (a new one where the
        face no longer fits the last: :class:`Segment`) and its blend mask there; make
        the new segments' faces in one batch; return each frame's crops."""
        from . import api

        keyframes: list[tuple[Segment, np.ndarray, FaceRegion, bytes]] = []
        rows: list[list[Segment]] = []
        for frame, found in todo:
            row = []
            for i, (track, region, kind) in enumerate(found):
                seg = track.segment
                if seg is None or not seg.admit(region):
                    seg = track.segment = Segment.start(region, frame.index)
                    self.result.segments += 1
                    keyframes.append((seg, frame.pixels, seg.keyframe(region), track.nonce))
                found[i] = (track, seg.region(region), kind)
                row.append(seg)
            rows.append(row)
        if keyframes:
            engine = {k: v for k, v in self.options.items() if k != "lossless"}
            made = api.generate_faces([p for _, p, _, _ in keyframes],
                                      [r for _, _, r, _ in keyframes],
                                      [n for _, _, _, n in keyframes], self.secret, **engine)
            for (seg, _, _, _), crop in zip(keyframes, made, strict=True):
                seg.crop = crop
        return [[seg.crop for seg in row] for row in rows]

    def finish(self) -> None:
        while self.window:
            self._final(self.window.popleft())
        self._flush()
        self.result.tracks = self.tracker.count
        last = self.last_frame
        h, w = last.pixels.shape[:2]
        clip = {"frames": self.result.frames, "records": self.records,
                "faces": self.result.faces, "tracks": self.tracker.count,
                "width": int(w), "height": int(h), "rotation": 90 * self.inp.turns,
                "codec": self.codec,
                "time_base": [self.inp.time_base.numerator, self.inp.time_base.denominator]}
        record = _clip_record(self.params, self.secret, clip, self.chain, self.inp.metadata)
        data = _record_bytes(record)
        self.writer.record(data, last.pts + last.duration, last.duration)
        self.writer.close()
        self.result.notes += _tallied(self.notes)
        if self.sidecar:
            self.sidecar.write(data + b"\n")
            self.sidecar.close()
        if self.inp.metadata:
            self.result.notes.append("the clip's own tags (" + ", ".join(
                sorted(k.split(":", 1)[1] for k in self.inp.metadata))
                + ") were sealed under the key, not published")


def _without_records(src: Path, dst: Path) -> None:
    """Copy a clip without its record stream (``--no-face copy``), atomically."""
    av = require_av()
    with _Staged([dst]) as staged:
        with av.open(str(src)) as inp, av.open(str(staged.temps[0]), "w",
                                               format=MUXERS[dst.suffix.lower()]) as out:
            keep = {}
            for s in inp.streams:
                if not _title(s):
                    keep[s.index] = out.add_stream_from_template(s)
                    keep[s.index].disposition = s.disposition
            for packet in inp.demux():
                o = keep.get(packet.stream.index)
                if o is not None and packet.size and packet.dts is not None:
                    packet.stream = o
                    out.mux(packet)
        staged.commit()


# ---------------------------------------------------------------------------
# Recover
# ---------------------------------------------------------------------------


def recover_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key: KeySource,
    *,
    meta: str | os.PathLike | None = None,
    model: Backbone | str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    method: str | None = None,
    codec: str | None = None,
    crf: int = DEFAULT_CRF,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    protected: Sequence[str | os.PathLike | None] = (),
) -> VideoResult:
    """Restore the original faces of an anonymized clip with the right key.

    Every record is checked first (key, MACs, chain), so a wrong key or a tampered clip
    is refused before any frame is decoded. ``meta`` reads the records from a sidecar
    (JSON Lines) instead of the clip. The output's codec follows its extension (``.mkv``:
    lossless FFV1; ``.mp4``: H.264, re-encoded). The clip's sealed tags are restored.

    Raises:
        WrongKeyError: the key is not the clip's.
        MetadataError: missing, corrupt or modified records.
        InputError: the clip does not match its records (other frame count or size).
    """
    from . import api

    require_av()
    src, dst = Path(src), Path(dst)
    codec = output_codec(dst, codec)
    _check_outputs([dst], [src, meta, *protected], force)
    t0 = time.perf_counter()
    first = Records(_raw_records(src, meta), key)
    for _ in first:  # every record checked before any frame is decoded
        pass
    ck, clip = first.key, first.clip["clip"]
    metadata = container.open_metadata(ck.secret, first.clip.get("original_metadata"))
    result = VideoResult(dst, codec=codec, tracks=clip["tracks"])
    if clip["codec"] in LOSSY:
        result.notes.append(
            f"the clip was encoded with {clip['codec'].upper()} (lossy) when anonymized: its "
            "faces were restored bit-exactly from their sealed originals, and the rest of "
            "each frame is the re-encoded one")
    if codec in LOSSY:
        result.notes.append(f"written with {codec.upper()} (lossy): the recovered faces are "
                            "re-encoded, no longer exact; write a .mkv for a lossless clip")
    inp = _Input(src)
    records = iter(Records(_raw_records(src, meta), ck))
    upcoming = next(records)
    pending: list[tuple[_Frame, dict | None]] = []
    writer: list[_Writer] = []
    notes: dict[str, list] = {}

    def flush() -> None:
        todo = [(f, r) for f, r in pending if r is not None]
        back = {}
        if todo:
            loaded = [images.LoadedImage(f.pixels, grayscale=images.is_gray(f.pixels))
                      for f, _ in todo]
            outs = api.recover_many(loaded, ck, metas=[r for _, r in todo], model=model,
                                    device=device, batch_size=batch_size, method=method)
            for (f, _), out in zip(todo, outs, strict=True):
                if isinstance(out, FaceveilError):
                    raise type(out)(f"frame {f.index}: {out}")
                back[f.index] = out.pixels
                for n in out.notes:
                    if "re-encoded since anonymization" not in n:  # said once, above
                        _tally(notes, n)
                result.faces += len(out.faces)
        for f, _ in pending:
            writer[0].frame(f, back.get(f.index, f.pixels))
            result.frames += 1
            if progress:
                progress(result.frames, clip["frames"])
        pending.clear()

    try:
        with _Staged([dst]) as staged:
            early: list = []

            def on_packet(packet) -> None:
                if writer:
                    writer[0].packet(packet)
                else:
                    early.append(packet)

            for frame in inp.frames(on_packet):
                if not writer:
                    h, w = frame.pixels.shape[:2]
                    if (w, h) != (clip["width"], clip["height"]):
                        raise InputError(f"the clip's frames are {w}x{h} but its records "
                                         f"describe {clip['width']}x{clip['height']}: not "
                                         "the clip these records belong to")
                    writer.append(_Writer(staged.temps[0], dst.suffix.lower(), codec, crf,
                                          inp, (h, w), records=False, metadata=metadata))
                    for p in early:
                        writer[0].packet(p)
                record = None
                if upcoming.get("format") != CLIP_FORMAT and \
                        upcoming["video"]["frame"] == frame.index:
                    record = upcoming
                    upcoming = next(records)
                pending.append((frame, record))
                if sum(r is not None for _, r in pending) >= batch_size or \
                        len(pending) >= 2 * batch_size:
                    flush()
            flush()
            if upcoming.get("format") != CLIP_FORMAT or result.frames != clip["frames"]:
                raise InputError(f"the clip has {result.frames} frame(s) but its records "
                                 f"describe {clip['frames']}: it was cut or re-encoded "
                                 "since anonymization")
            for _ in records:  # the end of the checked records: nothing may follow
                pass
            writer[0].close()
            staged.commit()
    finally:
        inp.close()
    result.notes[:0] = inp.notes
    result.notes += _tallied(notes)
    result.seconds = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------
# Detect and inspect
# ---------------------------------------------------------------------------


def detect_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    model: Backbone | str | None = None,
    device: str | None = None,
    track_gap: int = DEFAULT_TRACK_GAP,
    codec: str | None = None,
    crf: int = DEFAULT_CRF,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    detector: str | None = None,
    threshold: float | None = None,
    min_face: int | None = None,
    parser=None,
) -> dict:
    """What :func:`anonymize_video` would replace: writes a preview clip (every face to
    anonymize tinted and boxed with its track number, filled-in faces marked ``+``;
    faces left out red, low-score candidates dashed yellow) and returns the tracks as a
    JSON-ready dict."""
    from . import api, faces

    require_av()
    src, dst = Path(src), Path(dst)
    codec = output_codec(dst, codec)
    _check_outputs([dst], [src], force)
    backbone = api.get_model(model, device)
    inp = _Input(src)
    tracker = Tracker(track_gap)
    tracks: dict[int, Track] = {}
    window: deque[tuple[_Frame, list[dict]]] = deque()
    writer: list[_Writer] = []
    early: list = []
    count = {"frames": 0, "candidates": 0, "left_out": 0}

    def final(frame: _Frame, skipped: list[dict]) -> None:
        shown = []
        for t, r, kind in tracker.faces_at(frame.index):
            t.boxes.append([frame.index, *(int(v) for v in r.box), kind])
            tracks[t.id] = t
            shown.append(faces.FaceRegion(r.box, r.transform, r.crop_size, r.mask, None,
                                          r.source, r.score,
                                          f"{t.id}" if kind == "detected" else f"{t.id}+"))
        tracker.forget(frame.index)
        writer[0].frame(frame, faces.draw_preview(frame.pixels, shown, skipped))
        count["frames"] += 1
        count["candidates"] += sum(s.get("kind") == "low-score" for s in skipped)
        count["left_out"] += sum(s.get("kind") != "low-score" for s in skipped)
        if progress:
            progress(count["frames"], inp.frames_hint)

    def on_packet(packet) -> None:
        (writer[0].packet if writer else early.append)(packet)

    try:
        with _Staged([dst]) as staged:
            for frame in inp.frames(on_packet):
                if not writer:
                    writer.append(_Writer(staged.temps[0], dst.suffix.lower(), codec, crf, inp,
                                          frame.pixels.shape[:2], records=False))
                    for p in early:
                        writer[0].packet(p)
                regions, skipped = api.find_regions(frame.pixels, backbone,
                                                    detector=detector, threshold=threshold,
                                                    min_face=min_face, parser=parser)
                tracker.update(frame.index, regions, frame.pixels)
                window.append((frame, skipped))
                while window and window[0][0].index <= frame.index - track_gap:
                    final(*window.popleft())
            while window:
                final(*window.popleft())
            writer[0].close()
            staged.commit()
    finally:
        inp.close()
    listed = [{"track": t.id, "first": t.boxes[0][0], "last": t.boxes[-1][0],
               "detected": sum(b[-1] == "detected" for b in t.boxes),
               "filled": sum(b[-1] != "detected" for b in t.boxes), "boxes": t.boxes}
              for t in sorted(tracks.values(), key=lambda t: t.id)]
    return {"video": {"frames": count["frames"], "rate": float(inp.rate),
                      "rotation": 90 * inp.turns},
            "model": backbone.model_id, "track_gap": track_gap,
            "faces": sum(len(t["boxes"]) for t in listed), "tracks": listed,
            "left_out": count["left_out"], "candidates": count["candidates"],
            "notes": list(inp.notes)}


def inspect_video(src: str | os.PathLike, meta: str | os.PathLike | None = None,
                  export: str | os.PathLike | None = None, force: bool = False) -> dict:
    """The public part of a clip's records, without the key: the clip record and, per
    frame with faces, its number, time and the boxes and nonces (one nonce per track)
    of its faces. Checks what can be checked without the key (digests, order, chain).
    ``export`` also writes every record to a JSON Lines file for ``recover --meta``."""
    src = Path(src)
    if export is not None:
        _check_outputs([Path(export)], [src, meta], force)
    frames, clip = [], None
    with _Staged([Path(export)] if export is not None else []) as staged:
        out = open(staged.temps[0], "wb") if export is not None else None  # noqa: SIM115
        try:
            for record in Records(_raw_records(src, meta), None):
                if out is not None:
                    out.write(_record_bytes(record) + b"\n")
                if record.get("format") == CLIP_FORMAT:
                    clip = record
                    continue
                frames.append({"frame": record["video"]["frame"], "pts": record["video"]["pts"],
                               "faces": [{"box": f["box"], "nonce": f["nonce"]}
                                         for f in record["faces"]]})
        finally:
            if out is not None:
                out.close()
        if export is not None:
            staged.commit()
    return {"clip": clip, "frames": frames}
