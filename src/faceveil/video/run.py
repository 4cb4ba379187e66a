"""Clips through the pipeline: anonymize, recover, detect and inspect.

Anonymize, as data: clip -> frames decoded one at a time (:mod:`.io`) -> faces found in
each (:func:`faceveil.pipeline.anonymize.find_regions`) -> linked into tracks
(:mod:`.tracking`) -> missed frames filled in -> each track segment's face made once
(:mod:`.segments`) and pasted into its frames, every face's original sealed
(:func:`faceveil.pipeline.anonymize.anonymize_jobs`) -> each frame re-encoded with its
own timestamp, muxed with the untouched audio and subtitle packets and its record
(:mod:`faceveil.format.clip`). Recover runs the same arrows backwards.

**Memory.** Frames are decoded, held for ``track_gap`` frames (a detection that late
can still fill them in) plus one model batch, written and dropped: memory depends on
the frame size, ``track_gap`` and ``batch_size``, never on the clip's length.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import batch, faces, images, media
from ..diffusion.backends import backend_for, get_model
from ..errors import FaceveilError, InputError, NoFaceError
from ..format import auth, clip, label, photo, wrapping
from ..keys import KeySource, SecretKey
from ..options import DEFAULTS, Options
from ..pipeline import anonymize as anon
from ..pipeline import generate as gen
from ..pipeline import recover as rec
from . import io
from .io import LOSSY
from .segments import Segment
from .tracking import Tracker

if TYPE_CHECKING:
    from ..diffusion.models import Backbone

_CANDIDATES_KEPT = 200  # low-score candidates listed in a report, per clip

FrameProgress = Callable[[int, int | None], None]
"""Called after each frame with (frames done, frames expected or None)."""


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


class _Tally:
    """Per-frame notes counted: notes that differ only in their numbers count as one."""

    def __init__(self) -> None:
        self.seen: dict[str, list] = {}

    def add(self, note: str) -> None:
        entry = self.seen.setdefault(re.sub(r"\d[\d.e-]*", "#", note), [note, 0])
        entry[1] += 1

    def notes(self) -> list[str]:
        return [n + (f" (in {c} frames)" if c > 1 else "") for n, c in self.seen.values()]


def _check_outputs(paths: Sequence[Path], inputs: Sequence, force: bool) -> None:
    for p in paths:
        media.check_output(p, inputs, force)


# ---------------------------------------------------------------------------
# Anonymize
# ---------------------------------------------------------------------------


def anonymize_video(src: str | os.PathLike, dst: str | os.PathLike, key: KeySource, *,
                    options: Options | None = None, model: Backbone | str | None = None,
                    progress: FrameProgress | None = None,
                    protected: Sequence[str | os.PathLike | None] = ()) -> VideoResult:
    """Anonymize every face of a clip, one synthetic identity per track, reversibly.

    Writes ``dst`` (``.mkv``: FFV1, lossless; ``.mp4`` or codec "h264": H.264)
    atomically, and with ``options.output.sidecar`` its records beside it. By default
    the model makes one face per track segment, pasted into each of its frames, and
    every face's original pixels are sealed in its frame's record; ``per_frame`` runs
    the model on every frame's faces instead (recoverable by diffusion from ``.mkv``,
    with a face that changes from frame to frame). ``protected``: more paths no output
    may overwrite. Deniable clips are refused: a clip's records must authenticate.

    Raises:
        InputError: unreadable or unsupported video, bad options, existing output.
        NoFaceError: no face in the whole clip and ``no_face="error"``.
    """
    options = options or DEFAULTS
    io.require_av()
    if options.protection.deniable:
        raise InputError("--deniable is not available for video: a clip's records must be "
                         "authenticated (they tie every frame's faces to their frame and "
                         "track); anonymize without --deniable")
    src, dst = Path(src), Path(dst)
    out = options.output
    codec = io.output_codec(dst, options.video.codec)
    # One face per track segment is pasted into frames it was not made from, and H.264
    # changes every pixel: only the sealed originals bring those frames back.
    if codec in LOSSY or not options.video.per_frame:
        if options.protection.lossless is False:
            raise InputError("--no-lossless needs --per-frame and a .mkv output: a face made "
                             "once per track segment, or any face in an H.264 clip, comes "
                             "back only from its sealed original")
        options = options.replace(lossless=True)
    outputs = [dst, media.sidecar_path(dst)] if out.sidecar else [dst]
    _check_outputs(outputs, [src, *protected], out.force)
    backbone = get_model(model, options.runtime.device, backend=backend_for(options))
    params = key.new_params(options.protection.kdf)
    secret, params = wrapping.new_file_key(key, params)  # one file key per clip
    t0 = time.perf_counter()
    inp = io.Input(src)
    if inp.records is not None:
        inp.close()
        raise InputError(f"{str(src)!r} is itself an anonymized faceveil clip (it has a "
                         "record stream); recover it first, or its earlier faces would be "
                         "lost")
    result = VideoResult(dst, codec=codec)
    try:
        with media.Staged(outputs, replace=out.force) as staged:
            run = _AnonymizeRun(inp, staged, result, codec, secret, params, backbone, options,
                                progress)
            for frame in inp.frames(run.writer.packet):
                regions, skipped = anon.find_regions(frame.pixels, backbone, options)
                run.add(frame, regions, skipped)
            run.finish()
            result.notes[:0] = inp.notes
            result.seconds = time.perf_counter() - t0
            if result.faces:
                staged.commit()
                return result
            error = NoFaceError(f"no face found in the {result.frames} frame(s) of "
                                f"{str(src)!r}")
            result.notes += batch.no_face(
                out.no_face, error, lambda: io.copy_without_records(staged.temps[0], dst,
                                                                   replace=out.force),
                copied="copied without faceveil records")
            if out.no_face != "copy":
                result.output = None
            return result
    finally:
        inp.close()


class _AnonymizeRun:
    """The state of one clip's anonymization: tracker, frames waiting, writer."""

    def __init__(self, inp: io.Input, staged: media.Staged, result: VideoResult, codec: str,
                 secret: SecretKey, params: dict, backbone: Backbone, options: Options,
                 progress: FrameProgress | None) -> None:
        self.inp, self.staged, self.result, self.codec = inp, staged, result, codec
        self.secret, self.params, self.backbone, self.options = secret, params, backbone, options
        self.gap = options.video.track_gap
        self.tracker = Tracker(self.gap)
        self.window: deque[io.Frame] = deque()
        self.pending: list[tuple[io.Frame, list]] = []
        suffix = staged.paths[0].suffix.lower()
        tags = label.clip_tags(backbone.reference, io.MUXERS[suffix]) \
            if options.output.label else None
        self.writer = io.LazyWriter(staged.temps[0], suffix, codec, options.video.crf, inp,
                                    records=True, tags=tags)
        self.chain = clip.chain_start(params["salt"])
        self.records = 0
        self.last_frame: io.Frame | None = None
        self.sidecar = open(staged.temps[1], "wb") if options.output.sidecar else None  # noqa: SIM115
        self.progress = progress
        self.cap = max(2 * options.runtime.batch_size, 8)  # frames waiting for the model
        self.tally = _Tally()

    def add(self, frame: io.Frame, regions, skipped) -> None:
        self.writer.open(frame.pixels.shape[:2])
        for s in skipped:
            self.result.left_out += 1
            if len(self.result.candidates) < _CANDIDATES_KEPT:
                self.result.candidates.append({"frame": frame.index, **s})
        self.tracker.update(frame.index, regions, frame.pixels)
        self.window.append(frame)
        while self.window and self.window[0].index <= frame.index - self.gap:
            self._final(self.window.popleft())

    def _final(self, frame: io.Frame) -> None:
        found = self.tracker.faces_at(frame.index)
        self.tracker.forget(frame.index)
        self.pending.append((frame, found))
        buffered = len(self.window) + len(self.pending)
        self.result.max_buffered = max(self.result.max_buffered, buffered)
        if sum(len(f) for _, f in self.pending) >= self.options.runtime.batch_size \
                or len(self.pending) >= self.cap:
            self._flush()

    def _write_record(self, data: bytes, pts: int, duration: int) -> None:
        self.writer.record(data, pts, duration)
        if self.sidecar:
            self.sidecar.write(data + b"\n")

    def _flush(self) -> None:
        todo = [(frame, found) for frame, found in self.pending if found]
        new = {}
        if todo:
            crops = [None] * len(todo) if self.options.video.per_frame else \
                self._segment_faces(todo)
            seq = [anon.SequenceFrame(frame.pixels, [r for _, r, _ in found],
                                      [t.nonce for t, _, _ in found],
                                      {"frame": frame.index, "pts": frame.pts}, crops=c)
                   for (frame, found), c in zip(todo, crops, strict=True)]
            jobs = anon.sequence_jobs(seq, self.secret, self.params, self.backbone,
                                      self.options)
            results = anon.anonymize_jobs(jobs, self.backbone, self.options)
            new = {frame.index: r for (frame, _), r in zip(todo, results, strict=True)}
        for frame, found in self.pending:
            r = new.get(frame.index)
            self.writer.frame(frame, frame.pixels if r is None else r.pixels)
            if r is not None:
                self._write_record(auth.dumps(r.record).encode(), frame.pts, frame.duration)
                self.chain = clip.chain_next(self.chain, r.record)
                self.records += 1
                self.result.faces += len(found)
                self.result.filled += sum(kind != "detected" for _, _, kind in found)
                for note in r.notes:
                    self.tally.add(note)
            self.result.frames += 1
            self.last_frame = frame
            if self.progress:
                self.progress(self.result.frames, self.inp.frames_hint)
        self.pending = []

    def _segment_faces(self, todo: list) -> list[list[np.ndarray]]:
        """Give each face of ``todo`` its track's current segment (a new one where the
        face no longer fits the last: :class:`Segment`) and its blend mask there; make
        the new segments' faces in one batch; return each frame's crops."""
        keyframes: list[tuple[Segment, np.ndarray, faces.FaceRegion, bytes]] = []
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
            made = gen.generate_faces([p for _, p, _, _ in keyframes],
                                      [r for _, _, r, _ in keyframes],
                                      [n for _, _, _, n in keyframes], self.secret,
                                      self.backbone, self.options.sampler, self.options.runtime)
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
        summary = {"frames": self.result.frames, "records": self.records,
                   "faces": self.result.faces, "tracks": self.tracker.count,
                   "width": int(w), "height": int(h), "rotation": 90 * self.inp.turns,
                   "codec": self.codec,
                   "time_base": [self.inp.time_base.numerator, self.inp.time_base.denominator]}
        key = photo.key_info(self.params, self.secret, deniable=False)
        record = clip.clip_record(key, self.secret, summary, self.chain, self.inp.metadata)
        self._write_record(auth.dumps(record).encode(), last.pts + last.duration,
                           last.duration)
        self.writer.close()
        self.result.notes += self.tally.notes()
        if self.sidecar:
            self.sidecar.close()
        if self.inp.metadata:
            self.result.notes.append("the clip's own tags (" + ", ".join(
                sorted(k.split(":", 1)[1] for k in self.inp.metadata))
                + ") were sealed under the key, not published")


# ---------------------------------------------------------------------------
# Recover
# ---------------------------------------------------------------------------


def recover_video(src: str | os.PathLike, dst: str | os.PathLike, key: KeySource, *,
                  meta: str | os.PathLike | None = None, options: Options | None = None,
                  model: Backbone | str | None = None, method: str | None = None,
                  progress: FrameProgress | None = None,
                  protected: Sequence[str | os.PathLike | None] = ()) -> VideoResult:
    """Restore the original faces of an anonymized clip with the right key.

    Every record is checked first (the clip record's key check and MAC, the chain over
    all frame records), so a wrong key or a tampered clip is refused before any frame is
    decoded; each frame record's own MAC is checked once, when it is opened. ``meta``
    reads the records from a sidecar (JSON Lines) instead of the clip. The output's codec
    follows its extension (``.mkv``: lossless FFV1; ``.mp4``: H.264, re-encoded). The
    clip's sealed tags are restored.

    Raises:
        WrongKeyError: the key is not the clip's.
        MetadataError: missing, corrupt or modified records.
        InputError: the clip does not match its records (other frame count or size).
    """
    options = options or DEFAULTS
    io.require_av()
    src, dst = Path(src), Path(dst)
    codec = io.output_codec(dst, options.video.codec)
    _check_outputs([dst], [src, meta, *protected], options.output.force)
    t0 = time.perf_counter()
    scanned = clip.scan(io.raw_records(src, meta))  # all before any frame is decoded
    ck = clip.verify_clip(scanned.clip, key)
    summary = scanned.clip.clip
    metadata = auth.open_metadata(ck.secret, scanned.clip.original_metadata)
    result = VideoResult(dst, codec=codec, tracks=summary["tracks"])
    if summary["codec"] in LOSSY:
        result.notes.append(
            f"the clip was encoded with {summary['codec'].upper()} (lossy) when anonymized: "
            "its faces were restored bit-exactly from their sealed originals, and the rest of "
            "each frame is the re-encoded one")
    if codec in LOSSY:
        result.notes.append(f"written with {codec.upper()} (lossy): the recovered faces are "
                            "re-encoded, no longer exact; write a .mkv for a lossless clip")
    inp = io.Input(src)
    records = iter(clip.open_frames(io.raw_records(src, meta), ck))
    upcoming = next(records)
    pending: list[tuple[io.Frame, object]] = []
    tally = _Tally()
    batch = options.runtime.batch_size

    def flush(writer: io.LazyWriter) -> None:
        todo = [(f, opened) for f, opened in pending if opened is not None]
        back = {}
        if todo:
            planned = [rec.plan(images.LoadedImage(f.pixels, grayscale=images.is_gray(f.pixels)),
                                opened, method) for f, opened in todo]
            outs = rec.recover_planned(planned, model=model, runtime=options.runtime)
            for (f, _), out in zip(todo, outs, strict=True):
                if isinstance(out, FaceveilError):
                    raise type(out)(f"frame {f.index}: {out}")
                back[f.index] = out.pixels
                for n in out.notes:
                    if "re-encoded since anonymization" not in n:  # said once, above
                        tally.add(n)
                result.faces += len(out.faces)
        for f, _ in pending:
            writer.frame(f, back.get(f.index, f.pixels))
            result.frames += 1
            if progress:
                progress(result.frames, summary["frames"])
        pending.clear()

    try:
        with media.Staged([dst], replace=options.output.force) as staged:
            writer = io.LazyWriter(staged.temps[0], dst.suffix.lower(), codec,
                                   options.video.crf, inp, records=False, metadata=metadata)
            for frame in inp.frames(writer.packet):
                if writer.writer is None:
                    h, w = frame.pixels.shape[:2]
                    if (w, h) != (summary["width"], summary["height"]):
                        raise InputError(f"the clip's frames are {w}x{h} but its records "
                                         f"describe {summary['width']}x{summary['height']}: "
                                         "not the clip these records belong to")
                    writer.open((h, w))
                opened = None
                if not isinstance(upcoming, clip.ClipRecord) and \
                        upcoming.record.video["frame"] == frame.index:
                    opened, upcoming = upcoming, next(records)
                pending.append((frame, opened))
                if sum(o is not None for _, o in pending) >= batch or len(pending) >= 2 * batch:
                    flush(writer)
            flush(writer)
            if not isinstance(upcoming, clip.ClipRecord) or result.frames != summary["frames"]:
                raise InputError(f"the clip has {result.frames} frame(s) but its records "
                                 f"describe {summary['frames']}: it was cut or re-encoded "
                                 "since anonymization")
            for _ in records:  # the end of the checked records: nothing may follow
                pass
            writer.close()
            staged.commit()
    finally:
        inp.close()
    result.notes[:0] = inp.notes
    result.notes += tally.notes()
    result.seconds = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------
# Detect and inspect
# ---------------------------------------------------------------------------


def detect_video(src: str | os.PathLike, dst: str | os.PathLike, *,
                 options: Options | None = None, model: Backbone | str | None = None,
                 progress: FrameProgress | None = None) -> dict:
    """What :func:`anonymize_video` would replace: writes a preview clip (every face to
    anonymize tinted and boxed with its track number, filled-in faces marked ``+``;
    faces left out red, low-score candidates dashed yellow) and returns the tracks as a
    JSON-ready dict."""
    options = options or DEFAULTS
    io.require_av()
    src, dst = Path(src), Path(dst)
    codec = io.output_codec(dst, options.video.codec)
    _check_outputs([dst], [src], options.output.force)
    backbone = get_model(model, options.runtime.device, backend="auto")  # its framing alone
    gap = options.video.track_gap
    inp = io.Input(src)
    tracker = Tracker(gap)
    tracks: dict = {}
    window: deque[tuple[io.Frame, list[dict]]] = deque()
    count = {"frames": 0, "candidates": 0, "left_out": 0}

    def final(writer: io.LazyWriter, frame: io.Frame, skipped: list[dict]) -> None:
        shown = []
        for t, r, kind in tracker.faces_at(frame.index):
            t.boxes.append([frame.index, *(int(v) for v in r.box), kind])
            tracks[t.id] = t
            shown.append(faces.FaceRegion(r.box, r.transform, r.crop_size, r.mask, None,
                                          r.source, r.score,
                                          f"{t.id}" if kind == "detected" else f"{t.id}+"))
        tracker.forget(frame.index)
        writer.frame(frame, faces.draw_preview(frame.pixels, shown, skipped))
        count["frames"] += 1
        count["candidates"] += sum(s.get("kind") == "low-score" for s in skipped)
        count["left_out"] += sum(s.get("kind") != "low-score" for s in skipped)
        if progress:
            progress(count["frames"], inp.frames_hint)

    try:
        with media.Staged([dst], replace=options.output.force) as staged:
            writer = io.LazyWriter(staged.temps[0], dst.suffix.lower(), codec,
                                   options.video.crf, inp, records=False)
            for frame in inp.frames(writer.packet):
                regions, skipped = anon.find_regions(frame.pixels, backbone, options)
                tracker.update(frame.index, regions, frame.pixels)
                window.append((frame, skipped))
                while window and window[0][0].index <= frame.index - gap:
                    final(writer, *window.popleft())
            while window:
                final(writer, *window.popleft())
            writer.close()
            staged.commit()
    finally:
        inp.close()
    listed = [{"track": t.id, "first": t.boxes[0][0], "last": t.boxes[-1][0],
               "detected": sum(b[-1] == "detected" for b in t.boxes),
               "filled": sum(b[-1] != "detected" for b in t.boxes), "boxes": t.boxes}
              for t in sorted(tracks.values(), key=lambda t: t.id)]
    return {"video": {"frames": count["frames"], "rate": float(inp.rate),
                      "rotation": 90 * inp.turns},
            "model": backbone.model_id, "track_gap": gap,
            "faces": sum(len(t["boxes"]) for t in listed), "tracks": listed,
            "left_out": count["left_out"], "candidates": count["candidates"],
            "notes": list(inp.notes)}
