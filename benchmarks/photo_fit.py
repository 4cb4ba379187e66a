"""Does the new face belong in the photo? Colour against the original's skin, kept
occluders, the mask's border and grain, identity and cost, before and after in one run.

Usage::

    git -C . archive main src | tar -x -C /tmp/base    # the baseline's src/
    OMP_NUM_THREADS=1 python benchmarks/photo_fit.py --baseline /tmp/base/src \\
        --frl ../shared/data/frl --frl-photos 12 --out /tmp/photo-fit

Each arm (``base``: the package under ``--baseline``; ``new``: this checkout's) runs in
its own interpreter with the defaults (sealed originals, harmonized) and a fixed key,
on the same photos: ``tests/data``'s group, crowd and astronaut photos, the first
``--frl-photos`` FRL neutral portraits, and those portraits with a synthetic occluder
pasted over the lower face or a cheek (``occluded``: strips, discs and a hand
silhouette, in colours far from skin and one skin-coloured), and each with a fringe of
brown hair across the forehead. The driver measures both
arms' outputs against the originals with this checkout's code:

- colour: CIE76 dE between the robust skin colour (CIELAB median of the skin-like
  pixels near their dominant colour) of the original and of the anonymized face over
  the face's fully replaced core; median and worst per set;
- occluders: share of the occluder's pixels inside the landmark outline's footprint left
  unchanged (colour-different occluders, skin-coloured ones and a fringe of brown hair
  in the skin's own chromaticity apart), and of those outside the eyes-nose-mouth core
  that is always replaced;
- identity: dlib distance between original and anonymized face (FRL): another person
  at >= 0.6;
- border: the step in median L* between the ring just inside the soft edge and the
  ring just outside it, and the high-frequency energy (3x3 high-pass variance) inside
  the core over that of the ring outside; each beside the original's same rings;
- outline left: share of the pixels of the face's hard outline (its landmark outline
  grown as the mask is, drawn in the photo, so the same for both arms) that are
  byte-identical to the original, occluders apart: what the mask claims to replace and
  does not (the chin below a tight crop);
- found: the anonymized face found again by dlib's HOG detector near its box (a
  realism proxy that a misplaced face fails);
- CPU seconds per face (``time.process_time`` of ``api.anonymize``, detection apart).

Sheets: ``sheet-SET.jpg`` under ``--out`` (original, base, new per face).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OCCLUDER_KINDS = ("colour", "skin", "hair")  # the occluded set's names end in one
TEST_PHOTOS = ("group", "crowd", "astronaut")
# Occluders pasted by :func:`occluded`: (shape, RGB); the last is skin-coloured.
OCCLUDERS = (("strip", (40, 60, 170)), ("disc", (200, 30, 30)), ("hand", (30, 140, 60)),
             ("strip", (240, 240, 235)), ("hand", (205, 150, 125)))


def occluder_mask(shape: str, lm: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A synthetic occluder over a face, from its 68 landmarks: a strip across the
    mouth and chin, a disc on a cheek, or a hand (palm and four fingers) over the lower
    face coming from below."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    width = np.hypot(*(lm[16] - lm[0]))
    if shape == "strip":
        top = lm[51, 1] - 0.05 * width
        return (ys >= top) & (ys <= lm[8, 1] + 0.05 * width) & (xs >= lm[2, 0] - width * 0.3)
    if shape == "disc":
        c = lm[3] * 0.6 + lm[31] * 0.4
        return np.hypot(xs - c[0], ys - c[1]) <= 0.22 * width
    # A hand from below: palm under the chin up to the mouth, fingers up to the nose.
    palm_top = lm[57, 1]
    cx = lm[8, 0] + 0.1 * width
    out = (ys >= palm_top) & (np.abs(xs - cx) <= 0.32 * width)
    for k in range(4):
        fx = cx - 0.24 * width + k * 0.16 * width
        tip = lm[33, 1] - (0.05 if k in (1, 2) else -0.05) * width
        out |= (np.abs(xs - fx) <= 0.065 * width) & (ys >= tip) & (ys <= palm_top)
        out |= np.hypot(xs - fx, ys - tip) <= 0.065 * width
    return out


def fringe(pixels: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo with a fringe of brown hair across the forehead, down to just above the
    brows: the face's own skin colour (so skin's chromaticity) at 40% of its light, in
    strands 5% of the face's width apart; and its mask."""
    from faceveil.faces import occluders

    zones = occluders.skin_zones(lm).round().astype(int)
    skin = np.median(pixels[zones[:, 1], zones[:, 0]], axis=0).astype(np.float64)
    width = np.hypot(*(lm[16] - lm[0]))
    ys, xs = np.mgrid[0:pixels.shape[0], 0:pixels.shape[1]]
    mask = (ys <= lm[17:27, 1].min() - 0.04 * width) & (
        ys >= lm[17:27, 1].min() - 0.6 * width) & (np.abs(xs - lm[27, 0]) <= 0.6 * width)
    strands = 1 + 0.2 * np.sign(np.sin(xs * 2 * np.pi / max(4, round(0.05 * width))))
    out = pixels.astype(np.float64)
    out[mask] = 0.4 * skin * strands[mask, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask


def occluded(pixels: np.ndarray, lm: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo with occluder ``k`` of :data:`OCCLUDERS` pasted (with a little texture,
    so it is not flat) and its mask."""
    shape, colour = OCCLUDERS[k % len(OCCLUDERS)]
    mask = occluder_mask(shape, lm, pixels.shape[:2])
    rng = np.random.default_rng(k)
    texture = rng.normal(0, 6, pixels.shape)
    out = pixels.astype(np.float64)
    out[mask] = np.asarray(colour, np.float64) + texture[mask]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask


def photo_sets(args) -> dict[str, list[tuple[str, np.ndarray, np.ndarray | None]]]:
    """Each set's (name, pixels, occluder mask or None)."""
    from faceveil import api, images

    sets: dict[str, list] = {"test photos": [], "FRL": [], "occluded": []}
    for name in TEST_PHOTOS:
        sets["test photos"].append(
            (name, images.load_image(ROOT / "tests/data" / f"{name}.jpg").pixels, None))
    if args.frl:
        folder = Path(args.frl)
        ids = sorted(p.name.split("_")[0] for p in folder.glob("*_neutral.jpg"))
        for k, ident in enumerate(ids[: args.frl_photos]):
            px = images.load_image(folder / f"{ident}_neutral.jpg").pixels
            sets["FRL"].append((ident, px, None))
            regions, _ = api.find_regions(px)
            if regions and regions[0].landmarks is not None:
                occ, mask = occluded(px, regions[0].landmarks, k)
                kind = "skin" if k % len(OCCLUDERS) == len(OCCLUDERS) - 1 else "colour"
                sets["occluded"].append((f"{ident}-{OCCLUDERS[k % len(OCCLUDERS)][0]}-{kind}",
                                         occ, mask))
                sets["occluded"].append((f"{ident}-fringe-hair",
                                         *fringe(px, regions[0].landmarks)))
    return sets


def run_arm(out: Path) -> None:
    """One arm, in this interpreter: anonymize every photo (regions found once, not
    timed), save the outputs and each face's geometry."""
    from faceveil import api, keys
    from faceveil.options import FixedKeys

    key = keys.KeySource.from_bytes(hashlib.sha256(b"faceveil photo-fit key").digest())
    args = json.loads((out / "args.json").read_text())
    sets = photo_sets(argparse.Namespace(**args))
    backbone = None
    from faceveil.diffusion.backends import get_model

    backbone = get_model(None, "cpu", backend="auto")
    rows = []
    for set_name, items in sets.items():
        for name, px, _ in items:
            regions, _ = api.find_regions(px, model=backbone)
            if not regions:
                continue
            h = hashlib.sha256(f"{set_name}/{name}".encode()).digest()
            fixed = FixedKeys(salt=h[:16], nonces=tuple(
                hashlib.sha256(h + bytes([i])).digest()[:16] for i in range(len(regions))))
            t0 = time.process_time()
            anon = api.anonymize(px, key, model=backbone, regions=regions, fixed=fixed)
            cpu = time.process_time() - t0
            tag = hashlib.sha256(f"{set_name}/{name}".encode()).hexdigest()[:12]
            np.savez_compressed(out / f"{tag}.npz", pixels=anon.pixels, **{
                f"t{i}": np.asarray(r.transform) for i, r in enumerate(regions)}, **{
                f"m{i}": np.asarray(r.mask) for i, r in enumerate(regions)}, **{
                f"l{i}": np.asarray(r.landmarks) for i, r in enumerate(regions)
                if r.landmarks is not None})
            rows.append({"set": set_name, "name": name, "tag": tag, "cpu": cpu,
                         "boxes": [list(map(int, r.box)) for r in regions]})
    (out / "rows.json").write_text(json.dumps(rows))


def _rings(region_mask: np.ndarray, transform: np.ndarray, shape, width: int):
    """Photo-space masks: core (fully replaced), inner ring (just inside the soft edge,
    ``width`` px), outer ring (just outside the footprint, ``width`` px), window."""
    from faceveil import faces

    alpha, window = faces.footprint(region_mask, transform, shape)
    core = alpha >= 0.999
    touched = alpha > 0
    inner = core & ~(faces.erode(core, width, False))
    outer = (faces.dilate(touched.astype(np.float32), width + 1) > 0) & ~(
        faces.dilate(touched.astype(np.float32), 1) > 0)
    return core, inner, outer, window


def _highpass_var(lum: np.ndarray, sel: np.ndarray) -> float:
    pad = np.pad(lum, 1, mode="edge")
    hp = lum - sum(pad[i:i + lum.shape[0], j:j + lum.shape[1]] for i in range(3)
                   for j in range(3)) / 9
    v = hp[sel]
    return float(np.var(v)) if v.size else float("nan")


def _skin_colour(lab: np.ndarray) -> np.ndarray | None:
    from faceveil.pipeline import harmonize

    sel = harmonize.skin_like(lab)
    v = lab[sel] if sel.sum() >= 20 else lab
    if len(v) == 0:
        return None
    med = np.median(v, axis=0)
    mad = np.maximum(1.4826 * np.median(np.abs(v - med), axis=0), [4.0, 2.5, 2.5])
    near = (np.abs(v - med) <= 2.5 * mad).all(axis=1)
    return np.median(v[near] if near.sum() >= 10 else v, axis=0)


def measure_face(orig: np.ndarray, anon: np.ndarray, mask: np.ndarray,
                 transform: np.ndarray, box, occ: np.ndarray | None,
                 landmarks: np.ndarray | None = None) -> dict:
    """The measures of one face (see the module docstring)."""
    from faceveil.pipeline import harmonize

    width = max(2, int(round(0.04 * box[2])))
    core, inner, outer, window = _rings(mask, transform, orig.shape, width)
    o, a = orig[window].astype(np.float64), anon[window].astype(np.float64)
    lab_o, lab_a = harmonize.rgb_to_lab(o), harmonize.rgb_to_lab(a)
    visible = core if occ is None else core & ~occ[window]
    row: dict = {}
    so, sa = _skin_colour(lab_o[visible]), _skin_colour(lab_a[visible])
    row["dE"] = None if so is None or sa is None else float(np.linalg.norm(so - sa))
    for tag, lab in (("orig", lab_o), ("anon", lab_a)):
        lin, lout = lab[..., 0][inner & visible], lab[..., 0][outer]
        row[f"step_{tag}"] = float(np.median(lin) - np.median(lout)) if lin.size and \
            lout.size else None
        lum = lab[..., 0]
        row[f"hf_{tag}"] = _highpass_var(lum, visible) / max(_highpass_var(lum, outer), 1e-9)
    if occ is not None:
        from faceveil import faces
        from faceveil.faces import occluders

        # Over the landmark outline's footprint (the old mask), the same for both arms
        # (an arm's own mask leaves its kept occluder out); apart, the part outside the
        # eyes-nose-mouth core, which is always replaced.
        outline, core = mask, np.zeros(mask.shape, bool)
        if landmarks is not None:
            lm = faces.apply_transform(transform, landmarks)
            outline = faces.facial_mask(lm, mask.shape[0])
            core = occluders.protected_core(lm, mask.shape[0])
        touched = faces.footprint(outline, transform, orig.shape)[0] > 0
        in_core = faces.footprint(core.astype(np.float32), transform, orig.shape)[0] > 0
        hit = occ[window] & touched
        same = (orig[window] == anon[window]).all(axis=2)
        row["occluder_kept"] = float(same[hit].mean()) if hit.any() else None
        out = hit & ~in_core
        row["occluder_kept_out"] = float(same[out].mean()) if out.any() else None
        row["occluder_px"] = int(hit.sum())
    return row


def outline_left(orig: np.ndarray, anon: np.ndarray, landmarks: np.ndarray,
                 occ: np.ndarray | None) -> float:
    """Share of the face's hard outline (photo pixels) left byte-identical."""
    from PIL import Image, ImageDraw

    from faceveil import faces
    from faceveil.faces import masks

    width = float(np.hypot(*(landmarks[16] - landmarks[0])))
    outline = masks.face_outline(landmarks)
    canvas = Image.new("L", (orig.shape[1], orig.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in outline], fill=1)
    hull = faces.dilate(np.asarray(canvas, np.float32),
                        max(1, round(masks.MASK_DILATE * width))) > 0
    if occ is not None:
        hull &= ~occ
    same = (orig == anon).all(axis=2)
    return float(same[hull].mean()) if hull.any() else float("nan")


def found_again(anon: np.ndarray, box) -> bool:
    """Whether dlib's HOG detector finds a face overlapping ``box`` in ``anon``."""
    from faceveil.faces.geometry import overlap
    from faceveil.faces.landmarks import dlib_model

    (y0, x0), s = crop_window(box)
    crop = np.ascontiguousarray(anon[y0:y0 + s, x0:x0 + s])
    up = 1 if max(box[2], box[3]) >= 80 else 2
    rects, _, _ = dlib_model("hog").run(crop, up, 0.0)
    return any(overlap((r.left() + x0, r.top() + y0, r.width(), r.height()), tuple(box))[0]
               >= 0.3 for r in rects)


def sheet(tiles: list[list[np.ndarray]], path: Path, side: int = 128) -> None:
    """A JPEG of rows of tiles (original, base, new), each resized to ``side``."""
    from PIL import Image

    rows = []
    for row in tiles:
        rows.append(np.concatenate([np.asarray(Image.fromarray(t).resize((side, side),
                                    Image.Resampling.LANCZOS)) for t in row], axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).save(path, "JPEG", quality=80)


def crop_window(box, grow: float = 0.5) -> tuple[tuple[int, int], int]:
    """The square around a face box (grown by ``grow`` of its side each way): its top-left
    ``(y0, x0)`` in the photo and its side."""
    x, y, w, h = box
    s = int(max(w, h) * (1 + 2 * grow))
    return (max(0, y + h // 2 - s // 2), max(0, x + w // 2 - s // 2)), s


def crop_box(px: np.ndarray, box, grow: float = 0.5) -> np.ndarray:
    (y0, x0), s = crop_window(box, grow)
    return np.ascontiguousarray(px[y0:y0 + s, x0:x0 + s])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", help="the baseline's src/ folder (omit: new arm only)")
    p.add_argument("--frl", help="FRL folder (NNN_neutral.jpg)")
    p.add_argument("--frl-photos", type=int, default=12)
    p.add_argument("--out", default="/tmp/photo-fit")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    if args.arm:
        run_arm(Path(args.arm))
        return
    arms = {"new": ROOT / "src"}
    if args.baseline:
        arms = {"base": Path(args.baseline).resolve(), **arms}
    for arm, src in arms.items():
        folder = out / arm
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "args.json").write_text(json.dumps({"frl": args.frl,
                                                      "frl_photos": args.frl_photos}))
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([sys.executable, __file__, "--arm", str(folder)], env=env, check=True)
    report(args, out, list(arms))


def report(args, out: Path, arms: list[str]) -> None:
    from faceveil import identity

    sets = photo_sets(args)
    rows = {arm: {(r["set"], r["name"]): r for r in json.loads((out / arm / "rows.json")
                                                                .read_text())} for arm in arms}
    table: dict = {}
    for set_name, items in sets.items():
        tiles = []
        for name, px, occ in items:
            per = {}
            for arm in arms:
                r = rows[arm].get((set_name, name))
                if r is None:
                    continue
                data = np.load(out / arm / f"{r['tag']}.npz")
                anon = data["pixels"]
                faces_m = []
                for i, box in enumerate(r["boxes"]):
                    m = measure_face(px, anon, data[f"m{i}"], data[f"t{i}"], box, occ,
                                     data.get(f"l{i}"))
                    m["occluder_kind"] = name.rsplit("-", 1)[-1] if occ is not None else None
                    if f"l{i}" in data:
                        m["outline_left"] = outline_left(px, anon, data[f"l{i}"], occ)
                    m["found"] = found_again(anon, box)
                    if set_name != "test photos":
                        e0, e1 = identity.embed(px, tuple(box)), identity.embed(anon, tuple(box))
                        m["other"] = None if e0 is None or e1 is None else bool(
                            identity.distance(e0, e1) >= identity.DLIB_THRESHOLD)
                    faces_m.append(m)
                per[arm] = (anon, faces_m, r["cpu"] / max(1, len(r["boxes"])), r["boxes"])
            for arm, (_, fm, cpu, _) in per.items():
                t = table.setdefault((set_name, arm), {"faces": [], "cpu": []})
                t["faces"] += fm
                t["cpu"].append(cpu)
            if per:
                boxes = next(iter(per.values()))[3]
                for box in boxes[:4]:
                    tiles.append([crop_box(px, box)] + [crop_box(per[a][0], box) for a in arms])
        if tiles:
            sheet(tiles[:12], out / f"sheet-{set_name.replace(' ', '-')}.jpg")
    print_table(table, arms)


def _fmt(vals, how="median") -> str:
    v = np.array([x for x in vals if x is not None], float)
    if not v.size:
        return "-"
    if how == "share":
        return f"{100 * v.mean():.0f}%"
    if how == "mean":
        return f"{100 * v.mean():.1f}% (worst {100 * v.max():.1f}%)"
    return f"{np.median(v):.1f} (worst {np.max(np.abs(v)):.1f})"


def print_table(table: dict, arms: list[str]) -> None:
    print("| set | arm | faces | dE skin median (worst) | border step anon / orig "
          "(median abs) | HF ratio anon / orig | another person | occluder kept (colour / "
          "skin-coloured / hair) | outside the core (colour / skin-coloured / hair) | "
          "outline left | "
          "found (HOG) | CPU s/face |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (set_name, arm), t in sorted(table.items(), key=lambda kv: (kv[0][0],
                                                                     arms.index(kv[0][1]))):
        fm = t["faces"]
        steps_a = [abs(f["step_anon"]) for f in fm if f["step_anon"] is not None]
        steps_o = [abs(f["step_orig"]) for f in fm if f["step_orig"] is not None]
        hf = [f["hf_anon"] / f["hf_orig"] for f in fm if f["hf_orig"]]
        kept = {key: " / ".join(_fmt([f.get(key) for f in fm if f.get("occluder_kind")
                                             == kind], "share") for kind in OCCLUDER_KINDS)
                for key in ("occluder_kept", "occluder_kept_out")}
        other = [f.get("other") for f in fm if "other" in f]
        print(f"| {set_name} | {arm} | {len(fm)} | {_fmt([f['dE'] for f in fm])} | "
              f"{np.median(steps_a):.1f} / {np.median(steps_o):.1f} | "
              f"{np.median(hf):.2f} | {_fmt(other, 'share')} | "
              f"{kept['occluder_kept']} | {kept['occluder_kept_out']} | "
              f"{_fmt([f.get('outline_left') for f in fm], 'mean')} | "
              f"{_fmt([f['found'] for f in fm], 'share')} | {np.median(t['cpu']):.2f} |")


if __name__ == "__main__":
    main()
