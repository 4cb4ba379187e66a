"""From per-image result lines to ``metrics.json``, ``report.md`` and its pictures.

``metrics.json`` sections: ``anonymized``, ``recovered``, ``wrong_key`` (``random``,
``one_bit``), ``jpeg`` (one entry per quality), ``time``, plus ``original``,
``verification``, ``realism`` (:mod:`faceveil.evaluation.realism_report`), ``model``,
``steps``, ``versions``, ``date``, ``count``. Identity
numbers sit under the recognizer's name (``dlib``, ``facenet``, ``arcface``), fidelity
under ``psnr``, ``ssim`` and ``mae`` (each with ``face`` and ``image``). The README's
"Evaluation" section documents every field.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .. import __version__, media
from ..diffusion.models import Backbone
from . import measures, realism_report
from .protocol import EXAMPLES, RECOGNIZER_NAMES, WRONG_KINDS

SCHEMA = 1
FAR = 1e-3
METRICS = "metrics.json"
REPORT = "report.md"
GRID = "examples.png"
CELL = 128  # side of one example in the grid, pixels

# The reference implementation's published numbers (METHOD.md section 3): LFW, the
# authors' unconditional FFHQ LDM, mask recomputed on the anonymized face. Not the same
# protocol as a faceveil run (other data, model, recognizers and detector).
REFERENCE = {
    "cosine_anonymized": {"facenet": 0.078, "arcface": 0.029},
    "cosine_recovered": {"facenet": 0.745, "arcface": 0.692},
    "tar": {"arcface": {"clean": 0.991, "anonymized": 0.006, "recovered": 0.705}},
    "psnr": 20.70,
    "ssim": 0.857,
    "mae": 0.107,
    "fid": {"anonymized": 55.2, "recovered": 33.2},
    "detection": {"anonymized": 1.00, "recovered": 0.999},
    "cosine_wrong_key": {"facenet": 0.037, "arcface": 0.014},
}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"faceveil": __version__, "python": platform.python_version(),
                                  "torch": torch.__version__, "numpy": np.__version__}
    for name in ("diffusers", "dlib"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a version is informative, never required
            out[name] = None
    return out


# ---------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------


def _faces(rows: Sequence[dict]) -> list[dict]:
    return [f for r in rows if r.get("status") == "ok" for f in r["per_face"]]


def _identity(rows: Sequence[dict], version: str, recognizers: dict[str, dict]) -> dict:
    """Per recognizer: distance and cosine statistics of (original, ``version``) pairs, and
    the share the recognizer calls the same person (``match_rate``) or not
    (``beyond_threshold``)."""
    out: dict[str, dict] = {}
    for name in RECOGNIZER_NAMES:
        info = recognizers.get(name, {"available": False, "reason": "not configured"})
        if not info.get("available"):
            out[name] = {"available": False, "reason": info.get("reason")}
            continue
        comps = [f["identity"][name].get(version) for f in _faces(rows)
                 if name in f["identity"]]
        comps = [c for c in comps if c is not None]
        match = measures.rate(c["match"] for c in comps)
        out[name] = {
            "available": True,
            "distance": measures.stats(c["distance"] for c in comps),
            "cosine": measures.stats(c["cosine"] for c in comps),
            "match_rate": match,
            "beyond_threshold": None if match is None else 1.0 - match,
            "metric": info["metric"],
            "threshold": info["threshold"],
            "n": len(comps),
        }
    return out


def _fidelity(rows: Sequence[dict], version: str) -> dict:
    fid = [r["fidelity"][version] for r in rows
           if r.get("status") == "ok" and version in r["fidelity"]]
    return {m: {region: measures.stats(f.get(f"{m}_{region}") for f in fid)
                for region in ("face", "image")} for m in ("psnr", "ssim", "mae")}


def _detection(rows: Sequence[dict], version: str) -> float | None:
    return measures.rate(f["detected"].get(version) for f in _faces(rows))


def _diversity(rows: Sequence[dict], recognizers: dict[str, dict], keys: int) -> dict:
    out: dict = {"keys": keys}
    if keys < 2:
        return out
    for name in RECOGNIZER_NAMES:
        if not recognizers.get(name, {}).get("available"):
            continue
        d = [f["identity"][name]["diversity"] for f in _faces(rows)
             if "diversity" in f["identity"].get(name, {})]
        out[name] = {"distance": measures.stats(x["distance"] for x in d),
                     "cosine": measures.stats(x["cosine"] for x in d),
                     "match_rate": measures.stats(x["match"] for x in d)["mean"],
                     "n": len(d)}
    return out


def _verification(rows: Sequence[dict], pairs: Sequence[tuple[str, str, bool]] | None,
                  recognizers: dict[str, dict]) -> dict | None:
    """TAR at FAR = 1e-3 on verification pairs: the threshold comes from the clean
    impostor pairs; a genuine pair (a, b) is scored clean (a vs b), anonymized
    (anonymized a vs original b) and recovered (recovered a vs original b)."""
    if pairs is None:
        return None
    emb = {r["image"]: r["embeddings"] for r in rows
           if r.get("status") == "ok" and "embeddings" in r}
    out: dict = {"far": FAR}
    for name in RECOGNIZER_NAMES:
        info = recognizers.get(name, {})
        if not info.get("available"):
            continue
        cos = info["metric"] == "cosine"

        def score(x, y, cos=cos):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            if cos:
                return float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-12))
            return -float(np.linalg.norm(x - y))

        gen: dict[str, list[float]] = {"clean": [], "anonymized": [], "recovered": []}
        imp: list[float] = []
        for a, b, same in pairs:
            ea, eb = emb.get(a, {}).get(name), emb.get(b, {}).get(name)
            if not ea or not eb or ea.get("original") is None or eb.get("original") is None:
                continue
            if not same:
                imp.append(score(ea["original"], eb["original"]))
                continue
            gen["clean"].append(score(ea["original"], eb["original"]))
            for v in ("anonymized", "recovered"):
                if ea.get(v) is not None:
                    gen[v].append(score(ea[v], eb["original"]))
        tar, threshold = measures.tar_at_far(gen["clean"], imp, FAR)
        own = info["threshold"] if cos else -info["threshold"]  # the recognizer's own
        out[name] = {
            "genuine_pairs": len(gen["clean"]),
            "impostor_pairs": len(imp),
            # In the recognizer's own unit: a distance for dlib (accept below), a cosine
            # for FaceNet/ArcFace (accept above).
            "threshold": None if threshold is None else (threshold if cos else -threshold),
            "clean": tar,
            "anonymized": measures.tar_with_threshold(gen["anonymized"], threshold),
            "recovered": measures.tar_with_threshold(gen["recovered"], threshold),
            # The share of genuine pairs the recognizer calls the same person (dlib:
            # distance 0.6 or less): the paper's "verified".
            "matched": {v: measures.rate(x >= own for x in g) for v, g in gen.items()},
        }
    return out


def aggregate(
    rows: Sequence[dict],
    *,
    backbone: Backbone,
    steps: int,
    device: str,
    recognizers: dict[str, dict],
    settings: dict,
    pairs: Sequence[tuple[str, str, bool]] | None = None,
    elapsed: float | None = None,
) -> dict:
    """Every number of ``metrics.json`` from the result lines of one run."""
    ok = [r for r in rows if r.get("status") == "ok"]
    faces = _faces(ok)
    jpeg = [int(q) for q in settings.get("jpeg", [])]

    anonymized = _identity(ok, "anonymized", recognizers)
    anonymized.update(_fidelity(ok, "anonymized"))
    anonymized["psnr"]["outside_mask"] = measures.stats(
        r["fidelity"]["anonymized"].get("psnr_outside") for r in ok)
    anonymized["detection_rate"] = _detection(ok, "anonymized")
    anonymized["landmark_shift"] = measures.stats(f.get("landmark_shift") for f in faces)
    anonymized["diversity"] = _diversity(ok, recognizers, int(settings.get("diversity_keys", 0)))

    recovered = _identity(ok, "recovered", recognizers)
    recovered.update(_fidelity(ok, "recovered"))
    recovered["detection_rate"] = _detection(ok, "recovered")

    wrong = {}
    for kind in WRONG_KINDS:
        refused = [r["refused"].get(kind) for r in ok if kind in r.get("refused", {})]
        entry = {"refused": {"refused": int(sum(bool(x) for x in refused)),
                             "attempts": len(refused), "rate": measures.rate(refused)}}
        entry.update(_identity(ok, f"wrong_{kind}", recognizers))
        entry.update(_fidelity(ok, f"wrong_{kind}"))
        wrong[kind] = entry

    jpeg_section = {}
    for q in jpeg:
        entry = _identity(ok, f"jpeg_{q}", recognizers)
        entry.update(_fidelity(ok, f"jpeg_{q}"))
        errors = [r["jpeg_failed"][str(q)] for r in ok if str(q) in r.get("jpeg_failed", {})]
        entry["failed"] = len(errors)
        entry["errors"] = sorted(set(errors))[:5]
        jpeg_section[str(q)] = entry

    skipped = [{"image": r["image"], "reason": r.get("reason")} for r in rows
               if r.get("status") == "skipped"]
    no_face = [r["image"] for r in rows if r.get("status") == "no_face"]
    notes = sorted({n for r in ok for n in r.get("notes", [])})[:20]
    samplers = list({json.dumps(r.get("sampler"), sort_keys=True): r.get("sampler")
                     for r in ok}.values())
    if len(samplers) > 1:
        notes.insert(0, f"the results mix {len(samplers)} sampler settings (faceveil's "
                     "defaults changed between runs): start a new report folder")
    return measures.json_safe({
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"id": backbone.model_id, "sha256": backbone.sha256,
                  "reference": backbone.reference, "image_size": backbone.image_size,
                  "latent_shape": list(backbone.latent_shape)},
        "steps": int(steps),
        "sampler": samplers[0] if samplers else None,
        "versions": _versions(),
        "settings": settings,
        "count": {"images": len(rows), "evaluated": len(ok), "faces": len(faces),
                  "no_face": len(no_face), "skipped": len(skipped)},
        "skipped": skipped,
        "no_face": no_face,
        "recognizers": recognizers,
        "original": {"detection_rate": _detection(ok, "original")},
        "anonymized": anonymized,
        "recovered": recovered,
        "wrong_key": wrong,
        "jpeg": jpeg_section,
        "verification": _verification(ok, pairs, recognizers),
        "realism": realism_report.aggregate(ok, pairs),
        "time": {
            "anonymize": {"per_face_s": measures.stats(r["time"]["anonymize"] for r in ok)},
            "recover": {"per_face_s": measures.stats(r["time"]["recover"] for r in ok)},
            "device": device,
            "device_name": (torch.cuda.get_device_name() if device.startswith("cuda")
                            else platform.processor() or platform.machine()),
            "threads": torch.get_num_threads(),
            "run_s": elapsed,
        },
        "notes": notes,
    })


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _f(x, digits: int = 3, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    if pct:
        return f"{100 * x:.1f}%"
    return f"{x:.{digits}f}"


def _mean(section: dict, *path: str) -> float | None:
    d = section
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d.get("mean") if isinstance(d, dict) else d


def _available(m: dict) -> list[str]:
    return [n for n in RECOGNIZER_NAMES if m["recognizers"].get(n, {}).get("available")]


def _per_recognizer(m: dict, section: dict, field: str, digits: int = 3,
                    pct: bool = False) -> str:
    parts = []
    for n in _available(m):
        v = section.get(n, {})
        value = v.get(field) if pct else _mean(v, field)
        parts.append(f"{_f(value, digits, pct)} ({n})")
    return "; ".join(parts) or "n/a"


def summary_table(m: dict) -> str:
    """The summary table of a run beside the reference implementation's numbers."""
    ref = REFERENCE
    a, r, w, v = m["anonymized"], m["recovered"], m["wrong_key"], m.get("verification")
    region = "image" if m["settings"].get("aligned") else "face"
    rows = [
        ("faces evaluated (images)", f"{m['count']['faces']} ({m['count']['evaluated']})",
         "LFW 1,600 pairs; 1,000 images for wrong keys"),
        ("identity cosine, original vs anonymized", _per_recognizer(m, a, "cosine"),
         f"{ref['cosine_anonymized']['facenet']} (FaceNet-VGG) / "
         f"{ref['cosine_anonymized']['arcface']} (ArcFace)"),
        ("identity distance, original vs anonymized", _per_recognizer(m, a, "distance"), "-"),
        ("anonymized faces still matched (recognizer's threshold)",
         _per_recognizer(m, a, "match_rate", pct=True), "-"),
        ("identity cosine, original vs recovered", _per_recognizer(m, r, "cosine"),
         f"{ref['cosine_recovered']['facenet']} (FaceNet-VGG) / "
         f"{ref['cosine_recovered']['arcface']} (ArcFace)"),
        ("recovered faces matched (recognizer's threshold)",
         _per_recognizer(m, r, "match_rate", pct=True), "-"),
    ]
    if v:
        tars = "; ".join(
            f"{_f(v[n]['clean'])} / {_f(v[n]['anonymized'])} / {_f(v[n]['recovered'])} ({n})"
            for n in _available(m) if n in v)
        t = ref["tar"]["arcface"]
        rows.append(("TAR@FAR=1e-3 clean / anonymized / recovered", tars or "n/a",
                     f"{t['clean']} / {t['anonymized']} / {t['recovered']} (ArcFace)"))
        matched = "; ".join(" / ".join(_f(v[n]["matched"][k], pct=True) for k in
                                       ("clean", "anonymized", "recovered")) + f" ({n})"
                            for n in _available(m) if n in v and "matched" in v[n])
        rows.append(("genuine pairs verified at the recognizer's threshold, clean / "
                     "anonymized / recovered", matched or "n/a", "-"))
    rows += [
        (f"recovery PSNR, {region} (dB)",
         f"{_f(_mean(r, 'psnr', region), 2)} (face {_f(_mean(r, 'psnr', 'face'), 2)}, "
         f"image {_f(_mean(r, 'psnr', 'image'), 2)})", f"{ref['psnr']:.2f}"),
        (f"recovery SSIM, {region}", _f(_mean(r, "ssim", region)), f"{ref['ssim']}"),
        (f"recovery MAE, {region} (fraction of 255)", _f(_mean(r, "mae", region)),
         f"{ref['mae']} (scale not stated)"),
        ("anonymized vs original PSNR, face (dB)", _f(_mean(a, "psnr", "face"), 2), "-"),
        ("anonymized PSNR outside the mask, min (dB; 100 = identical)",
         _f(a["psnr"]["outside_mask"]["min"], 2), "-"),
        ("face detection rate, original / anonymized / recovered",
         f"{_f(m['original']['detection_rate'], pct=True)} / "
         f"{_f(a['detection_rate'], pct=True)} / {_f(r['detection_rate'], pct=True)} (dlib HOG)",
         f"- / {ref['detection']['anonymized']:.2f} / {ref['detection']['recovered']} "
         "(RetinaFace)"),
        ("landmark shift, original vs anonymized (x inter-ocular)",
         _f(a["landmark_shift"]["mean"]), "-"),
        *realism_report.summary_rows(m),
        ("wrong keys refused on normal files",
         f"{w['random']['refused']['refused']}/{w['random']['refused']['attempts']} (random), "
         f"{w['one_bit']['refused']['refused']}/{w['one_bit']['refused']['attempts']} (one bit)",
         "- (the reference has no key check)"),
        ("identity cosine, original vs wrong key (random)",
         _per_recognizer(m, w["random"], "cosine"),
         f"{ref['cosine_wrong_key']['facenet']} (FaceNet-VGG) / "
         f"{ref['cosine_wrong_key']['arcface']} (ArcFace), ControlNet variant"),
        ("identity cosine, original vs wrong key (one bit)",
         _per_recognizer(m, w["one_bit"], "cosine"), "-"),
        ("wrong-key faces matched (recognizer's threshold)",
         f"random: {_per_recognizer(m, w['random'], 'match_rate', pct=True)} · "
         f"one bit: {_per_recognizer(m, w['one_bit'], 'match_rate', pct=True)}", "-"),
        (f"diversity: distance between anonymized versions ({a['diversity']['keys']} keys)",
         "; ".join(f"{_f(a['diversity'][n]['distance']['mean'])} ({n})"
                    for n in _available(m) if n in a["diversity"]) or "n/a", "-"),
    ]
    for q, entry in m["jpeg"].items():
        rows.append((f"recovery after JPEG q{q}: PSNR {region} (dB) / matched",
                     f"{_f(_mean(entry, 'psnr', region), 2)} / "
                     f"{_per_recognizer(m, entry, 'match_rate', pct=True)}",
                     "measured, not published"))
    t = m["time"]
    rows += [
        ("time per face, anonymize / recover (s)",
         f"{_f(t['anonymize']['per_face_s']['median'], 2)} / "
         f"{_f(t['recover']['per_face_s']['median'], 2)} (median, {t['device']}, "
         f"{t['threads']} threads)", "-"),
        ("FID anonymized / recovered", "not measured",
         f"{ref['fid']['anonymized']} / {ref['fid']['recovered']}"),
    ]
    head = ("| measure | this run | reference implementation, published (LFW; "
            "FaceNet/ArcFace) |\n|---|---|---|\n")
    return head + "".join(f"| {a_} | {b_} | {c_} |\n" for a_, b_, c_ in rows)


def _histograms(report_dir: Path, m: dict, rows: Sequence[dict]) -> tuple[list[str], str | None]:
    """One histogram PNG per recognizer: original vs anonymized / recovered / wrong key."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ("histograms need matplotlib, which is not installed: "
                    "pip install 'faceveil[eval]'")
    written = []
    faces = _faces(rows)
    for name in _available(m):
        info = m["recognizers"][name]
        field = "distance" if info["metric"] == "l2" else "cosine"
        series = {
            "anonymized": [f["identity"][name]["anonymized"] for f in faces],
            "recovered": [f["identity"][name]["recovered"] for f in faces],
            "wrong key": [f["identity"][name].get(f"wrong_{k}") for f in faces
                          for k in WRONG_KINDS],
        }
        series = {k: [c[field] for c in v if c is not None] for k, v in series.items()}
        if not any(series.values()):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        allv = [x for v in series.values() for x in v] + [info["threshold"]]
        bins = np.linspace(min(allv), max(allv), 31) if max(allv) > min(allv) else 10
        for (label, values), colour in zip(series.items(), ("tab:orange", "tab:green",
                                                             "tab:red")):
            if values:
                ax.hist(values, bins=bins, alpha=0.55, label=f"original vs {label}",
                        color=colour)
        ax.axvline(info["threshold"], color="k", linestyle="--",
                   label=f"threshold {info['threshold']}")
        side = "same person below" if field == "distance" else "same person above"
        ax.set_xlabel(f"{info['model']} {field} ({side})")
        ax.set_ylabel("faces")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fname = f"hist_{name}.png"
        fig.savefig(report_dir / fname)
        plt.close(fig)
        written.append(fname)
    return written, None


def _fit(img: Image.Image, side: int) -> Image.Image:
    """``img`` scaled to fit a ``side`` square, centred on grey."""
    s = side / max(img.width, img.height)
    small = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                       Image.Resampling.LANCZOS if s < 1 else Image.Resampling.NEAREST)
    cell = Image.new("RGB", (side, side), (128, 128, 128))
    cell.paste(small, ((side - small.width) // 2, (side - small.height) // 2))
    return cell


def _grid(report_dir: Path, rows: Sequence[dict]) -> str | None:
    """examples.png: one face a row, original | anonymized | recovered | wrong key | other
    key (made with Pillow, so it exists even without matplotlib)."""
    folder = report_dir / EXAMPLES
    indices = sorted(int(r["example"]) for r in rows if "example" in r)
    kinds = [("original", "original"), ("anonymized", "anonymized"),
             ("recovered", "recovered"), ("wrong_random", "wrong key"),
             ("other_key", "other key")]
    kinds = [k for k in kinds if any((folder / f"{i:03d}-{k[0]}.png").exists() for i in indices)]
    if not indices or not kinds:
        return None
    label_h = 16
    grid = Image.new("RGB", (CELL * len(kinds), label_h + CELL * len(indices)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, (_, label) in enumerate(kinds):
        draw.text((c * CELL + 4, 2), label, fill=(0, 0, 0))
    for r_, i in enumerate(indices):
        for c, (kind, _) in enumerate(kinds):
            path = folder / f"{i:03d}-{kind}.png"
            if path.exists():
                with Image.open(path) as img:
                    grid.paste(_fit(img.convert("RGB"), CELL), (c * CELL, label_h + r_ * CELL))
    grid.save(report_dir / GRID)
    return GRID


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _identity_table(m: dict) -> str:
    body = []
    sections = [("anonymized", m["anonymized"]), ("recovered", m["recovered"])]
    sections += [(f"wrong key ({k.replace('_', ' ')})", m["wrong_key"][k]) for k in WRONG_KINDS]
    sections += [(f"recovered after JPEG q{q}", e) for q, e in m["jpeg"].items()]
    for name in _available(m):
        for label, sec in sections:
            s = sec.get(name, {})
            body.append([name, label, _f(_mean(s, "distance")), _f(_mean(s, "cosine")),
                         _f(s.get("match_rate"), pct=True), str(s.get("n", 0))])
    return _table(["recognizer", "original vs", "distance (mean)", "cosine (mean)",
                   "matched", "faces"], body)


def _fidelity_table(m: dict) -> str:
    body = []
    sections = [("anonymized", m["anonymized"]), ("recovered", m["recovered"])]
    sections += [(f"wrong key ({k.replace('_', ' ')})", m["wrong_key"][k]) for k in WRONG_KINDS]
    sections += [(f"recovered after JPEG q{q}", e) for q, e in m["jpeg"].items()]
    for label, s in sections:
        body.append([label] + [_f(_mean(s, met, reg), 2 if met == "psnr" else 3)
                               for met in ("psnr", "ssim", "mae") for reg in ("face", "image")])
    return _table(["vs original", "PSNR face", "PSNR image", "SSIM face", "SSIM image",
                   "MAE face", "MAE image"], body)


def _sampler(m: dict) -> str:
    s = m.get("sampler") or {}
    parts = [f"{k} {s[k]}" for k in ("inversion", "default_recovery", "context") if s.get(k)]
    return f" ({', '.join(parts)})" if parts else ""


def render(m: dict, hist: Sequence[str], grid: str | None, rows: Sequence[dict] = (),
           sheet: str | None = None) -> str:
    """report.md as text (``rows``: the result lines, for the per-face realism table)."""
    model = m["model"]
    out = [
        "# faceveil evaluation report\n",
        f"{m['date']} · model `{model['id']}` (sha256 {model['sha256'][:16]}…, "
        f"{model['image_size']} px) · {m['steps']} DDIM steps{_sampler(m)} · "
        f"device {m['time']['device']} · "
        f"faceveil {m['versions']['faceveil']}\n",
        f"Data: `{m['settings']['data']}` "
        f"({'aligned crops' if m['settings']['aligned'] else 'photos'}"
        f"): {m['count']['images']} images, {m['count']['evaluated']} evaluated, "
        f"{m['count']['faces']} faces, {m['count']['no_face']} without a face, "
        f"{m['count']['skipped']} skipped.\n",
        "## Summary\n",
        "The right-hand column holds the numbers the reference implementation (Labarbarie "
        "et al., arXiv 2510.01031, the authors' notebook) published on LFW with FaceNet and "
        "ArcFace and a 256 px FFHQ latent diffusion model. They are **not the same "
        "protocol**: other data, model, recognizers and face detector. They show the scale "
        "to expect, not a like-for-like comparison. Cosines of dlib's embeddings are not "
        "comparable with FaceNet/ArcFace cosines (dlib's native measure is the L2 distance, "
        "same person at 0.6 or less).\n",
        summary_table(m),
        "\nPSNR is capped at 100 dB: 100.0 means identical pixels. MAE is a fraction of the "
        "full scale (255). *face* is the union of the stored face masks warped into the "
        "image; *image* the whole image.\n",
        "## Identity\n",
        _identity_table(m),
    ]
    for name in _available(m):
        d = m["anonymized"]["diversity"].get(name)
        if d:
            out.append(f"\nDiversity ({name}): mean distance between the anonymized versions "
                       f"of a face under {m['anonymized']['diversity']['keys']} keys "
                       f"{_f(d['distance']['mean'])}, share of those pairs matched "
                       f"{_f(d['match_rate'], pct=True)}.\n")
    unavailable = [f"{n}: {i.get('reason')}" for n, i in m["recognizers"].items()
                   if not i.get("available")]
    if unavailable:
        out.append("\nNot measured: " + "; ".join(unavailable) + ".\n")
    if m.get("verification"):
        v = m["verification"]
        body = [[n, str(v[n]["genuine_pairs"]), str(v[n]["impostor_pairs"]),
                 _f(v[n]["threshold"]), _f(v[n]["clean"]), _f(v[n]["anonymized"]),
                 _f(v[n]["recovered"])] + [_f(v[n].get("matched", {}).get(k), pct=True)
                                           for k in ("clean", "anonymized", "recovered")]
                for n in _available(m) if n in v]
        out += ["\n## Verification (TAR at FAR = 1e-3; verified at the recognizer's own "
                "threshold)\n\nA genuine pair (a, b) is scored clean (a vs b), anonymized "
                "(anonymized a vs original b) and recovered (recovered a vs original b).\n",
                _table(["recognizer", "genuine pairs", "impostor pairs", "threshold",
                        "clean", "anonymized", "recovered", "verified clean",
                        "verified anonymized", "verified recovered"], body)]
    out += ["\n## Fidelity\n", _fidelity_table(m), realism_report.render(m, rows)]
    t = m["time"]
    out.append(
        f"\n## Cost\n\nPer face (median): anonymize {_f(t['anonymize']['per_face_s']['median'], 2)}"
        f" s, recover {_f(t['recover']['per_face_s']['median'], 2)} s on {t['device']} "
        f"({t['device_name']}, {t['threads']} threads).\n")
    if hist:
        out.append("\n## Identity distances\n")
        out += [f"\n![{h}]({h})\n" for h in hist]
    if grid:
        out.append("\n## Examples (original | anonymized | recovered | wrong key | other key)\n"
                   f"\n![examples]({grid})\n")
    if sheet:
        out.append(f"\n## Contact sheet (original / anonymized / recovered)\n\n![sheet]({sheet})\n")
    if m["skipped"]:
        out.append("\n## Skipped images\n\n" + "".join(
            f"- `{s['image']}`: {s['reason']}\n" for s in m["skipped"]))
    if m.get("notes"):
        out.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in m["notes"]))
    return "\n".join(out)


def write(report_dir: Path, metrics: dict, rows: Sequence[dict]) -> None:
    """Write the histograms, the example grid, metrics.json and report.md. A missing
    matplotlib costs the histograms only; it is said in the notes of both files."""
    hist, missing = _histograms(report_dir, metrics, rows)
    if missing:
        metrics["notes"] = [missing] + list(metrics.get("notes", []))
    grid = _grid(report_dir, rows)
    sheet = realism_report.write_sheet(report_dir, rows)
    media.write_atomic(report_dir / METRICS,
                        (json.dumps(metrics, indent=2, allow_nan=False) + "\n").encode(),
                        replace=True)
    media.write_atomic(report_dir / REPORT, render(metrics, hist, grid, rows, sheet).encode(),
                        replace=True)
