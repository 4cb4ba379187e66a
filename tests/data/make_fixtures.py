"""Rebuild the test photos in this folder (see README.md for their sources and licences).

    pip download --no-deps --no-binary :all: face_recognition==1.3.0 -d /tmp/fr
    tar xzf /tmp/fr/face_recognition-1.3.0.tar.gz -C /tmp/fr
    python tests/data/make_fixtures.py /tmp/fr/face_recognition-1.3.0/tests/test_images

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


def save_jpeg(img: Image.Image, name: str, quality: int = 88) -> None:
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
    import dcgan

    gen = dcgan.load_generator("cpu")
    x = dcgan.generate_faces(gen, range(10))
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    Image.fromarray(np.concatenate(list(arr), axis=1)).save(HERE / "gan_faces.png",
                                                              optimize=True)
    print(f"gan_faces.png: {(HERE / 'gan_faces.png').stat().st_size // 1024} KB")
    truth["gan_faces.png"] = {"faces": 10, "layout": "10 faces of 64x64 side by side, seeds 0..9"}
    (HERE / "faces.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
