"""The realism part of an evaluation: ``metrics.json``'s ``realism`` section, its part of
``report.md`` and the contact sheet ``sheet.png``.

From the result lines (:mod:`faceveil.evaluation.harness`): each face's colour shift
(``delta_e``) and detector scores at its box (``scores``), and each image's dlib
embeddings of its largest face, original and anonymized, for the two-sample test
(:func:`faceveil.evaluation.realism.ncm_two_sample`; persons from the genuine pairs,
:func:`faceveil.evaluation.pairs.persons`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from . import measures, realism
from .pairs import Pair, persons
from .protocol import EXAMPLES

SHEET = "sheet.png"
SHEET_VERSIONS = ("original", "anonymized", "recovered")
TABLE_ROWS = 200  # per-face rows shown in report.md (all are in results.jsonl)
# A detector that found nothing at the face scores this (HOG's floor; the CNN's 0).
MISS = {"hog": realism.HOG_FLOOR, "cnn": 0.0}


def _faces(rows: Sequence[dict]) -> list[dict]:
    return [f for r in rows if r.get("status") == "ok" for f in r["per_face"]]


def _score(face: dict, detector: str, version: str) -> float | None:
    """A face's score (a miss at :data:`MISS`); None for lines without scores."""
    scores = face.get("scores")
    if not scores or version not in scores.get(detector, {}):
        return None
    s = scores[detector][version]
    return MISS[detector] if s is None else s


def two_sample(rows: Sequence[dict], pairs: Sequence[Pair] | None) -> dict | None:
    """The two-sample test on dlib embeddings of each image's largest face: real =
    originals, anonymized = their anonymized versions; leave-one-out and leave one
    person out (a person: an image with its versions, joined to others by genuine pairs)."""
    emb = [(r["image"], r["embeddings"]["dlib"]) for r in rows
           if r.get("status") == "ok" and r.get("embeddings", {}).get("dlib")]
    emb = [(n, e) for n, e in emb if e.get("original") is not None
           and e.get("anonymized") is not None]
    if len(emb) < 2:
        return None
    who = persons([n for n, _ in emb], pairs)
    real, anon = [e["original"] for _, e in emb], [e["anonymized"] for _, e in emb]
    groups = [who[n] for n, _ in emb]
    return {"recognizer": "dlib", "real": len(real), "anonymized": len(anon), "chance": 0.5,
            "persons": len(set(groups)),
            "leave_one_out": realism.ncm_two_sample(real, anon),
            "leave_one_person_out": realism.ncm_two_sample(real, anon, groups, groups)}


def aggregate(rows: Sequence[dict], pairs: Sequence[Pair] | None) -> dict:
    """``metrics.json``'s ``realism``: ``delta_e`` (stats over faces), per detector and
    version ``found`` (rate) and ``score`` (stats, a miss at :data:`MISS`), and
    ``two_sample`` (:func:`two_sample`)."""
    faces = _faces(rows)
    detectors = {}
    for d in realism.DETECTORS:
        detectors[d] = {}
        for v in SHEET_VERSIONS:
            s = [_score(f, d, v) for f in faces]
            detectors[d][v] = {"found": measures.rate(None if x is None else x >= 0 for x in s),
                               "score": measures.stats(s)}
    return {"delta_e": measures.stats(f.get("delta_e") for f in faces),
            "detectors": detectors, "miss_score": MISS, "two_sample": two_sample(rows, pairs)}


def _f(x, digits: int = 2, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.0f}%" if pct else f"{x:.{digits}f}"


def two_sample_text(t: dict | None) -> str:
    """``"LOO 93% (raw 92%) / LOPO 94%"``: balanced accuracies, chance 50%."""
    if not t or not t.get("leave_one_out"):
        return "n/a"
    loo, lopo = t["leave_one_out"], t.get("leave_one_person_out")
    text = f"LOO {_f(loo['balanced'], pct=True)} (raw {_f(loo['accuracy'], pct=True)})"
    return text + (f" / LOPO {_f(lopo['balanced'], pct=True)}" if lopo else "")


def summary_rows(m: dict) -> list[tuple[str, str, str]]:
    """Rows for the summary table (measure, this run, reference)."""
    r = m.get("realism")
    if not r:
        return []
    de, det = r["delta_e"], r["detectors"]

    def scores(d: str) -> str:
        return " / ".join(f"{_f(det[d][v]['found'], pct=True)} ({_f(det[d][v]['score']['median'])})"
                          for v in ("original", "anonymized"))

    return [
        ("colour shift of the face, CIE76 dE of the mean CIELAB, median [min-max]",
         f"{_f(de['median'], 1)} [{_f(de['min'], 1)}-{_f(de['max'], 1)}]", "-"),
        ("dlib HOG found at the face (median score), original / anonymized", scores("hog"),
         "-"),
        ("dlib CNN found at the face (median confidence), original / anonymized",
         scores("cnn"), "-"),
        ("two-sample test, originals vs anonymized (dlib, nearest class mean; chance 50%)",
         two_sample_text(r.get("two_sample")), "-"),
    ]


def render(m: dict, rows: Sequence[dict]) -> str:
    """The realism section of report.md, a table of every face (up to :data:`TABLE_ROWS`)."""
    r = m.get("realism")
    if not r:
        return ""
    t = r.get("two_sample") or {}
    out = ["\n## Realism\n",
           "Colour shift: CIE76 distance between the mean CIELAB colours of the original "
           "and the anonymized photo over the face's hard mask. Detectors: dlib's HOG (one "
           "upsampling; scores from -1, found at 0) and CNN (confidence; nothing below 0) "
           "at the face's box, a miss scored at the floor. Two-sample test: each image's "
           "largest face, originals against anonymized, on dlib embeddings, assigned to "
           "the nearer class mean computed without it (LOO) or without its person (LOPO: "
           f"{t.get('persons', 'n/a')} persons); balanced accuracy, chance 50%: "
           f"{two_sample_text(t)}. These say whether a face reads as a face to a "
           "detector, not whether it looks natural: look at the contact sheet.\n"]
    faces = [(row["image"], k, f) for row in rows if row.get("status") == "ok"
             for k, f in enumerate(row["per_face"])]
    shown = [(d, v) for d in realism.DETECTORS for v in SHEET_VERSIONS
             if any(_score(f, d, v) is not None for _, _, f in faces)]
    body = []
    for image, k, f in faces:
        dist = (f["identity"].get("dlib", {}).get("anonymized") or {}).get("distance")
        body.append([f"`{image}`", str(k), _f(f.get("delta_e"), 1)]
                    + [_f(_score(f, d, v)) for d, v in shown] + [_f(dist)])
    header = (["image", "face", "dE"] + [f"{d.upper()} {v}" for d, v in shown]
              + ["dlib distance, anonymized"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(b) + " |" for b in body[:TABLE_ROWS]]
    out.append("\n".join(lines) + "\n")
    if len(body) > TABLE_ROWS:
        out.append(f"\n({len(body) - TABLE_ROWS} more faces in results.jsonl.)\n")
    return "\n".join(out)


def write_sheet(report_dir: Path, rows: Sequence[dict]) -> str | None:
    """sheet.png: the example faces as columns, rows original / anonymized / recovered."""
    folder = report_dir / EXAMPLES
    columns = []
    for i in sorted(int(r["example"]) for r in rows if "example" in r):
        column = []
        for v in SHEET_VERSIONS:
            path = folder / f"{i:03d}-{v}.png"
            if path.exists():
                with Image.open(path) as img:
                    column.append(np.asarray(img.convert("RGB")))
            else:
                column.append(None)
        columns.append(column)
    if not columns:
        return None
    Image.fromarray(realism.contact_sheet(columns, SHEET_VERSIONS)).save(report_dir / SHEET)
    return SHEET
