"""Segments: one generated face per stretch of a track.

A diffusion model does not give the same face for two frames of one person, even with
the same key: exact DDIM inversion turns the small changes between two frames (a few
grey levels of resampling and compression) into noise 50 to 95% different, and the keyed
mixing turns that into another face (``benchmarks/video.py``, ``--per-frame``:
consecutive anonymized faces 0.52 to 0.56 apart for dlib, flicker 4 to 9 times the
original's). So a track's face is made once, from the first frame of a segment (the
keyframe), and pasted into every frame of the segment with that frame's own crop
transform (:class:`Segment`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import faces

if TYPE_CHECKING:
    from ..faces import FaceRegion

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
            mask = faces.dilate(mask, r)
        made = faces.dilate((mask > 0).astype(np.float32), r + 2 * _read_reach(region)) > 0
        return Segment(frame, mask, made, _rigid(region))

    def fits(self, region: FaceRegion) -> bool:
        blend = ((self.mask > 0) | (np.asarray(region.mask) > 0)).astype(np.float32)
        read = faces.dilate(blend, 2 * _read_reach(region)) > 0  # the alpha's reach, the crop's
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
        return dataclasses.replace(region, mask=np.maximum(self.mask, region.mask))

    def keyframe(self, region: FaceRegion) -> FaceRegion:
        """The keyframe's region as the model sees it: its mask is ``made``."""
        return dataclasses.replace(region, mask=self.made.astype(np.float32))


def _read_reach(region: FaceRegion) -> int:
    """How far (crop pixels) :func:`faceveil.faces.paste` reads around a crop position
    for this region's scale (crop pixels per photo pixel)."""
    scale = math.sqrt(abs(np.linalg.det(np.asarray(region.transform, float)[:, :2])))
    return faces.paste_reach(scale)



def _rigid(region: FaceRegion) -> np.ndarray | None:
    if region.landmarks is None or len(region.landmarks) != 68:
        return None
    return faces.apply_transform(np.asarray(region.transform, float),
                           np.asarray(region.landmarks, float)[_RIGID])

