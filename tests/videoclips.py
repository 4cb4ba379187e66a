"""Tiny test clips made at test time: a face photo moving and growing over a background,
with a sine-tone audio track (PyAV writes them; nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parent / "data"


def face_patch() -> Image.Image:
    """obama.jpg cropped around its face (the face is about half the patch wide)."""
    return Image.open(DATA / "obama.jpg").convert("RGB").crop((50, 20, 270, 240))


def background(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    bg = np.stack([60 + 80 * x / width, 90 + 60 * y / height, 140 + 0 * x], axis=2)
    return bg.astype(np.uint8)


def frame_at(i: int, n: int, width: int, height: int) -> np.ndarray:
    """Frame ``i`` of ``n``: the face patch slides right and grows."""
    out = background(width, height)
    t = i / max(n - 1, 1)
    side = int(round(height * (0.55 + 0.2 * t)))
    patch = np.asarray(face_patch().resize((side, side), Image.Resampling.BILINEAR))
    x = int(round(4 + t * (width - side - 8)))
    y = (height - side) // 2
    out[y:y + side, x:x + side] = patch
    return out


def make_clip(path: Path, *, frames: int = 12, fps: int = 10, width: int = 176,
              height: int = 128, audio: bool = True, rotation: int = 0,
              pts: list[int] | None = None, time_base: Fraction | None = None,
              codec: str | None = None, blank: bool = False) -> list[np.ndarray]:
    """Write a clip and return its upright frames as drawn (before encoding).

    ``rotation`` stores the frames turned so that a player, applying the display matrix
    written with them, shows them upright. ``pts``/``time_base`` give every frame its own
    timestamp (variable frame rate). ``blank``: no face at all."""
    import av

    codec = codec or ("libx264" if path.suffix == ".mp4" else "ffv1")
    out = av.open(str(path), "w")
    vs = out.add_stream(codec, rate=fps)
    sw, sh = (height, width) if rotation % 180 else (width, height)
    vs.width, vs.height = sw, sh
    vs.pix_fmt = "yuv420p" if codec == "libx264" else "bgr0"
    if time_base is not None:
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
    if rotation:
        vs.set_display_rotation(rotation)
    aus = None
    if audio:
        aus = out.add_stream("aac" if path.suffix == ".mp4" else "flac", rate=16000)
        aus.layout = "mono"
    drawn = []
    for i in range(frames):
        img = background(width, height) if blank else frame_at(i, frames, width, height)
        drawn.append(img)
        stored = np.ascontiguousarray(np.rot90(img, -(rotation // 90))) if rotation else img
        f = av.VideoFrame.from_ndarray(stored, format="rgb24")
        if pts is not None:
            f.pts = pts[i]
            f.time_base = time_base
        else:
            f.pts = i
            f.time_base = Fraction(1, fps)
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if aus is not None:
        seconds = frames / fps
        n = int(16000 * seconds)
        t = np.arange(n) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        step = 1024
        for k in range(0, n, step):
            chunk = tone[k:k + step]
            fmt = "fltp" if aus.codec_context.name == "aac" else "s16"
            data = chunk if fmt == "fltp" else (chunk * 32767).astype(np.int16)
            af = av.AudioFrame.from_ndarray(data[None, :], format=fmt, layout="mono")
            af.sample_rate = 16000
            af.pts = k
            af.time_base = Fraction(1, 16000)
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)
    out.close()
    return drawn


def make_resized_clip(path: Path, sizes: Sequence[tuple[int, int]] = ((176, 128), (160, 120)),
                      frames: int = 3) -> None:
    """An MPEG-TS clip whose frame size changes mid-stream: H.264 segments of different
    sizes, one after the other (as a stream switching resolution sends them)."""
    import av

    data = b""
    for k, (w, h) in enumerate(sizes):
        part = path.with_name(f"{path.stem}.part{k}.ts")
        with av.open(str(part), "w") as out:
            vs = out.add_stream("libx264", rate=10)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            for i in range(frames):
                f = av.VideoFrame.from_ndarray(frame_at(i, frames, w, h), format="rgb24")
                f.pts, f.time_base = k * frames + i, Fraction(1, 10)
                for p in vs.encode(f):
                    out.mux(p)
            for p in vs.encode():
                out.mux(p)
        data += part.read_bytes()
        part.unlink()
    path.write_bytes(data)


def decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of a clip as stored (RGB) and its time in seconds."""
    import av

    frames, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
    return frames, times


def audio_samples(path: Path) -> np.ndarray:
    """The decoded audio of a clip's first audio stream."""
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().ravel() for f in c.decode(audio=0)])
