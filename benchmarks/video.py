"""Video: timing kept, coverage, identity stability, flicker, recovery and speed.

Usage::

    python benchmarks/video.py [--frames 10] [--width 256] [--height 192] [--steps 50]
                               [--model face64-v1] [--miss 3,4]

The clip is made here (as in the tests: a face photo sliding and growing over a
background, H.264 in MP4 with an AAC sine tone; nothing downloaded), so it is a
synthetic clip, not real footage. The detector is blinded on the ``--miss`` frames to
measure what the track fills in. Side by side:

- ``video (tracks)``: :func:`faceveil.video.anonymize_video`, one nonce per track, to
  ``.mkv`` (FFV1, lossless) and to ``.mp4`` (H.264, faces sealed);
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
frame and per face.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: no spinning on a busy CPU

from faceveil import api, container, faces, identity, keys, video  # noqa: E402
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


def stability(orig: list[np.ndarray], anon: list[np.ndarray], opened: dict) -> dict:
    """Identity distances and flicker of the first face of each frame with a record."""
    idx = sorted(opened)
    emb_a, emb_o = {}, {}
    for i in idx:
        box = opened[i].faces[0].box
        emb_a[i], emb_o[i] = identity.embed(anon[i], box), identity.embed(orig[i], box)
    def consecutive(emb: dict) -> list[float]:
        return [identity.distance(emb[i], emb[j]) for i, j in zip(idx, idx[1:])
                if j == i + 1 and emb[i] is not None and emb[j] is not None]

    consec, consec_o = consecutive(emb_a), consecutive(emb_o)
    own = [identity.distance(emb_o[i], emb_a[i]) for i in idx
           if emb_o[i] is not None and emb_a[i] is not None]
    flick_a, flick_o = [], []
    for i, j in zip(idx, idx[1:]):
        if j != i + 1:
            continue
        fi, fj = opened[i].faces[0], opened[j].faces[0]
        inside = (np.asarray(fi.mask) > 0) & (np.asarray(fj.mask) > 0)
        for src, out in ((anon, flick_a), (orig, flick_o)):
            a = faces.extract(src[i], fi.transform, fi.crop_size)
            b = faces.extract(src[j], fj.transform, fj.crop_size)
            out.append(float(np.abs(a - b)[inside].mean()))

    def med(v: list[float]) -> float:
        return float(np.median(v)) if v else float("nan")

    return {"consecutive": med(consec), "consecutive_original": med(consec_o),
            "to_original": med(own),
            "flicker": float(np.mean(flick_a)) if flick_a else float("nan"),
            "flicker_original": float(np.mean(flick_o)) if flick_o else float("nan")}


def coverage(orig: list[np.ndarray], anon: list[np.ndarray], truth: list) -> float:
    """Least share of the true face's pixels changed, over frames with a face."""
    shares = []
    for o, a, regions in zip(orig, anon, truth, strict=True):
        for r in regions:
            inside = footprint(r, o.shape)
            shares.append(float((o[inside] != a[inside]).any(axis=-1).mean()))
    return min(shares) if shares else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default=None, help="default: the built-in model")
    ap.add_argument("--miss", default="3,4", help="frames the detector is blinded on")
    args = ap.parse_args()
    miss = {int(v) for v in args.miss.split(",") if v}
    work = Path(tempfile.mkdtemp(prefix="faceveil-video-bench-"))
    clip = work / "clip.mp4"
    make_clip(clip, frames=args.frames, width=args.width, height=args.height)
    key_path = work / "k.key"
    keys.generate_key_file(key_path)
    key = keys.KeySource.from_key_file(key_path)
    backbone = api.get_model(args.model)
    times, orig = frames(clip)
    truth = [api.find_regions(p, backbone)[0] for p in orig]

    find, calls = api.find_regions, []

    def blind(pixels, model, **kw):
        calls.append(1)
        regions, skipped = find(pixels, model, **kw)
        return ([], skipped) if len(calls) - 1 in miss else (regions, skipped)

    rows, results = [], {}
    api.find_regions = blind
    try:
        for suffix in (".mkv", ".mp4"):
            calls.clear()
            out = work / f"anon{suffix}"
            t0 = time.perf_counter()
            res = video.anonymize_video(clip, out, key, model=backbone, steps=args.steps)
            results[suffix] = (out, res, time.perf_counter() - t0)
    finally:
        api.find_regions = find

    # The baseline: every frame a photo of its own (fresh nonces), the missed frames
    # left unchanged as a frame-by-frame tool leaves them.
    t0 = time.perf_counter()
    seen = [p for i, p in enumerate(orig) if i not in miss]
    base = api.anonymize_many(seen, key, model=backbone, steps=args.steps)
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
        base_open[i] = container.open_record(r.record, key)

    def opened_of(path: Path) -> dict:
        out = {}
        for record in video.Records(video._raw_records(path, None), key):
            if record.get("format") == "faceveil":
                out[record["video"]["frame"]] = container.open_record(record, key)
        return out

    audio_in = audio_from_zero(clip)
    mkv, res_mkv, mkv_s = results[".mkv"]
    mp4, res_mp4, mp4_s = results[".mp4"]
    print(f"clip: {args.frames} frames {args.width}x{args.height}, model "
          f"{backbone.model_id}, {args.steps} steps, detector blinded on frames "
          f"{sorted(miss)}; faces found per frame (unblinded): "
          f"{[len(t) for t in truth]}")
    print()
    print("| output | frames in/out | timestamps equal | duration in/out s | audio samples "
          "from 0 equal |")
    print("|---|---|---|---|---|")
    for name, path in (("video .mkv (FFV1)", mkv), ("video .mp4 (H.264)", mp4)):
        t_out, _ = frames(path)
        dur = (f"{times[-1] - times[0]:.3f}/{t_out[-1] - t_out[0]:.3f}" if t_out
               else "-")
        print(f"| {name} | {len(times)}/{len(t_out)} | {t_out == times} | {dur} | "
              f"{np.array_equal(audio_from_zero(path), audio_in)} |")
    print()
    _, anon_mkv = frames(mkv)
    op_mkv = opened_of(mkv)
    s_track = stability(orig, anon_mkv, op_mkv)
    s_base = stability(orig, base_frames, base_open)
    rows = [("video (tracks), .mkv", res_mkv.tracks, coverage(orig, anon_mkv, truth), s_track,
             mkv_s, res_mkv.frames, res_mkv.faces),
            ("per-frame photos (baseline)", "-", coverage(orig, base_frames, truth), s_base,
             base_s, len(seen), sum(isinstance(r, api.Anonymized) and len(r.regions)
                                    for r in base))]
    print("| run | tracks | least face share changed | dlib dist. consecutive anon "
          "(original) | dlib dist. original-anon | flicker anon / original | "
          "s/frame | s/face |")
    print("|---|---|---|---|---|---|---|---|")
    for name, tracks, cov, s, secs, n_frames, n_faces in rows:
        print(f"| {name} | {tracks} | {cov:.3f} | {s['consecutive']:.3f} "
              f"({s['consecutive_original']:.3f}) | "
              f"{s['to_original']:.3f} | {s['flicker']:.1f} / {s['flicker_original']:.1f} "
              f"= {s['flicker'] / s['flicker_original']:.2f}x | {secs / n_frames:.2f} | "
              f"{secs / max(n_faces, 1):.2f} |")
    print(f"\n.mp4 run: {mp4_s / res_mp4.frames:.2f} s/frame, "
          f"{mp4_s / max(res_mp4.faces, 1):.2f} s/face (faces sealed too)")

    print("\n| recovery | face PSNR median (min), dB | faces bit-exact | s/frame |")
    print("|---|---|---|---|")
    for name, path in (("from .mkv (FFV1), default method", mkv),
                       ("from .mp4 (H.264), sealed originals", mp4)):
        back = work / f"back_{path.suffix[1:]}.mkv"
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
