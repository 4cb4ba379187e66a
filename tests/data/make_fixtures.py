"""Rebuild the test photos in this folder (see README.md for their sources and licences).

    pip download --no-deps --no-binary :all: face_recognition==1.3.0 -d /tmp/fr
    tar xzf /tmp/fr/face_recognition-1.3.0.tar.gz -C /tmp/fr
    python tests/data/make_fixtures.py /tmp/fr/face_recognition-1.3.0/tests/test_images

``crowd_hard.jpg`` also needs the DCGAN (``pip install --no-deps gan-face-generate``);
name files after the folder to rebuild only those (their entries in ``faces.json`` are
replaced, the others kept), e.g. ``make_fixtures.py SRC crowd_hard.jpg``.

The collages ``group.jpg`` and ``crowd.jpg`` are made from the single-face photos, at
known face sizes and angles, because no multi-face photo with a clear licence ships in
a package this project can install; ``faces.json`` records what each photo contains.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "training"))

from faceveil import faces  # noqa: E402

ONLY: set[str] = set()  # when not empty, only these files are written


def save_jpeg(img: Image.Image, name: str, quality: int = 88) -> None:
    if ONLY and name not in ONLY:
        return
    img.save(HERE / name, quality=quality, optimize=True)
    print(f"{name}: {img.size[0]}x{img.size[1]}, {(HERE / name).stat().st_size // 1024} KB")


def head(photo: np.ndarray) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The photo's face box (the largest HOG box) and a head-and-shoulders cut."""
    box = max((d[0] for d in faces.detect(photo, detector="hog", upsample=0)),
              key=lambda b: b[2])
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    half = 1.3 * w
    left, top = int(max(0, cx - half)), int(max(0, cy - 1.5 * half))
    right, bottom = int(min(photo.shape[1], cx + half)), int(min(photo.shape[0], cy + half))
    cut = Image.fromarray(photo[top:bottom, left:right])
    return cut, (x - left, y - top, w, h)


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth, face-free backdrop: colour gradients plus fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([120 + 80 * xx, 110 + 60 * yy, 140 - 50 * xx * yy], axis=-1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def collage(
    name: str, size: tuple[int, int], items: list[tuple[Image.Image, tuple, int, int, int, float]],
    seed: int,
) -> dict:
    """Paste head cuts at (x, y) so that their face box is ``width`` px wide, rotated by
    ``angle`` degrees; return the ground truth."""
    canvas = Image.fromarray(background(*size, seed))
    truth = []
    for cut, box, width, x, y, angle in items:
        s = width / box[2]
        img = cut.resize((round(cut.size[0] * s), round(cut.size[1] * s)), Image.LANCZOS)
        mask = Image.new("L", img.size, 255)
        if angle:
            img = img.rotate(angle, resample=Image.BICUBIC, expand=True)
            mask = mask.rotate(angle, resample=Image.BICUBIC, expand=True)
        canvas.paste(img, (x, y), mask)
        cx = x + img.size[0] / 2 + (box[0] + box[2] / 2 - cut.size[0] / 2) * s
        cy = y + img.size[1] / 2 + (box[1] + box[3] / 2 - cut.size[1] / 2) * s
        truth.append({"centre": [round(cx), round(cy)], "width": width, "angle": angle})
    save_jpeg(canvas, name)
    return {"faces": truth}


def dcgan_faces(seeds: range) -> list[np.ndarray]:
    """64x64 synthetic faces of the DCGAN of gan-face-generate, one per seed."""
    import dcgan

    gen = dcgan.load_generator("cpu")
    x = dcgan.generate_faces(gen, seeds)
    return list(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                .permute(0, 2, 3, 1).numpy())


def gan_cut(face: np.ndarray) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A DCGAN face as a head cut: its HOG box on the 4x enlarged crop, or where HOG puts
    the face in most of them, (35, 74, 180, 181)/256 of the side, when HOG misses it (the
    turned faces)."""
    big = np.asarray(Image.fromarray(face).resize((256, 256), Image.BICUBIC))
    dets = faces.detect(big, detector="hog", upsample=0, rotations=())
    x, y, w, h = max((d[0] for d in dets), key=lambda b: b[2]) if dets else (35, 74, 180, 181)
    return Image.fromarray(face), (x / 4, y / 4, w / 4, h / 4)


def busy_background(photos: dict[str, np.ndarray], size: tuple[int, int], seed: int,
                    ) -> np.ndarray:
    """A cluttered backdrop: patches of the source photos away from their faces (flags,
    curtains, suits, chandeliers, the shuttle model), bars of colour and a light falloff."""
    rng = np.random.default_rng(seed)
    width, height = size
    canvas = np.zeros((height, width, 3), np.float64) + 90
    sources = []
    for photo in photos.values():
        small = Image.fromarray(photo)
        s = 500 / max(small.size)
        small = np.asarray(small.resize((round(small.size[0] * s), round(small.size[1] * s)),
                                        Image.BILINEAR))
        box = max((d[0] for d in faces.detect(small, detector="hog", upsample=1)),
                  key=lambda b: b[2])
        sources.append((small, box))
    for _ in range(160):
        small, (bx, by, bw, bh) = sources[rng.integers(len(sources))]
        pw, ph = (int(v) for v in rng.integers(40, 130, 2))
        x = int(rng.integers(0, small.shape[1] - pw))
        y = int(rng.integers(0, small.shape[0] - ph))
        # Keep well away from the face (and its hair).
        if x < bx + 1.5 * bw and x + pw > bx - 0.5 * bw and y < by + 1.5 * bh \
                and y + ph > by - 0.8 * bh:
            continue
        tx, ty = int(rng.integers(-pw // 2, width)), int(rng.integers(-ph // 2, height))
        patch = small[y : y + ph, x : x + pw]
        x0, y0 = max(tx, 0), max(ty, 0)
        x1, y1 = min(tx + pw, width), min(ty + ph, height)
        canvas[y0:y1, x0:x1] = patch[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
    for _ in range(40):  # poles, signs, railings
        colour = rng.integers(0, 256, 3)
        if rng.random() < 0.5:
            x, w = int(rng.integers(0, width)), int(rng.integers(2, 9))
            canvas[:, x : x + w] = colour
        else:
            y, h = int(rng.integers(0, height)), int(rng.integers(2, 7))
            x, w = int(rng.integers(0, width)), int(rng.integers(60, 300))
            canvas[y : y + h, x : x + w] = colour
    yy, xx = np.mgrid[0:height, 0:width]
    canvas *= (0.55 + 0.45 * xx / width)[:, :, None]  # darker on the left
    canvas += rng.normal(0, 5, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def squeeze(img: Image.Image, factor: float, flip: bool) -> tuple[Image.Image,
                                                                  np.ndarray]:
    """A crude yaw: the head cut squeezed to ``factor`` of its width, more on one side than
    the other (a horizontal perspective), in 16 strips. Returns the image and the map
    from old to new x, as ``np.interp`` points ``(old, new)``."""
    w, h = img.size
    nw = max(1, round(w * factor))
    # New x in [0, 1] -> old x in [0, 1]: u = x ** gamma compresses the far side.
    xs = np.linspace(0, 1, 17)
    us = xs ** 1.6
    if flip:
        us = 1 - us[::-1]
    mesh = []
    for k in range(16):
        box = (round(xs[k] * nw), 0, round(xs[k + 1] * nw), h)
        ua, ub = us[k] * w, us[k + 1] * w
        mesh.append((box, (ua, 0, ua, h, ub, h, ub, 0)))
    out = img.transform((nw, h), Image.MESH, mesh, Image.BILINEAR)
    return out, np.stack([us * w, xs * nw])


def crowd_hard(cuts: dict, gan: list, photos: dict[str, np.ndarray], seed: int) -> dict:
    """A crowd collage of small faces (24 to 60 px, smaller at the back) with the ways
    real crowd faces get hard: tilt, blur, dim light, occluders, a (simulated) turned
    head, the DCGAN's own turned faces; on a cluttered backdrop. Returns the truth."""
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    size = (900, 600)
    canvas = Image.fromarray(busy_background(photos, size, seed))
    rows = [(40, 24, 26, 9), (110, 27, 32, 9), (190, 33, 38, 8), (285, 39, 45, 7),
            (390, 46, 53, 6), (505, 54, 60, 5)]
    real = ["obama", "biden", "astronaut", "obama2", "obama3"]
    truth: list[dict] = []
    layers: list[np.ndarray] = []
    k = 0
    for cy_row, w_lo, w_hi, count in rows:
        xs = np.linspace(0, size[0], count + 1)[:-1] + size[0] / count / 2
        for i in range(count):
            width = int(rng.integers(w_lo, w_hi + 1))
            use_gan = k % 3 == 1
            cut, box = gan[k] if use_gan else cuts[real[k % 5]]
            if not use_gan:  # a tighter head-and-shoulders cut than the collages'
                x, y, w, _ = box
                left, top = max(0, round(x - 0.45 * w)), max(0, round(y - 0.75 * w))
                cut = cut.crop((left, top, round(x + 1.45 * w), round(y + 1.7 * w)))
                box = (x - left, y - top, w, box[3])
            effects = []
            s = width / box[2]
            img = cut.resize((max(1, round(cut.size[0] * s)), max(1, round(cut.size[1] * s))),
                             Image.LANCZOS)
            fx, fy = (box[0] + box[2] / 2) * s, (box[1] + box[3] / 2) * s  # face centre
            alpha = Image.new("L", img.size, 0)
            ImageDraw.Draw(alpha).rounded_rectangle(
                [0, 0, img.size[0] - 1, img.size[1] - 1], radius=min(img.size) // 3, fill=255)
            alpha = alpha.filter(ImageFilter.GaussianBlur(max(1, width / 12)))
            if width >= 34 and k % 7 == 3:  # a turned head (simulated)
                factor = 0.62
                flip = bool(rng.integers(2))
                img, (old, new) = squeeze(img, factor, flip)
                alpha, _ = squeeze(alpha, factor, flip)
                fx = float(np.interp(fx, old, new))
                width = round(width * factor)
                effects.append("turned")
            if k % 5 == 2:
                occ = ImageDraw.Draw(img)
                x0, y0 = fx - width / 2, fy - width / 2
                colour = tuple(int(v) for v in rng.integers(20, 230, 3))
                if k % 2:  # a scarf or mask over the lower third
                    occ.rectangle([x0 - 2, y0 + 0.62 * width, x0 + width + 2, y0 + width + 4],
                                  fill=colour)
                else:  # a pole or another head in front of one side
                    side = x0 - 2 if rng.integers(2) else x0 + 0.65 * width
                    occ.rectangle([side, y0 - width, side + 0.37 * width, y0 + 2 * width],
                                  fill=colour)
                effects.append("occluded")
            if k % 4 == 1:
                img = img.filter(ImageFilter.GaussianBlur(width / 22))
                effects.append("blurred")
            if k % 4 == 3:
                arr = np.asarray(img, np.float64) * 0.5
                arr += rng.normal(0, 3, arr.shape)
                img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
                effects.append("dim")
            angle = 0.0
            if k % 3 == 0 and k % 6:
                angle = float(rng.choice([-50, -40, -30, 30, 40, 50]))
            elif k % 6 == 0:
                angle = float(rng.integers(-12, 13))
            if abs(angle) >= 25:
                effects.append("tilted")
            if angle:
                dx, dy = fx - img.size[0] / 2, fy - img.size[1] / 2
                img = img.rotate(angle, resample=Image.BICUBIC, expand=True)
                alpha = alpha.rotate(angle, resample=Image.BICUBIC, expand=True)
                a = np.radians(angle)
                fx = img.size[0] / 2 + dx * np.cos(a) + dy * np.sin(a)
                fy = img.size[1] / 2 - dx * np.sin(a) + dy * np.cos(a)
            cx = float(xs[i] + rng.integers(-12, 13))
            cy = float(cy_row + rng.integers(-8, 9))
            at = (round(cx - fx), round(cy - fy))
            canvas.paste(img, at, alpha)
            layer = Image.new("L", size, 0)
            layer.paste(alpha, at)
            layers.append(np.asarray(layer) > 127)
            truth.append({"centre": [round(cx), round(cy)], "width": width, "angle": angle,
                          "source": f"dcgan seed {100 + k}" if use_gan else real[k % 5],
                          "effects": effects})
            k += 1
    # Heads pasted later (further front) hide part of some faces: say how much.
    for n, face in enumerate(truth):
        (cx, cy), half = face["centre"], face["width"] / 2
        window = (slice(max(0, round(cy - half)), round(cy + half)),
                  slice(max(0, round(cx - half)), round(cx + half)))
        hidden = np.zeros(layers[n][window].shape, bool)
        for later in layers[n + 1 :]:
            hidden |= later[window]
        face["hidden"] = round(float(hidden.mean()), 2)
        if face["hidden"] >= 0.15 and "occluded" not in face["effects"]:
            face["effects"].append("occluded")
    save_jpeg(canvas, "crowd_hard.jpg", quality=70)
    return {"faces": truth}


def main(src: str) -> None:
    src_dir = Path(src)
    truth: dict[str, dict] = {}
    photos = {}
    for stem in ("obama", "biden", "obama2", "obama3"):
        img = Image.open(src_dir / f"{stem}.jpg").convert("RGB")
        photos[stem] = np.asarray(img)
    from skimage import data

    photos["astronaut"] = data.astronaut()

    cuts = {k: head(v) for k, v in photos.items()}
    c = cuts
    # Single portraits: head and shoulders with a face about 120 px wide.
    for stem in ("obama", "biden", "obama2"):
        cut, box = cuts[stem]
        s = 120 / box[2]
        img = cut.resize((round(cut.size[0] * s), round(cut.size[1] * s)), Image.LANCZOS)
        save_jpeg(img, f"{stem}.jpg")
        truth[f"{stem}.jpg"] = {"faces": 1}
    save_jpeg(Image.fromarray(photos["astronaut"]), "astronaut.jpg", quality=85)
    truth["astronaut.jpg"] = {"faces": 1}
    truth["group.jpg"] = collage("group.jpg", (720, 420), [
        (*c["obama"], 130, 20, 60, 0.0),
        (*c["biden"], 90, 250, 40, 0.0),
        (*c["astronaut"], 80, 420, 90, 20.0),
        (*c["obama2"], 60, 590, 60, -15.0),
        (*c["obama3"], 48, 280, 260, 0.0),
        (*c["biden"], 44, 480, 290, 0.0),
    ], seed=1)
    items = []
    keys = ["obama", "biden", "astronaut", "obama2", "obama3"]
    widths = [40, 44, 48, 52, 56]
    for k in range(12):
        row, col = divmod(k, 6)
        items.append((*c[keys[k % 5]], widths[(k * 2) % 5], 15 + col * 105, 20 + row * 150,
                      0.0))
    truth["crowd.jpg"] = collage("crowd.jpg", (650, 330), items, seed=2)
    # Beyond the defaults' reach: strong rotations, faces under 40 px, a face cut by the
    # image border.
    truth["hard.jpg"] = collage("hard.jpg", (720, 360), [
        (*c["obama"], 80, 10, 40, 30.0),
        (*c["biden"], 80, 200, 30, -35.0),
        (*c["astronaut"], 80, 400, 20, 45.0),
        (*c["obama2"], 36, 60, 260, 0.0),
        (*c["obama3"], 32, 200, 270, 0.0),
        (*c["biden"], 28, 330, 280, 0.0),
        (*c["obama"], 90, 600, 150, 0.0),
    ], seed=3)

    # Synthetic 64x64 faces from the DCGAN of gan-face-generate, seeds 0..9, in a strip.
    arr = dcgan_faces(range(10))
    if not ONLY or "gan_faces.png" in ONLY:
        Image.fromarray(np.concatenate(arr, axis=1)).save(HERE / "gan_faces.png",
                                                                  optimize=True)
        print(f"gan_faces.png: {(HERE / 'gan_faces.png').stat().st_size // 1024} KB")
    truth["gan_faces.png"] = {"faces": 10, "layout": "10 faces of 64x64 side by side, seeds 0..9"}

    # Small faces made hard in the ways of real crowds.
    gan = [gan_cut(f) for f in dcgan_faces(range(100, 100 + 44))]
    truth["crowd_hard.jpg"] = crowd_hard(cuts, gan, photos, seed=4)

    if ONLY:  # keep the other files' entries
        old = json.loads((HERE / "faces.json").read_text())
        truth = {**old, **{k: v for k, v in truth.items() if k in ONLY}}
    (HERE / "faces.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    ONLY.update(sys.argv[2:])
    main(sys.argv[1])
