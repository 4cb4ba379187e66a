"""Real faces for training: photos aligned to a model's framing, cached as one uint8 array.

A photo is framed exactly as faceveil's pipeline frames a face
(``faceveil.faces.regions``): dlib's 68 landmarks in the detector's box, the
least-squares similarity of their 5 derived points onto the model's framing, moved so
the crop holds the whole facial mask (``faces.crop_transform``), and the same
resampling (``faces.extract``). Only the
detection differs: the small CelebA photos (89 x 109 px, faces about 45 px wide) are
upsampled (bicubic, ``UPSAMPLE`` x) for dlib's HOG detector and the shape predictor,
and the landmarks are mapped back to the photo, which is then resampled once.

A photo where the detector finds no face, or several, is skipped and counted, as is
one that cannot be decoded: building the cache never stops on a bad image.

The cache (``celeba64.npy``: ``(N, 64, 64, 3)`` uint8, RGB, in the archive's sorted
name order) and its record (``celeba64.json``: names, counts, framing) are written
atomically, outside the repository::

    python training/celeba.py --archive ../shared/data/celeba10k/celeba10k.tar \\
        --framing src/faceveil/weights/face64-v2 --out /work/train-v3/celeba64.npy

Training (``train.py --real``) holds out the last ``HOLDOUT`` faces of the cache:
they are never trained on, and the memorization check (``memorization.py``) uses
them as a second control beside the FRL portraits.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from faceveil import faces

IMAGE_SIZE = 64
UPSAMPLE = 2
#: The last faces of the cache, never trained on (a control for the memorization check).
HOLDOUT = 300


def load_framing(model_dir: Path) -> faces.Framing:
    """The crop framing of an exported model folder (its ``faceveil.json``)."""
    info = json.loads((Path(model_dir) / "faceveil.json").read_text())
    return faces.Framing.from_dict(info["framing"])


def align_photo(
    image: np.ndarray, framing: faces.Framing, size: int = IMAGE_SIZE, upsample: int = UPSAMPLE
) -> tuple[np.ndarray | None, str]:
    """One photo's face as the model's ``size`` x ``size`` crop.

    Args:
        image: ``HxWx3`` uint8 RGB photo.
        framing: the model's crop framing.
        size: crop side in pixels.
        upsample: factor the photo is enlarged by (bicubic) for detection and landmarks.

    Returns:
        ``(crop, "ok")`` with ``crop`` a ``(size, size, 3)`` uint8 array, or
        ``(None, reason)`` with reason ``"no face"`` or ``"several faces"``.
    """
    img = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    big = img
    if upsample != 1:
        big = np.asarray(Image.fromarray(img).resize(
            (img.shape[1] * upsample, img.shape[0] * upsample), Image.Resampling.BICUBIC))
    found = faces.dlib_model("hog")(big, 1)
    if len(found) == 0:
        return None, "no face"
    if len(found) > 1:
        return None, "several faces"
    r = found[0]
    box = (r.left(), r.top(), r.right() - r.left() + 1, r.bottom() - r.top() + 1)
    lm = faces.landmarks68(big, box)
    lm = (lm + 0.5) / upsample - 0.5  # pixel centres at integers in both images
    crop = faces.extract(img, faces.crop_transform(lm, framing, size), size)
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8), "ok"


def archive_photos(archive: Path, limit: int = 0) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of the JPEG/PNG files of a tar archive, in sorted name order."""
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()
                          and m.name.lower().endswith((".jpg", ".jpeg", ".png"))),
                         key=lambda m: m.name)
        for m in members[:limit or None]:
            f = tar.extractfile(m)
            if f is not None:
                yield m.name, f.read()


def align_all(
    photos: Iterable[tuple[str, bytes]], framing: faces.Framing, size: int = IMAGE_SIZE,
    progress: int = 0,
) -> tuple[np.ndarray, list[str], Counter]:
    """Align every photo; skip (and count) the ones without exactly one face.

    Returns:
        ``(crops (N, size, size, 3) uint8, names of the kept photos, counts)`` where
        ``counts`` has ``"ok"``, ``"no face"``, ``"several faces"``, ``"unreadable"``.
    """
    crops, names, counts = [], [], Counter()
    t0 = time.time()
    for i, (name, data) in enumerate(photos):
        try:
            with Image.open(io.BytesIO(data)) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError):
            counts["unreadable"] += 1
            continue
        crop, reason = align_photo(rgb, framing, size)
        counts[reason] += 1
        if crop is not None:
            crops.append(crop)
            names.append(name)
        if progress and (i + 1) % progress == 0:
            print(f"{i + 1} photos, {dict(counts)}, {time.time() - t0:.0f} s", flush=True)
    arr = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return arr, names, counts


def save_cache(path: Path, crops: np.ndarray, record: dict) -> None:
    """Write ``path`` (.npy) and its ``.json`` record, each atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, crops)
    os.replace(tmp, path)
    meta = path.with_suffix(".json")
    tmp_meta = meta.with_name(meta.name + ".tmp")
    tmp_meta.write_text(json.dumps(record))
    os.replace(tmp_meta, meta)


def load_cache(path: Path) -> np.ndarray:
    """The ``(N, 64, 64, 3)`` uint8 faces of a cache written by :func:`save_cache`."""
    arr = np.load(path)
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: expected (N, H, W, 3) uint8 faces, got {arr.shape} {arr.dtype}")
    return arr


def split(count: int, holdout: int = HOLDOUT) -> tuple[range, range]:
    """``(training indices, held-out indices)`` of a cache of ``count`` faces."""
    holdout = min(holdout, count // 10)
    return range(0, count - holdout), range(count - holdout, count)


class RealFaces:
    """Aligned real faces on the training device, drawn by a step's random generator.

    Args:
        crops: ``(N, H, W, 3)`` uint8 faces (a cache from :func:`load_cache`).
        indices: the faces that may be drawn (the training split).
        device: where the faces live (uint8, 12 KB a face).
    """

    def __init__(self, crops: np.ndarray, indices: Iterable[int], device: torch.device) -> None:
        idx = np.asarray(list(indices), dtype=np.int64)
        if idx.size == 0:
            raise ValueError("no real faces to train on")
        self.faces = torch.from_numpy(np.ascontiguousarray(crops[idx])).permute(0, 3, 1, 2)
        self.faces = self.faces.contiguous().to(device)

    def __len__(self) -> int:
        return self.faces.shape[0]

    def images(self, index: torch.Tensor) -> torch.Tensor:
        """Faces ``index`` as ``(n, 3, H, W)`` float in [-1, 1]."""
        return self.faces[index].float() / 127.5 - 1.0

    @torch.no_grad()
    def draw(self, count: int, gen: torch.Generator) -> torch.Tensor:
        """``count`` faces drawn uniformly (with replacement), each flipped left-right
        with probability 1/2, by ``gen``: ``(count, 3, H, W)`` float in [-1, 1]."""
        device = self.faces.device
        index = torch.randint(0, len(self), (count,), generator=gen, device=device)
        flip = torch.rand(count, generator=gen, device=device) < 0.5
        x = self.images(index)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def main(argv: list[str] | None = None) -> int:
    """Build the aligned cache of an archive of photos."""
    p = argparse.ArgumentParser(description="Align photos to a model's framing, cache as .npy")
    p.add_argument("--archive", type=Path, required=True, help="tar of JPEG photos")
    p.add_argument("--framing", type=Path, required=True, help="model folder (faceveil.json)")
    p.add_argument("--out", type=Path, required=True, help="cache file (.npy)")
    p.add_argument("--limit", type=int, default=0, help="first N photos only (0: all)")
    args = p.parse_args(argv)
    framing = load_framing(args.framing)
    t0 = time.time()
    crops, names, counts = align_all(archive_photos(args.archive, args.limit), framing,
                                     progress=500)
    record = {"archive": str(args.archive), "names": names, "counts": dict(counts),
              "framing_from": str(args.framing), "upsample": UPSAMPLE, "size": IMAGE_SIZE,
              "seconds": round(time.time() - t0, 1)}
    save_cache(args.out, crops, record)
    print(json.dumps({k: v for k, v in record.items() if k != "names"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
