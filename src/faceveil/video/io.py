"""Clips in and out with PyAV: decoding frames upright, re-encoding them with their own
timestamps, copying audio and subtitles untouched, and the stream the records live in.

**Codecs.** ``.mkv`` defaults to FFV1 with 8-bit RGB pixels (``bgr0``): bit-exact.
``.mp4`` (or ``--codec h264``) encodes H.264 with libx264 (``yuv420p``, CRF 18 by
default; 4:4:4 for odd sizes): lossy outside the faces.

**Timing, streams, rotation.** Every frame keeps its own timestamp (variable frame rate
too; Matroska stores milliseconds, so timestamps from another container are rounded to
1 ms there). Audio and subtitle packets are copied untouched; data streams (GPS
telemetry, timecodes) and attachments are dropped (not published, not kept). The
container's and the video stream's own tags (creation time, location, device) are split
off (:attr:`Input.metadata`) to be sealed, not published. The display matrix (rotation)
is copied as it is; frames are given upright when the rotation is a multiple of 90
degrees.

**Where records live.** In a stream of their own titled ``faceveil records``, one packet
per frame with faces at that frame's time, and the clip record last: in Matroska a text
subtitle track (S_TEXT/UTF8: the records are JSON; not a default track, so players do
not show it unless asked), in MP4 a timed-metadata (data) track; or in a JSON Lines
sidecar (``--sidecar``, ``inspect --export``).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .. import media
from ..errors import InputError, MetadataError

OUTPUT_CODECS = {".mkv": "ffv1", ".mp4": "h264"}  # default codec per output extension
MUXERS = {".mkv": "matroska", ".mp4": "mp4"}
CODECS = ("ffv1", "h264")
LOSSY = {"h264"}
RECORD_TITLE = "faceveil records"
INSTALL = "pip install 'faceveil[video]'"
# Tags that describe a file's structure (rewritten by the muxer), not its content.
_STRUCTURAL = {"major_brand", "minor_version", "compatible_brands", "encoder", "handler_name",
               "vendor_id", "duration", "language"}


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



@dataclass
class Frame:
    """One decoded frame: its number, timestamp and duration (stream time base) and its
    upright RGB pixels."""

    index: int
    pts: int
    duration: int
    pixels: np.ndarray


def record_title(stream) -> str | None:
    meta = dict(stream.metadata or {})
    for k in ("title", "name", "handler_name"):
        if meta.get(k) == RECORD_TITLE:
            return RECORD_TITLE
    return None


class Input:
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
                             and record_title(s)), None)
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

    def frames(self, on_packet: Callable | None = None) -> Iterator[Frame]:
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
                    yield Frame(index, int(pts), duration, np.ascontiguousarray(pixels))
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



class Writer:
    """An output clip: the re-encoded video, the copied streams and (optionally) the
    record stream, timestamps and display matrix taken from the input."""

    def __init__(self, path: Path, suffix: str, codec: str, crf: int, inp: Input,
                 shape: tuple[int, int], *, records: bool,
                 metadata: dict[str, bytes] | None = None,
                 tags: dict[str, str] | None = None) -> None:
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
            self.out.metadata.update(tags or {})  # the label; set before the header
            self._streams(inp, sw, sh, crf, records, metadata or {})
        except BaseException:
            self.out.close()
            raise
        self.durations: dict[int, int] = {}
        self.last_record = -1

    def _streams(self, inp: Input, width: int, height: int, crf: int, records: bool,
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

    def frame(self, f: Frame, pixels: np.ndarray) -> None:
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


class LazyWriter:
    """An output clip opened at its first frame, when its size is known.

    Packets of the copied streams (audio, subtitles) that the demuxer hands over before
    the first frame are held and muxed once the writer exists; everything after goes
    straight through. ``records``: whether the output gets a record stream;
    ``metadata``: the input's own tags to restore (:attr:`Input.metadata`); ``tags``:
    container tags to write (the label).
    """

    def __init__(self, path: Path, suffix: str, codec: str, crf: int, inp: Input, *,
                 records: bool, metadata: dict[str, bytes] | None = None,
                 tags: dict[str, str] | None = None) -> None:
        self._args = (path, suffix, codec, crf, inp)
        self._records, self._metadata, self._tags = records, metadata, tags
        self.writer: Writer | None = None
        self._early: list = []

    def packet(self, packet) -> None:
        if self.writer is None:
            self._early.append(packet)
        else:
            self.writer.packet(packet)

    def open(self, shape: tuple[int, int]) -> Writer:
        """The writer, made for frames of ``shape`` (upright height, width) on first use."""
        if self.writer is None:
            path, suffix, codec, crf, inp = self._args
            self.writer = Writer(path, suffix, codec, crf, inp, shape, records=self._records,
                                 metadata=self._metadata, tags=self._tags)
            for p in self._early:
                self.writer.packet(p)
            self._early = []
        return self.writer

    def frame(self, f: Frame, pixels: np.ndarray) -> None:
        self.open(pixels.shape[:2]).frame(f, pixels)

    def record(self, data: bytes, pts: int, duration: int) -> None:
        self.writer.record(data, pts, duration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _colorspace(value) -> str:
    """A colour space swscale knows for this codec-context value (bt601 otherwise)."""
    names = {1: "ITU709", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020",
             10: "BT2020", 4: "FCC"}
    return names.get(int(value or 0), "ITU601")



def _file_records(path: Path) -> Iterator[bytes]:
    """The record packets of an anonymized clip, read on their own."""
    av = require_av()
    try:
        c = av.open(str(path), "r")
    except av.error.FFmpegError as e:
        raise InputError(f"{str(path)!r} cannot be read ({_av_message(e)})") from None
    try:
        stream = next((s for s in c.streams if s.type in ("subtitle", "data") and record_title(s)),
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
    with media.reading(path, "metadata file", MetadataError) as f:
        for line in f:
            if line.strip():
                yield line


def raw_records(src: Path, meta: str | os.PathLike | None) -> Iterator[bytes]:
    """A clip's stored records: from its sidecar ``meta`` when given, else its stream."""
    return _sidecar_records(Path(meta)) if meta is not None else _file_records(src)


def read_frames(path: str | os.PathLike) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of a clip as faceveil sees it (upright RGB) with its time in seconds."""
    inp = Input(Path(path))
    try:
        for f in inp.frames():
            yield float(f.pts * inp.time_base), f.pixels
    finally:
        inp.close()


def copy_without_records(src: Path, dst: Path, *, replace: bool) -> None:
    """Copy a clip without its record stream (``--no-face copy``), atomically (an existing
    ``dst`` replaced only with ``replace``)."""
    _remux(src, dst, None, replace=replace)


def replace_records(src: Path, dst: Path, records: list[bytes], *, replace: bool) -> None:
    """Copy a clip with its record packets replaced, in order, by ``records`` (as many as
    it has), every other packet and every timestamp kept (``rewrap``); atomically, and
    ``dst`` may be ``src`` (with ``replace``)."""
    _remux(src, dst, records, replace=replace)


def _remux(src: Path, dst: Path, records: list[bytes] | None, *, replace: bool) -> None:
    """Copy a clip's packets to ``dst`` atomically: without its record stream (None), or
    with its record packets' contents replaced by ``records`` and its container tags (the
    label) kept."""
    av = require_av()
    pending = iter(records or [])
    with media.Staged([dst], replace=replace) as staged:
        with av.open(str(src)) as inp, av.open(str(staged.temps[0]), "w",
                                               format=MUXERS[dst.suffix.lower()]) as out:
            if records is not None:
                out.metadata.update({k: v for k, v in inp.metadata.items()
                                     if k.lower() not in _STRUCTURAL})
            keep = {}
            for s in inp.streams:
                if records is not None or not record_title(s):
                    keep[s.index] = out.add_stream_from_template(s)
                    keep[s.index].disposition = s.disposition
                    if records is not None:  # the record stream is found by its title
                        keep[s.index].metadata.update(s.metadata)
            for packet in inp.demux():
                o = keep.get(packet.stream.index)
                if o is None or not packet.size or packet.dts is None:
                    continue
                if records is not None and record_title(packet.stream):
                    new = av.Packet(next(pending))
                    new.pts, new.dts, new.duration = packet.pts, packet.dts, packet.duration
                    new.time_base = packet.time_base
                    packet = new
                packet.stream = o
                out.mux(packet)
            if next(pending, None) is not None:
                raise MetadataError("the clip holds fewer record packets than its records")
        staged.commit()
