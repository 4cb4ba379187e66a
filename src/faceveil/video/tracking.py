"""Tracks: the faces of a clip linked from frame to frame, one nonce per person.

Faces are linked by box overlap (IoU >= 0.3 with the track's box extrapolated from its
last two detections), then, for what overlap left unmatched, by dlib's face embedding
(distance <= 0.6, dlib's same-person threshold). A track lives on while it is missed for
at most ``gap`` frames in a row; in those frames its face is still anonymized, with the
crop transform interpolated between the detections on either side and their masks
joined and grown by 4% of the crop side. A track's face is also anonymized for ``gap``
frames after its last detection and before its first (the transform carried, the mask
grown), because a detector that loses a face, or finds it late, usually does so for a
few frames while it is still there. A person who leaves and comes back after more than
``gap`` frames without a detection, whom the embedding does not link back, starts a new
track: one clip can then show them with two synthetic identities.

Tracks never jump: a detection links to a track (by overlap or by embedding) only where
its box's centre lies within one box width per frame elapsed of the track's last
detection, and its width within a factor 2 per frame of it. A detection far from every
track starts a track of its own, so a false positive (a railing, a pattern on a dress) is
anonymized in its own frames only, never joined to a face elsewhere with faces painted
over the frames between. No detection is ever dropped for this.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .. import faces
from ..errors import InputError

if TYPE_CHECKING:
    from ..faces import FaceRegion
    from .segments import Segment

_IOU_LINK = 0.3  # box overlap that links a detection to a track
_DLIB_SAME = 0.6  # dlib embedding distance under which two faces are the same person
_JUMP = 1.0  # box widths a face may move per frame elapsed and still be the same track
_GROW = 2.0  # factor a face's width may change by per frame elapsed


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
    last_box: tuple | None = None  # the box of its latest detection (frame ``last``)



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
            from .. import identity

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

    def _near(self, t: Track, index: int, box) -> bool:
        """Whether a detection at ``box`` in frame ``index`` can be track ``t``'s face:
        its centre within :data:`_JUMP` box widths per frame elapsed of the track's last
        detection, its width within a factor :data:`_GROW` per frame."""
        return t.last_box is None or spatially_consistent(t.last_box, box, index - t.last)

    def update(self, index: int, regions: Sequence[FaceRegion], pixels: np.ndarray) -> None:
        """Assign frame ``index``'s detected faces to tracks (new tracks as needed)."""
        live = [t for t in self.tracks if index - t.last - 1 <= self.gap and t.last < index]
        pairs = sorted(((faces.overlap(self._predict(t, index), r.box)[0], ti, ri)
                        for ti, t in enumerate(live) for ri, r in enumerate(regions)
                        if self._near(t, index, r.box)),
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
                          for ri in rest if embeddings[ri] is not None for ti in lost
                          if self._near(live[ti], index, regions[ri].box))
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
            t.last, t.last_box = index, tuple(r.box)
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


def spatially_consistent(last, box, frames: int) -> bool:
    """Whether a face whose box was ``last`` (x, y, w, h) can be at ``box`` ``frames``
    frames later: centres at most :data:`_JUMP` widths (the larger of the two) apart per
    frame, widths within a factor :data:`_GROW` per frame."""
    (x0, y0, w0, h0), (x1, y1, w1, h1) = (np.asarray(b, float) for b in (last, box))
    frames = max(1, frames)
    shift = np.hypot(x1 + w1 / 2 - x0 - w0 / 2, y1 + h1 / 2 - y0 - h0 / 2)
    ratio = max(w0, w1) / max(1.0, min(w0, w1))
    return bool(shift <= _JUMP * max(w0, w1) * frames and ratio <= _GROW ** frames)


_FILL_GROW = 0.04  # a filled-in face's mask grows by this fraction of the crop side


def _filled_mask(*masks: np.ndarray) -> np.ndarray:
    """The mask of a face filled in where the detector missed it: the union of the masks
    of the detections it comes from, grown by :data:`_FILL_GROW` of the crop side (its
    place is a guess: the margin keeps the face's edge from showing), then feathered."""
    hard = np.logical_or.reduce([np.asarray(m) > 0 for m in masks]).astype(np.float32)
    hard = faces.dilate(hard, max(1, round(_FILL_GROW * hard.shape[0]))) > 0
    return faces.soften(hard, 0.06 * hard.shape[0])


def _between(a: FaceRegion, b: FaceRegion, w: float) -> FaceRegion:
    """A face between two detections: transform and box interpolated linearly, the mask
    (in crop space, so aligned) both detections' masks grown (:func:`_filled_mask`)."""
    ta, tb = np.asarray(a.transform, float), np.asarray(b.transform, float)
    box = tuple(int(round((1 - w) * p + w * q)) for p, q in zip(a.box, b.box, strict=True))
    return faces.FaceRegion(box=box, transform=(1 - w) * ta + w * tb, crop_size=a.crop_size,
                      mask=_filled_mask(a.mask, b.mask), landmarks=None,
                      source="interpolated", score=None)


def _carried(r: FaceRegion) -> FaceRegion:
    return faces.FaceRegion(box=tuple(r.box), transform=np.asarray(r.transform, float),
                      crop_size=r.crop_size, mask=_filled_mask(r.mask), landmarks=None,
                      source="carried", score=None)

