"""Video: timing kept, coverage, identity stability, flicker, recovery and speed.

Usage::

    python benchmarks/video.py [--frames 10] [--width 256] [--height 192] [--steps 50]
                               [--model face64-v1] [--miss 3,4] [--scene slide|group]

The clip is made here (as in the tests: a face photo sliding and growing over a
background, H.264 in MP4 with an AAC sine tone; nothing downloaded), so it is a
synthetic clip, not real footage. The detector is blinded on the ``--miss`` frames to
measure what the track fills in. Side by side:

- ``video (tracks)``: :func:`faceveil.video.anonymize_video`, one face per track
  segment (the default), to ``.mkv`` (FFV1, lossless) and to ``.mp4`` (H.264), faces
  sealed;
- ``video --per-frame``: the model run on every frame's face (one nonce per track),
  ``.mkv``, recovered by diffusion;
- ``per-frame photos`` (the baseline, what frame-by-frame tools do): every frame
  anonymized on its own with :func:`faceveil.api.anonymize_many` (a fresh nonce per
  face and frame, no tracking, the missed frames left as they are).

Numbers: frames, timestamps, duration and audio samples against the input; the least
share of the face's pixels changed in any frame (the face as the unblinded detector
finds it; 0 = a published face); median dlib distance between the anonymized faces of
consecutive frames (and between the original ones), and between each original and its
anonymized face; flicker (mean absolute change between consecutive aligned face crops
inside the mask) against the original clip's; face-region PSNR of the recovered
``.mkv`` and the share of bit-exact faces recovered from the ``.mp4``; seconds per
frame and per face; for the tracked runs, the largest move of a track's pasted box
between two of its frames (box widths per frame elapsed: a track that jumps pastes a
face where there is none).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: no spinning on a busy CPU

from faceveil import api, faces, identity, keys, video  # noqa: E402
from faceveil.format import auth  # noqa: E402
from faceveil.format import clip as clip_records  # noqa: E402
from faceveil.format.records import Opened  # noqa: E402
from faceveil.options import Options  # noqa: E402
from faceveil.pipeline import anonymize as pipeline  # noqa: E402
from faceveil.video import io as video_io  # noqa: E402
from tests.videoclips import make_clip  # noqa: E402


def frames(path: Path) -> tuple[list[float], list[np.ndarray]]:
    got = list(video.read_frames(path))
    return [t for t, _ in got], [p for _, p in got]


def audio_from_zero(path: Path) -> np.ndarray:
    """The decoded audio from time 0 on (an AAC encoder's priming samples, which MP4
    hides with an edit list and Matroska keeps at negative times, left out)."""
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().ravel() for f in c.decode(audio=0)
                               if f.pts is None or f.pts >= 0])


def footprint(face, shape) -> np.ndarray:
    out = np.zeros(shape[:2], bool)
    warped, window = faces.footprint((np.asarray(face.mask) > 0).astype(np.float64),
                                     face.transform, shape)
    out[window] |= warped > 0
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union else 0.0


def stability(orig: list[np.ndarray], anon: list[np.ndarray], opened: dict) -> dict:
    """Identity distances and flicker of every face seen in two consecutive frames (a
    face of frame i paired with the face of frame i + 1 whose box overlaps it most, IoU
    >= 0.3), whatever its nonce: the baseline's change every frame."""
    emb: dict = {}

    def embed(src: str, i: int, box) -> np.ndarray | None:
        key = (src, i, tuple(box))
        if key not in emb:
            emb[key] = identity.embed(anon[i] if src == "anon" else orig[i], box)
        return emb[key]

    consec, consec_o, own, flick_a, flick_o = [], [], [], [], []
    for i in sorted(opened):
        for fi in opened[i].faces:
            a, o = embed("anon", i, fi.box), embed("orig", i, fi.box)
            if a is not None and o is not None:
                own.append(identity.distance(o, a))
            if i + 1 not in opened:
                continue
            best = max(opened[i + 1].faces, key=lambda f: _iou(fi.box, f.box))
            if _iou(fi.box, best.box) < 0.3:
                continue
            for src, out in (("anon", consec), ("orig", consec_o)):
                x, y = embed(src, i, fi.box), embed(src, i + 1, best.box)
                if x is not None and y is not None:
                    out.append(identity.distance(x, y))
            inside = (np.asarray(fi.mask) > 0) & (np.asarray(best.mask) > 0)
            for src, out in ((anon, flick_a), (orig, flick_o)):
                x = faces.extract(src[i], fi.transform, fi.crop_size)
                y = faces.extract(src[i + 1], best.transform, best.crop_size)
                out.append(float(np.abs(x - y)[inside].mean()))

    def med(v: list[float]) -> float:
        return float(np.median(v)) if v else float("nan")

    return {"consecutive": med(consec), "consecutive_original": med(consec_o),
            "to_original": med(own),
            "flicker": float(np.mean(flick_a)) if flick_a else float("nan"),
            "flicker_original": float(np.mean(flick_o)) if flick_o else float("nan"),
            "pairs": len(flick_a)}


def coverage(orig: list[np.ndarray], anon: list[np.ndarray], truth: list) -> float:
    """Least share of the true face's pixels changed, over frames with a face."""
    shares = []
    for o, a, regions in zip(orig, anon, truth, strict=True):
        for r in regions:
            inside = footprint(r, o.shape)
            shares.append(float((o[inside] != a[inside]).any(axis=-1).mean()))
    return min(shares) if shares else float("nan")


def largest_move(opened: dict) -> float:
    """The largest move of any track between two frames it is in, in box widths per
    frame elapsed (a track is a nonce; its box in each frame's record is where its face
    was pasted). Issue 25's target: at most 1."""
    seen: dict[bytes, list[tuple[int, tuple]]] = {}
    for i, o in sorted(opened.items()):
        for f in o.faces:
            seen.setdefault(bytes(f.nonce), []).append((i, tuple(f.box)))
    worst = 0.0
    for path in seen.values():
        for (i, a), (j, b) in zip(path, path[1:]):
            ca = np.array([a[0] + a[2] / 2, a[1] + a[3] / 2])
            cb = np.array([b[0] + b[2] / 2, b[1] + b[3] / 2])
            worst = max(worst, float(np.hypot(*(cb - ca)) / max(a[2], b[2], 1) / (j - i)))
    return worst


def make_group_clip(path: Path, frames: int, width: int, height: int) -> None:
    """A camera panning and zooming in over ``tests/data/group.jpg`` (six people, two
    heads tilted): faces slide, grow, and leave or enter the picture. H.264, and an AAC
    sine tone."""
    import av
    from PIL import Image

    photo = Image.open(ROOT / "tests" / "data" / "group.jpg").convert("RGB")
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=10)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    aus = out.add_stream("aac", rate=16000)
    aus.layout = "mono"
    for i in range(frames):
        t = i / max(frames - 1, 1)
        # Zoom in from the largest view of the clip's shape that the photo holds.
        w = min(0.8 * photo.width, photo.height * width / height) * (1 - 0.2 * t)
        h = w * height / width
        x = (photo.width - w) * t  # pan left to right
        y = (photo.height - h) * 0.5
        view = photo.resize((width, height), Image.Resampling.BILINEAR,
                            box=(x, y, x + w, y + h))
        f = av.VideoFrame.from_ndarray(np.asarray(view), format="rgb24")
        f.pts, f.time_base = i, Fraction(1, 10)
        for packet in vs.encode(f):
            out.mux(packet)
    for packet in vs.encode():
        out.mux(packet)
    n = 1600 * frames  # 16 kHz, 10 frames/s
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
    for k in range(0, n, 1024):
        af = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = 16000, k, Fraction(1, 16000)
        for packet in aus.encode(af):
            out.mux(packet)
    for packet in aus.encode():
        out.mux(packet)
    out.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default=None, help="default: the built-in model")
    ap.add_argument("--miss", default="3,4", help="frames the detector is blinded on")
    ap.add_argument("--sheet", type=Path, help="write a JPEG of every --sheet-every'th "
                    "frame, original above the tracked .mkv's")
    ap.add_argument("--sheet-every", type=int, default=5)
    ap.add_argument("--scene", choices=("slide", "group"), default="slide",
                    help="slide: one face sliding and growing over a background; group: "
                         "a camera panning over tests/data/group.jpg (six people)")
    args = ap.parse_args()
    miss = {int(v) for v in args.miss.split(",") if v}
    work = Path(tempfile.mkdtemp(prefix="faceveil-video-bench-"))
    clip = work / "clip.mp4"
    if args.scene == "group":
        make_group_clip(clip, args.frames, args.width, args.height)
    else:
        make_clip(clip, frames=args.frames, width=args.width, height=args.height)
    key_path = work / "k.key"
    keys.generate_key_file(key_path)
    key = keys.KeySource.from_key_file(key_path)
    backbone = api.get_model(args.model)
    times, orig = frames(clip)
    truth = [api.find_regions(p, model=backbone)[0] for p in orig]

    # The video run finds each frame's faces with faceveil.pipeline.anonymize.find_regions.
    find, calls = pipeline.find_regions, []

    def blind(pixels, model, *rest, **kw):
        calls.append(1)
        regions, skipped = find(pixels, model, *rest, **kw)
        return ([], skipped) if len(calls) - 1 in miss else (regions, skipped)

    rows, results = [], {}
    pipeline.find_regions = blind
    try:
        for name, suffix, per_frame in (("mkv", ".mkv", False), ("mp4", ".mp4", False),
                                        ("per-frame", ".mkv", True)):
            calls.clear()
            out = work / f"anon_{name}{suffix}"
            t0 = time.perf_counter()
            options = Options.of(steps=args.steps, per_frame=per_frame)
            if per_frame:  # recovered by diffusion below: no sealed originals
                options = options.replace(lossless=False)
            res = video.anonymize_video(clip, out, key, model=backbone, options=options)
            results[name] = (out, res, time.perf_counter() - t0)
    finally:
        pipeline.find_regions = find

    # The baseline: every frame a photo of its own (fresh nonces), the missed frames
    # left unchanged as a frame-by-frame tool leaves them.
    t0 = time.perf_counter()
    seen = [p for i, p in enumerate(orig) if i not in miss]
    base = api.anonymize_many(seen, key, model=backbone, options=Options.of(steps=args.steps))
    base_s = time.perf_counter() - t0
    base_frames, base_open, k = [], {}, 0
    for i, p in enumerate(orig):
        if i in miss:
            base_frames.append(p)
            continue
        r = base[k]
        k += 1
        if isinstance(r, Exception):
            base_frames.append(p)
            continue
        base_frames.append(r.pixels)
        base_open[i] = auth.open(r.record, key)

    def opened_of(path: Path) -> dict:
        raw = list(video_io.raw_records(path, None))
        clip_key = clip_records.verify_clip(clip_records.scan(raw).clip, key)
        return {o.record.video["frame"]: o for o in clip_records.open_frames(raw, clip_key)
                if isinstance(o, Opened)}

    audio_in = audio_from_zero(clip)
    mkv, res_mkv, mkv_s = results["mkv"]
    mp4, res_mp4, mp4_s = results["mp4"]
    each, res_each, each_s = results["per-frame"]
    print(f"clip ({args.scene}): {args.frames} frames {args.width}x{args.height}, model "
          f"{backbone.model_id}, {args.steps} steps, detector blinded on frames "
          f"{sorted(miss)}; faces found per frame (unblinded): "
          f"{[len(t) for t in truth]}")
    print()
    print(f"input: {clip.stat().st_size / 1e3:.0f} KB")
    print("| output | frames in/out | timestamps equal | duration in/out s | audio samples "
          "from 0 equal | KB (of which records) |")
    print("|---|---|---|---|---|---|")
    for name, path in (("video .mkv (FFV1)", mkv), ("video .mp4 (H.264)", mp4),
                       ("video --per-frame .mkv", each)):
        t_out, _ = frames(path)
        dur = (f"{times[-1] - times[0]:.3f}/{t_out[-1] - t_out[0]:.3f}" if t_out
               else "-")
        records_kb = sum(len(r) for r in video_io.raw_records(path, None)) / 1e3
        print(f"| {name} | {len(times)}/{len(t_out)} | {t_out == times} | {dur} | "
              f"{np.array_equal(audio_from_zero(path), audio_in)} | "
              f"{path.stat().st_size / 1e3:.0f} ({records_kb:.0f}) |")
    print()
    _, anon_mkv = frames(mkv)
    if args.sheet:
        pick = range(0, len(orig), max(1, args.sheet_every))
        grid = np.concatenate([np.concatenate([orig[i] for i in pick], axis=1),
                               np.concatenate([anon_mkv[i] for i in pick], axis=1)], axis=0)
        from PIL import Image

        Image.fromarray(grid).save(args.sheet, "JPEG", quality=85)
    _, anon_each = frames(each)
    rows = [("video (tracks), .mkv", res_mkv.tracks, res_mkv.segments, anon_mkv,
             opened_of(mkv), mkv_s, res_mkv.frames, res_mkv.faces),
            ("video --per-frame, .mkv", res_each.tracks, "-", anon_each, opened_of(each),
             each_s, res_each.frames, res_each.faces),
            ("per-frame photos (baseline)", "-", "-", base_frames, base_open, base_s,
             len(seen), sum(isinstance(r, api.Anonymized) and len(r.regions) for r in base))]
    print("| run | tracks | faces made | largest track move (box widths / frame) | "
          "least face share changed | dlib dist. consecutive "
          "anon (original) | dlib dist. original-anon | flicker anon / original "
          "(face pairs) | s/frame | s/face |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, tracks, made, anon, opened, secs, n_frames, n_faces in rows:
        move = f"{largest_move(opened):.2f}" if tracks != "-" else "-"
        s = stability(orig, anon, opened)
        cov = coverage(orig, anon, truth)
        print(f"| {name} | {tracks} | {made} | {move} | {cov:.3f} | {s['consecutive']:.3f} "
              f"({s['consecutive_original']:.3f}) | "
              f"{s['to_original']:.3f} | {s['flicker']:.1f} / {s['flicker_original']:.1f} "
              f"= {s['flicker'] / s['flicker_original']:.2f}x ({s['pairs']}) | "
              f"{secs / n_frames:.2f} | {secs / max(n_faces, 1):.2f} |")
    print(f"\n.mp4 run: {mp4_s / res_mp4.frames:.2f} s/frame, "
          f"{mp4_s / max(res_mp4.faces, 1):.2f} s/face (faces sealed too)")

    print("\n| recovery | face PSNR median (min), dB | faces bit-exact | s/frame |")
    print("|---|---|---|---|")
    for name, path in (("from .mkv (FFV1), sealed originals (default)", mkv),
                       ("from .mp4 (H.264), sealed originals (default)", mp4),
                       ("from --per-frame .mkv, diffusion (exact-steps)", each)):
        back = work / f"back_{path.stem}.mkv"
        t0 = time.perf_counter()
        video.recover_video(path, back, key)
        secs = time.perf_counter() - t0
        _, rec = frames(back)
        opened = opened_of(path)
        scores, exact = [], 0
        for i, o in opened.items():
            inside = np.zeros(orig[i].shape[:2], bool)
            for f in o.faces:
                inside |= footprint(f, orig[i].shape)
            scores.append(psnr(orig[i][inside], rec[i][inside]))
            exact += bool((orig[i][inside] == rec[i][inside]).all())
        print(f"| {name} | {np.median(scores):.1f} ({min(scores):.1f}) | "
              f"{exact}/{len(opened)} | {secs / len(rec):.2f} |")


if __name__ == "__main__":
    main()
