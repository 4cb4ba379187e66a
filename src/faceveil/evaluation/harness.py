"""The evaluation loop: anonymize, recover and attack every image, one JSON line each.

For every image of a folder (aligned crops or photos): anonymize it under the key,
recover it with the key, try a random wrong key and a key one bit away from the right
one (refused on the normal file; on a deniable anonymization of the same faces they
yield faces, which are measured), recover after JPEG compression at each quality with
the metadata passed separately, and anonymize it again under other keys (diversity).
Each image's numbers go to ``REPORT_DIR/results.jsonl`` as one line as soon as they
exist, so an interrupted run continues where it stopped;
:mod:`faceveil.evaluation.report` turns the lines into ``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import api, faces, identity, images, media
from ..diffusion.models import Backbone, resolve_device
from ..errors import FaceveilError, InputError, NoFaceError, WrongKeyError
from ..format.records import FaceData
from ..keys import KEY_BYTES, KeySource
from ..options import Options
from . import measures, protocol, realism
from .pairs import name_pairs, read_pairs
from .protocol import EXAMPLES, RECOGNIZER_NAMES, RESULTS, RUN

_CROP_MARGIN = 0.4  # example crops: the face box grown by this share of its side


# ---------------------------------------------------------------------------
# Inputs: images, pairs, keys, recognizers
# ---------------------------------------------------------------------------


def list_images(data_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Every image file under ``data_dir`` (recursively, sorted by relative path),
    leaving out anything under ``exclude`` (a report folder inside the data)."""
    if not data_dir.is_dir():
        raise InputError(f"{str(data_dir)!r} is not a folder of images")
    ex = exclude.resolve() if exclude is not None else None
    out = []
    for p in sorted(data_dir.rglob("*"), key=lambda q: q.relative_to(data_dir).as_posix()):
        if not p.is_file() or p.suffix.lower() not in media.IMAGE_SUFFIXES:
            continue
        if ex is not None and (p.resolve() == ex or ex in p.resolve().parents):
            continue
        out.append(p)
    return out


def resolve_key(key: KeySource | bytes | str | os.PathLike | None) -> KeySource:
    """The key to evaluate with: given, read from a key file, or (None) a random one
    that lives in memory only and is never written anywhere."""
    if key is None:
        return KeySource.from_bytes(secrets.token_bytes(KEY_BYTES))
    if isinstance(key, KeySource):
        return key
    if isinstance(key, (bytes, bytearray)):
        return KeySource.from_bytes(bytes(key))
    return KeySource.from_key_file(key)


def wrong_keys(key: KeySource) -> dict[str, KeySource]:
    """A random key of the same kind, and the key with one random bit flipped.

    Flipping the lowest bit of a byte keeps a UTF-8 passphrase valid UTF-8, so for
    passphrases the one-bit key flips the lowest bit of a random byte.
    """
    secret = bytearray(key.secret)
    if key.kind == "file":
        bit = secrets.randbelow(8 * len(secret))
        secret[bit // 8] ^= 1 << (bit % 8)
        random_key = KeySource.from_bytes(secrets.token_bytes(KEY_BYTES))
    else:
        secret[secrets.randbelow(len(secret))] ^= 1
        random_key = KeySource.from_passphrase(secrets.token_urlsafe(16))
    return {"random": random_key, "one_bit": KeySource(key.kind, bytes(secret))}


def build_recognizers(
    names: Sequence[str], facenet_weights: str | os.PathLike | None = None,
    arcface_weights: str | os.PathLike | None = None, device: str = "cpu",
) -> tuple[dict[str, identity.Recognizer], dict[str, dict]]:
    """The recognizers to measure with, by name, and a description of each of ``dlib``,
    ``facenet`` and ``arcface`` (``available`` false with a ``reason`` when its weights
    are missing or do not load).

    dlib's is always used; FaceNet and ArcFace are used whenever their weights are given
    (``names`` only has to be valid: naming one without weights is reported, not fatal).
    """
    unknown = sorted(set(names) - set(RECOGNIZER_NAMES))
    if unknown:
        raise InputError(f"unknown recognizer {unknown[0]!r}: choose among "
                         f"{', '.join(RECOGNIZER_NAMES)}")
    weights = {"facenet": facenet_weights, "arcface": arcface_weights}
    found: dict[str, identity.Recognizer] = {}
    info: dict[str, dict] = {}
    for name in RECOGNIZER_NAMES:  # all three are always described in metrics.json
        try:
            if name == "dlib":
                rec: identity.Recognizer = identity.DlibRecognizer()
            elif weights[name] is None:
                asked = "asked for but " if name in names else ""
                info[name] = {"available": False, "reason": f"{asked}no weights file given "
                              f"(--{name}-weights)"}
                continue
            elif name == "facenet":
                rec = identity.FaceNetRecognizer(weights[name], device=device)
            else:
                rec = identity.ArcFaceRecognizer(weights[name], device=device)
        except identity.WeightsError as e:
            info[name] = {"available": False, "reason": str(e)}
            continue
        found[name] = rec
        info[name] = {"available": True, "model": rec.name, "metric": rec.metric,
                      "threshold": rec.threshold}
    return found, info


def read_results(path: Path) -> list[dict]:
    """The result lines of a report folder, the last line of an image winning; a line
    cut short by an interruption is ignored (that image is evaluated again)."""
    if not path.exists():
        return []
    by_image: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("image"), str):
            by_image.pop(row["image"], None)  # keep insertion order = order of last write
            by_image[row["image"]] = row
    return list(by_image.values())


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """The pixels after a JPEG encode/decode at ``quality`` (Pillow's defaults otherwise:
    4:2:0 chroma subsampling), as a file that lost its PNG metadata chunk would be."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        return np.array(img.convert("RGB"))


# ---------------------------------------------------------------------------
# Geometry helpers: working resolution, face boxes, detection, landmarks
# ---------------------------------------------------------------------------


def aligned_face_box(backbone: Backbone, shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Where dlib's detector box sits in an aligned crop of the model's framing, scaled to
    an image of ``shape``: the same box for every version of the face, so identity and
    landmarks are compared at one place, whatever a detector makes of each version."""
    framing = (faces.Framing.from_dict(backbone.framing) if backbone.framing
               else faces.Framing.ffhq())
    return faces.framing_box(framing, int(shape[1]), int(shape[0]))


def _landmark_shift(original: np.ndarray, other: np.ndarray, box: Sequence[int]) -> float | None:
    """Mean 68-landmark displacement between two versions of a face, predicted by dlib in
    the same box, in units of the original's inter-ocular distance."""
    a, s = protocol.work_image(original)
    b, _ = protocol.work_image(other)
    wbox = protocol.scale_box(box, s)
    return measures.landmark_shift(faces.landmarks68(a, wbox), faces.landmarks68(b, wbox))


def face_region_mask(face_data: Sequence[FaceData], shape: Sequence[int]
                     ) -> np.ndarray:
    """The union of the stored hard face masks (of a record opened with the key, e.g.
    ``api.recover(...).faces``), warped into the photo (H, W) bool: every pixel
    anonymization may have changed."""
    out = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    for face in face_data:
        hard = face.mask.astype(np.float32)
        warped, (rows, cols) = faces.footprint(hard, face.transform, shape)
        if warped.size:
            out[rows, cols] |= warped > 0
    return out


def compare(rec: identity.Recognizer, a: np.ndarray | None, b: np.ndarray | None) -> dict | None:
    """Distance, cosine and the recognizer's same-person decision for two embeddings
    (None when a face could not be embedded). Cosine-metric embeddings are normalized
    first, so their distance is the L2 distance of unit vectors."""
    if a is None or b is None:
        return None
    if rec.metric == "cosine":
        a = a / max(np.linalg.norm(a), 1e-12)
        b = b / max(np.linalg.norm(b), 1e-12)
    return {"distance": identity.distance(a, b), "cosine": identity.cosine(a, b),
            "match": bool(identity.matches(rec, a, b))}


def _crop_box(box: Sequence[int], shape: Sequence[int], aligned: bool) -> tuple[int, ...]:
    h, w = int(shape[0]), int(shape[1])
    if aligned:
        return (0, 0, w, h)
    x, y, bw, bh = box
    m = _CROP_MARGIN * max(bw, bh)
    x0, y0 = max(0, int(x - m)), max(0, int(y - m))
    x1, y1 = min(w, int(x + bw + m)), min(h, int(y + bh + m))
    return (x0, y0, x1 - x0, y1 - y0)


# ---------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------


@dataclass
class Context:
    """Everything the per-image evaluation needs, set up once per run."""

    backbone: Backbone
    key: KeySource
    wrong: dict[str, KeySource]
    recognizers: dict[str, identity.Recognizer]
    aligned: bool
    steps: int
    jpeg: tuple[int, ...]
    diversity_keys: int
    report_dir: Path
    keep_embeddings: bool = False
    options: Options = Options()  # anonymization settings (steps, method, context, ...)


def evaluate_image(ctx: Context, path: Path, name: str, example: int | None = None) -> dict:
    """Every measurement of one image, as the JSON-ready line stored in results.jsonl.

    ``status`` is ``"ok"``, ``"no_face"`` (nothing to anonymize) or ``"skipped"`` (the
    file cannot be read; ``reason`` says why).
    """
    try:
        loaded = images.load_image(path)
    except FaceveilError as e:
        return {"image": name, "status": "skipped", "reason": str(e)}
    original = loaded.pixels
    bb = ctx.backbone
    t0 = time.perf_counter()
    try:
        anon = api.anonymize(loaded, ctx.key, options=ctx.options, model=bb)
    except NoFaceError as e:
        return {"image": name, "status": "no_face", "reason": str(e)}
    t_anon = time.perf_counter() - t0
    record = anon.record
    n = len(anon.regions)

    t0 = time.perf_counter()
    back = api.recover(anon.pixels, ctx.key, meta=record, model=bb)
    recovered = back.pixels
    t_rec = time.perf_counter() - t0

    # A normal file must refuse every wrong key before any model work.
    refused = {}
    for kind, wk in ctx.wrong.items():
        try:
            api.recover(anon.pixels, wk, meta=record, model=bb)
            refused[kind] = False
        except WrongKeyError:
            refused[kind] = True
    versions: dict[str, np.ndarray] = {"anonymized": anon.pixels, "recovered": recovered}
    # What a wrong key yields is only observable on a deniable file (a normal one refuses
    # it, and seals the geometry a wrong key would need): anonymize the same faces
    # deniably and recover that with each wrong key.
    twin = api.anonymize(loaded, ctx.key, options=ctx.options.replace(lossless=False,
                                                                       deniable=True),
                         model=bb, regions=anon.regions)
    for kind, wk in ctx.wrong.items():
        versions[f"wrong_{kind}"] = api.recover(twin.pixels, wk, meta=twin.record, model=bb,
                                                deniable=True).pixels
    jpeg_failed = {}
    for q in ctx.jpeg:
        try:
            versions[f"jpeg_{q}"] = api.recover(jpeg_roundtrip(anon.pixels, q), ctx.key,
                                                meta=record, model=bb).pixels
        except FaceveilError as e:
            jpeg_failed[str(q)] = str(e)
    others = [
        api.anonymize(loaded, resolve_key(None), options=ctx.options, model=bb,
                      regions=anon.regions).pixels
        for _ in range(max(0, ctx.diversity_keys - 1))
    ]

    face = face_region_mask(back.faces, original.shape)
    fidelity = {v: measures.fidelity(px, original, face) for v, px in versions.items()}
    fidelity["anonymized"]["psnr_outside"] = measures.psnr(anon.pixels, original, ~face)

    boxes = ([aligned_face_box(bb, original.shape)] if ctx.aligned
             else [tuple(int(v) for v in r.box) for r in anon.regions])
    shown = {"original": original, "anonymized": anon.pixels, "recovered": recovered}
    scores = realism.face_scores(shown, boxes, cnn_versions=("original", "anonymized"))
    primary = max(range(n), key=lambda i: boxes[i][2] * boxes[i][3])
    per_face = []
    embeddings: dict[str, dict[str, list[float]]] = {}
    for i, box in enumerate(boxes):
        ident: dict[str, dict] = {}
        for rname, rec in ctx.recognizers.items():
            e0 = rec.embed(original, box)
            embs = {v: rec.embed(px, box) for v, px in versions.items()}
            entry = {v: compare(rec, e0, e) for v, e in embs.items()}
            anon_versions = [embs["anonymized"]] + [rec.embed(px, box) for px in others]
            pairs = [compare(rec, a, b) for k, a in enumerate(anon_versions)
                     for b in anon_versions[k + 1:]]
            pairs = [p for p in pairs if p is not None]
            if pairs:
                entry["diversity"] = {
                    "distance": float(np.mean([p["distance"] for p in pairs])),
                    "cosine": float(np.mean([p["cosine"] for p in pairs])),
                    "match": float(np.mean([p["match"] for p in pairs])),
                    "pairs": len(pairs),
                }
            ident[rname] = entry
            if ctx.keep_embeddings and i == primary:
                embeddings[rname] = {
                    v: None if e is None else np.round(e, 6).tolist()
                    for v, e in (("original", e0), ("anonymized", embs["anonymized"]),
                                 ("recovered", embs["recovered"]))
                }
        try:
            shift = _landmark_shift(original, anon.pixels, box)
        except Exception:  # noqa: BLE001 - a landmark failure must not lose the image
            shift = None
        f = back.faces[i]
        per_face.append({
            "box": list(box),
            "identity": ident,
            # Found: HOG scores 0 or more (dlib's threshold) at the face's box.
            "detected": {v: s is not None and s >= 0 for v, s in scores[i]["hog"].items()},
            "scores": scores[i],
            "delta_e": realism.region_delta_e(original, anon.pixels, f.mask, f.transform),
            "landmark_shift": shift,
        })

    line = {
        "image": name,
        "status": "ok",
        "size": [int(original.shape[1]), int(original.shape[0])],
        "faces": n,
        # Which inversion/recovery the API used (its defaults may change between releases).
        "sampler": {k: v for k, v in record.sampler.to_json().items() if k != "timesteps"},
        "time": {"anonymize": t_anon / n, "recover": t_rec / n},
        "refused": refused,
        "fidelity": fidelity,
        "jpeg_failed": jpeg_failed,
        "per_face": per_face,
        "notes": anon.notes,
    }
    if embeddings:
        line["embeddings"] = embeddings
    if example is not None:
        _save_example(ctx, example, boxes[primary], original, versions, others)
        line["example"] = example
    return line


def _save_example(ctx: Context, index: int, box: Sequence[int], original: np.ndarray,
                  versions: dict[str, np.ndarray], others: list[np.ndarray]) -> None:
    """Crops of the main face for the report's example grid (EXAMPLES/NNN-kind.png)."""
    folder = ctx.report_dir / EXAMPLES
    folder.mkdir(exist_ok=True)
    x, y, w, h = _crop_box(box, original.shape, ctx.aligned)
    shots = {"original": original, "anonymized": versions["anonymized"],
             "recovered": versions["recovered"], "wrong_random": versions.get("wrong_random")}
    if others:
        shots["other_key"] = others[0]
    for kind, px in shots.items():
        if px is not None:
            Image.fromarray(np.ascontiguousarray(px[y:y + h, x:x + w])).save(
                folder / f"{index:03d}-{kind}.png")


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def _warm_up(backbone: Backbone, recs: dict[str, identity.Recognizer]) -> None:
    """Load dlib's models and run the network once, so that the first image's timings
    do not include loading and lazy initialization."""
    import torch

    blank = np.full((64, 64, 3), 128, dtype=np.uint8)
    faces.detect(blank, detector="hog", upsample=0, rotations=())
    faces.landmarks68(blank, (8, 8, 48, 48))
    for rec in recs.values():
        rec.embed(blank, (8, 8, 48, 48))
    z = torch.zeros((1, *backbone.latent_shape), device=backbone.device, dtype=backbone.dtype)
    backbone.predict(z, 0)


def _check_run(report_dir: Path, config: dict) -> None:
    """Refuse to mix results made with other settings into one report."""
    path = report_dir / RUN
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            before = None
        if isinstance(before, dict):
            diff = [f"{k}: {before.get(k)!r} there, {v!r} now" for k, v in config.items()
                    if before.get(k) != v]
            if diff:
                raise InputError(
                    f"{str(report_dir)!r} holds results made with other settings "
                    f"({'; '.join(diff)}); use another report folder, or delete this one "
                    "to start over")
            return
    media.write_atomic(path, (json.dumps(config, indent=2) + "\n").encode(), replace=True)


def _append(fh, row: dict) -> None:
    fh.write(json.dumps(measures.json_safe(row), separators=(",", ":")) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def evaluate(
    data_dir: str | os.PathLike,
    report_dir: str | os.PathLike,
    *,
    key: KeySource | bytes | str | os.PathLike | None = None,
    model: Backbone | str | None = None,
    aligned: bool = False,
    pairs: str | os.PathLike | None = None,
    pairs_by_name: bool = False,
    limit: int | None = None,
    recognizers: Sequence[str] = ("dlib",),
    facenet_weights: str | os.PathLike | None = None,
    arcface_weights: str | os.PathLike | None = None,
    jpeg: Sequence[int] = (100, 90, 75, 50),
    steps: int | None = None,
    progress: bool = True,
    diversity_keys: int = 3,
    examples: int = 8,
    device: str | None = None,
    method: str | None = None,
    context: str | None = None,
    lossless: bool | None = None,
) -> dict:
    """Evaluate anonymization, recovery and key security on a folder of images.

    Writes ``results.jsonl`` (one line per image, appended as produced; a rerun skips the
    images already there), then ``metrics.json``, ``report.md`` and its PNG files, all in
    ``report_dir``. See the README's "Evaluation" section for the schema.

    Args:
        data_dir: folder of images (searched recursively); aligned face crops with
            ``aligned``, otherwise photos in which every face is found.
        report_dir: where results and the report go (created if needed).
        key: a :class:`~faceveil.keys.KeySource`, 32 raw bytes or a key file; None makes a
            random key that only lives in memory.
        model: backbone, preset, folder or hub id (default: the default model).
        pairs: an LFW-style pairs file: adds verification (TAR at FAR = 1e-3 and at the
            recognizer's own threshold) and restricts the images to those the pairs name.
        pairs_by_name: pair the images by name instead (``PERSON_VARIANT.ext``:
            :func:`faceveil.evaluation.pairs.name_pairs`): the anonymized first image of a
            person (``001_neutral``) against the original others (``001_smiling``).
        limit: evaluate only the first ``limit`` images (sorted by path).
        recognizers: names among ``dlib`` (always used), ``facenet``, ``arcface``; the
            latter two need their weights files and are reported unavailable without.
        jpeg: JPEG qualities at which recovery is tried.
        steps: DDIM steps (None: anonymize's default for the chosen settings).
        progress: show a progress bar (stderr).
        diversity_keys: how many keys each face is anonymized under for the diversity
            measure (1 or less: not measured).
        examples: how many faces are saved for the example grid.
        device: ``cpu``, ``cuda`` or None/``auto``.
        method, context, lossless: anonymization settings passed to
            :func:`faceveil.api.anonymize` when given (None: its defaults, which seal the
            originals); the paper's protocol is ``method="plain", context="own",
            lossless=False``. Recovery uses what each file
            says, as ``faceveil recover`` does.

    Returns:
        The metrics (as written to ``metrics.json``).

    Raises:
        InputError: no images, an unreadable pairs file, a report folder made with other
            settings, or an unknown recognizer.
    """
    from . import report

    data = Path(data_dir)
    out = Path(report_dir)
    if steps is not None and steps < 1:
        raise InputError("steps must be at least 1")
    jpeg = tuple(int(q) for q in jpeg)
    if any(not 1 <= q <= 100 for q in jpeg):
        raise InputError("JPEG qualities must lie in 1..100")
    files = list_images(data, exclude=out)
    pair_list = None
    if pairs is not None and pairs_by_name:
        raise InputError("pairs come from a pairs file or from the names, not both")
    if pairs is not None or pairs_by_name:
        names = {p.relative_to(data).as_posix(): p for p in files}
        pair_list = name_pairs(list(names)) if pairs_by_name else read_pairs(pairs, data)
        wanted = list(dict.fromkeys(n for a, b, _ in pair_list for n in (a, b)))
        missing = [n for n in wanted if n not in names]
        files = [names[n] for n in wanted if n in names]
        if missing and not files:
            raise InputError(f"none of the images named in {str(pairs)!r} is in "
                             f"{str(data)!r} (first: {missing[0]})")
    if limit is not None:
        files = files[: max(0, int(limit))]
    if not files:
        raise InputError(f"no images in {str(data)!r}")

    device = resolve_device(device)
    backbone = api.get_model(model, device)
    recs, rec_info = build_recognizers(recognizers, facenet_weights, arcface_weights, device)
    the_key = resolve_key(key)
    _warm_up(backbone, recs)
    out.mkdir(parents=True, exist_ok=True)
    # Only the settings given are passed on, so the API's own defaults apply otherwise.
    options = {k: v for k, v in (("method", method), ("context", context),
                                 ("lossless", lossless)) if v is not None}
    anon_options = Options.of(aligned=bool(aligned), steps=steps, device=device, **options)
    steps = anon_options.sampler.steps
    config = {"model_sha256": backbone.sha256, "model_id": backbone.model_id, "steps": steps,
              "aligned": bool(aligned), "jpeg": list(jpeg), "recognizers": sorted(recs),
              "diversity_keys": int(diversity_keys), "pairs": pair_list is not None,
              "options": options}
    _check_run(out, config)

    ctx = Context(backbone=backbone, key=the_key, wrong=wrong_keys(the_key),
                  recognizers=recs, aligned=aligned, steps=steps, jpeg=jpeg,
                  diversity_keys=int(diversity_keys), report_dir=out,
                  keep_embeddings=True,  # for verification and the two-sample test
                  options=anon_options)
    results_path = out / RESULTS
    previous = read_results(results_path)
    done = {r["image"] for r in previous}
    n_examples = sum(1 for r in previous if "example" in r)
    # Example files are numbered on from the highest number on disk, never reused.
    next_example = 1 + max((int(r["example"]) for r in previous if "example" in r), default=-1)
    faces_done = sum(int(r.get("faces", 0)) for r in previous if r.get("status") == "ok")
    named = [(p, p.relative_to(data).as_posix()) for p in files]
    todo = [(p, n) for p, n in named if n not in done]

    from tqdm import tqdm

    t_start = time.perf_counter()
    bar = tqdm(total=len(named), initial=len(named) - len(todo), desc="eval", unit="image",
               disable=not progress, dynamic_ncols=True)
    # A line cut short by a crash must not glue onto the next one.
    if results_path.exists() and results_path.stat().st_size:
        with open(results_path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            needs_newline = fh.read(1) != b"\n"
    else:
        needs_newline = False
    with open(results_path, "a", encoding="utf-8") as fh:
        if needs_newline:
            fh.write("\n")
        try:
            for path, name in todo:
                bar.set_postfix_str(f"faces={faces_done} {name}", refresh=False)
                example = next_example if n_examples < examples else None
                row = evaluate_image(ctx, path, name, example)
                _append(fh, row)
                if row["status"] == "ok":
                    faces_done += row["faces"]
                if "example" in row:
                    n_examples += 1
                    next_example += 1
                bar.update(1)
                bar.set_postfix_str(f"faces={faces_done}", refresh=True)
        finally:
            bar.close()
    elapsed = time.perf_counter() - t_start

    wanted_names = {n for _, n in named}
    rows = [r for r in read_results(results_path) if r["image"] in wanted_names]
    settings = {"data": str(data), "aligned": bool(aligned),
                "pairs": "by name" if pairs_by_name else None if pairs is None else str(pairs),
                "limit": limit, "jpeg": list(jpeg), "options": options,
                "diversity_keys": int(diversity_keys), "key": "given" if key is not None
                else "random (in memory, not saved)", "psnr_cap_db": measures.PSNR_CAP}
    metrics = report.aggregate(rows, backbone=backbone, steps=steps, device=device,
                               recognizers=rec_info, settings=settings, pairs=pair_list,
                               elapsed=elapsed)
    report.write(out, metrics, rows)
    return metrics
