"""Faces in photos: detection, landmarks, alignment, facial masks, warping and drawing.

This package knows nothing of keys, diffusion or files. Its modules, from the bottom up:

- :mod:`.geometry`: similarity transforms, affine maps, boxes and their overlap;
- :mod:`.warp`: extracting a face crop from a photo, warping it back, blending;
- :mod:`.landmarks`: dlib's models (read lazily) and the 68 landmarks;
- :mod:`.align`: a model's crop framing and the similarity that takes a face there;
- :mod:`.centerface`: the CenterFace detector (its ONNX file ships in ``weights/``);
- :mod:`.detectors`: every detector, calibrated to dlib's box convention; candidates;
- :mod:`.masks`: facial masks, feathering, user masks, the one dilation and erosion,
  box filters and local texture;
- :mod:`.parsing`: a BiSeNet face parser for masks (weights supplied by the user);
- :mod:`.occluders`: what lies in front of a face inside its mask, kept as it was;
- :mod:`.regions`: every face to anonymize in a photo, aligned, with its mask;
- :mod:`.preview`: drawing what would be anonymized.

The names below are the package's public API (``from faceveil import faces``).
"""

from .align import Framing, align_transform, framing_box
from .detectors import (
    DEFAULT_DETECTOR,
    DEFAULT_MIN_FACE,
    DETECTORS,
    DetectedFace,
    box_from_points5,
    detect,
    detector_members,
    detector_settings,
    find_detections,
    scored_detections,
)
from .geometry import Box, apply_transform, invert_transform, overlap, similarity_transform
from .landmarks import dlib_mean_shape68, dlib_model, landmarks68, model_path, points5_of
from .masks import (
    box_blur,
    crop_mask,
    crop_transform,
    dilate,
    erode,
    facial_mask,
    fit_crop,
    local_std,
    soften,
    template_mask,
)
from .preview import draw_preview
from .regions import (
    FaceRegion,
    aligned_region,
    box_region,
    face_number,
    find_faces,
    find_regions,
    resolution_notes,
)
from .warp import extract, extract_at, footprint, paste, paste_reach

__all__ = [
    "align_transform", "aligned_region", "apply_transform", "Box", "box_blur", "box_from_points5",
    "box_region", "crop_mask", "crop_transform", "DEFAULT_DETECTOR", "DEFAULT_MIN_FACE", "detect",
    "DetectedFace", "detector_members", "detector_settings", "DETECTORS", "dilate",
    "dlib_mean_shape68", "dlib_model", "draw_preview", "erode", "extract", "extract_at",
    "face_number", "FaceRegion", "facial_mask", "find_detections", "find_faces",
    "find_regions", "fit_crop", "footprint", "Framing", "framing_box", "invert_transform",
    "landmarks68", "local_std", "model_path", "overlap", "paste",
    "paste_reach", "points5_of", "resolution_notes", "scored_detections",
    "similarity_transform", "soften", "template_mask",
]
