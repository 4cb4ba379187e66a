"""Video: reversible anonymization of clips, with one stable synthetic identity per person.

Anonymize, as data: clip -> PyAV decodes frames one at a time (upright, RGB) -> faces
found in each frame (:func:`faceveil.pipeline.anonymize.find_regions`) -> linked into tracks
(:class:`Tracker`) -> frames the detector missed inside a track filled in -> each
track's face made once per segment (:func:`faceveil.pipeline.generate.generate_faces`, keyframes
of several tracks batched) and pasted into its frames, each face's original sealed
(:func:`faceveil.pipeline.anonymize.anonymize_jobs`) -> each frame re-encoded with its own
timestamp, muxed with the untouched audio and subtitle packets and its record.
Recover runs the same arrows backwards (:func:`faceveil.pipeline.recover.recover_planned`).

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
clip can then show them with two synthetic identities. Links never jump: a detection joins a
track only within one box width per frame elapsed of its last detection (see
:mod:`.tracking`).

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

**Modules.** :mod:`.io` (PyAV in and out, the record stream, codecs, timing, streams,
rotation), :mod:`.tracking` (tracks), :mod:`.segments` (one face per segment),
:mod:`.run` (anonymize, recover, detect, inspect); the records themselves are
:mod:`faceveil.format.clip`.
"""

import importlib

_LAZY = {"OUTPUT_CODECS": "io", "read_frames": "io", "require_av": "io",
         "VideoResult": "run", "anonymize_video": "run", "detect_video": "run",
         "recover_video": "run", "inspect_video": "inspect", "Segment": "segments",
         "Track": "tracking", "Tracker": "tracking"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    # The parts load on first use: inspecting a clip needs neither torch nor the model.
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
