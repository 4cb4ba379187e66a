"""Drawing what would be anonymized: masks, boxes, numbers, skipped faces, candidates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .regions import FaceRegion
from .warp import footprint

_COLOURS = [(0, 200, 255), (255, 160, 0), (80, 220, 80), (255, 80, 200), (160, 120, 255)]


_CANDIDATE_COLOUR = (255, 255, 0)


def _dashed_rectangle(draw, box: Sequence[int], colour, width: int) -> None:
    x, y, w, h = box
    dash = max(3, 3 * width)
    corners = [(x, y), (x + w - 1, y), (x + w - 1, y + h - 1), (x, y + h - 1), (x, y)]
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
        length = max(abs(x1 - x0), abs(y1 - y0))
        for s in range(0, length, 2 * dash):
            e = min(s + dash, length)
            draw.line([(x0 + (x1 - x0) * s / length, y0 + (y1 - y0) * s / length),
                       (x0 + (x1 - x0) * e / length, y0 + (y1 - y0) * e / length)],
                      fill=colour, width=width)


def draw_preview(
    image: np.ndarray, regions: Sequence[FaceRegion], skipped: Sequence[dict]
) -> np.ndarray:
    """What would be anonymized: each face's mask tinted, its box and index number; the
    skipped faces' boxes in red with their reason; low-score candidates (what may be a
    missed face) in dashed yellow with "?" and their score. Returns a new ``HxWx3`` uint8
    image."""
    from PIL import Image, ImageDraw

    out = np.asarray(image, dtype=np.float64).copy()
    for k, r in enumerate(regions):
        colour = np.array(_COLOURS[k % len(_COLOURS)], dtype=np.float64)
        a, (rows, cols) = footprint(r.mask, r.transform, out.shape)
        if a.size:
            a = 0.45 * a[:, :, None]
            out[rows, cols] = (1 - a) * out[rows, cols] + a * colour
    pil = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    width = max(1, round(max(pil.size) / 400))
    for k, r in enumerate(regions):
        colour = _COLOURS[k % len(_COLOURS)]
        x, y, w, h = r.box
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=width)
        label = str(r.index if r.index is not None else k)
        draw.text((x + 2, max(0, y - 12)), label, fill=colour)
    for s in skipped:
        x, y, w, h = s["box"]
        if s.get("kind") == "low-score":
            _dashed_rectangle(draw, s["box"], _CANDIDATE_COLOUR, width)
            draw.text((x + 2, max(0, y - 12)), f"?{s['score']:.2f}", fill=_CANDIDATE_COLOUR)
            continue
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 0, 0), width=width)
        draw.text((x + 2, max(0, y - 12)), f"{s.get('index', '')} skipped: {s['reason']}",
                  fill=(255, 0, 0))
    return np.asarray(pil)
