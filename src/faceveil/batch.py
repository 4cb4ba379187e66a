"""Folders: every output planned before the first model run, one rule for names that
collide, the no-face policy, and the notes and report rows of each file.

The command line, the Ray runner and the web page use this one planner, so a folder
gives the same outputs whichever runs it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import media
from .errors import InputError, NoFaceError


@dataclass(frozen=True)
class Item:
    """One input of a folder and what it writes (``outputs``: the output and, say, its
    sidecar)."""

    src: Path
    dst: Path
    outputs: tuple[Path, ...]


@dataclass
class Plan:
    """A folder's items, decided before any work, and what the planner renamed."""

    items: list[Item]
    renamed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # complete outputs (--skip-existing)
    redone: list[str] = field(default_factory=list)  # broken ones, removed to be made again
    cleaned: list[str] = field(default_factory=list)  # stale temporary files removed

    def notes(self) -> list[str]:
        notes = []
        if self.renamed:
            notes.append("output names that would collide with an input or with each other "
                         "are renamed: " + ", ".join(self.renamed))
        if self.cleaned:
            notes.append(f"removed {len(self.cleaned)} temporary file(s) an interrupted run "
                         f"left: {_listed(self.cleaned)}")
        if self.kept:
            notes.append(f"{len(self.kept)} output(s) already complete, skipped: "
                         f"{_listed(self.kept)}")
        if self.redone:
            notes.append(f"{len(self.redone)} incomplete output(s) made again: "
                         f"{'; '.join(self.redone[:5])}"
                         + (f" and {len(self.redone) - 5} more" if len(self.redone) > 5
                            else ""))
        return notes


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def media_files(folder: Path, *, videos: bool = True) -> list[Path]:
    """The images (and videos) of a folder, by name and extension; not its subfolders,
    even one named x.jpg."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise InputError(f"cannot list folder {str(folder)!r}: {e.strerror or e}") from None
    suffixes = media.MEDIA_SUFFIXES if videos else media.IMAGE_SUFFIXES
    return [p for p in entries if p.suffix.lower() in suffixes and p.is_file()]


def anonymized_name(path: Path, codec: str | None = None) -> str:
    """What anonymizing ``path`` writes: ``NAME.png``, or a clip's ``NAME.mkv``
    (``NAME.mp4`` with H.264)."""
    if media.is_video(path):
        return path.stem + (".mp4" if codec == "h264" else ".mkv")
    return path.stem + ".png"


def recovered_name(path: Path, codec: str | None = None) -> str:
    """What recovering ``path`` writes: the same name (a clip comes back as ``.mkv``,
    lossless, unless H.264 is asked for)."""
    if media.is_video(path):
        return path.stem + (".mp4" if codec == "h264" else ".mkv")
    return path.name


def outputs_of(dst: Path, sidecar: bool) -> tuple[Path, ...]:
    """Every file one output writes: itself and, with ``sidecar``, its sidecar."""
    return (dst, media.sidecar_path(dst)) if sidecar else (dst,)


def plan(src: Path, dst: Path, name: Callable[[Path], str], *, sidecar: bool = False,
         force: bool = False, videos: bool = True,
         resume: Callable[[Item], str | None] | None = None) -> Plan:
    """The items of the folder ``src`` written into the folder ``dst``.

    ``name(input)`` is an output's file name. Outputs never collide with each other
    (case-insensitively, for the file systems that ignore case) nor with an input: each
    colliding output gets its input's extension (``x_jpg.png``) and, if needed, a number
    (``x_jpg-2.png``), and the renaming is said in :meth:`Plan.notes`. Existing outputs
    are refused without ``force`` and the output folder must be writable: all before the
    first model run. With ``resume`` (``--skip-existing``), an item whose outputs exist is
    kept when ``resume(item)`` finds them complete (it returns None), and otherwise its
    outputs are removed and it is made again (``resume`` returns why). Temporary files a
    killed run left for these outputs are removed (:func:`faceveil.media.clean_stale`).

    Raises:
        InputError: ``src`` holds no media, ``dst`` is a file or cannot be written, or
            outputs exist (without ``force``).
    """
    if dst.exists() and not dst.is_dir():
        raise InputError(f"{str(dst)!r} is a file; the output of a folder must be a folder")
    if not dst.exists() and dst.suffix.lower() in media.MEDIA_SUFFIXES:
        raise InputError(f"{str(src)!r} is a folder, so the output must be a folder too, "
                         f"not {str(dst)!r}")
    files = media_files(src, videos=videos)
    if not files:
        kinds = media.MEDIA_SUFFIXES if videos else media.IMAGE_SUFFIXES
        raise InputError(f"no images{' or videos' if videos else ''} in {str(src)!r} "
                         f"(looked for {', '.join(sorted(kinds))})")
    probe = dst
    while not probe.exists():
        probe = probe.parent
    media.check_writable(probe)

    def key(p: Path) -> str:
        return str(p.resolve()).lower()

    inputs = {key(p) for p in files}
    taken: set[str] = set()

    def free(target: Path) -> bool:
        names = {key(p) for p in outputs_of(target, sidecar)}
        return not (names & inputs or names & taken)

    wanted = collections.Counter(key(dst / name(p)) for p in files)
    result = Plan([])
    for path in files:
        target = dst / name(path)
        if wanted[key(target)] > 1 or not free(target):  # rename every one of them
            base = f"{target.stem}_{path.suffix.lstrip('.').lower()}"
            target = target.with_name(base + target.suffix)
            k = 2
            while not free(target):
                target, k = target.with_name(f"{base}-{k}{target.suffix}"), k + 1
            result.renamed.append(f"{path.name} -> {target.name}")
        outputs = outputs_of(target, sidecar)
        taken |= {key(p) for p in outputs}
        result.items.append(Item(path, target, outputs))
    names = {p.name for item in result.items for p in item.outputs}
    if resume is not None:
        result.items = [item for item in result.items if not _resumed(item, resume, result)]
    existing = [p.name for item in result.items for p in item.outputs if p.exists()]
    if existing and not force:
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise InputError(f"{len(existing)} output(s) exist in {str(dst)!r} "
                         f"({', '.join(existing[:5])}{more}); use --force to overwrite them")
    if dst.is_dir():
        result.cleaned = media.clean_stale(dst, names)
    return result


def _resumed(item: Item, resume: Callable[[Item], str | None], result: Plan) -> bool:
    """Whether ``item`` is already done (kept); a broken one's outputs are removed."""
    if not any(p.exists() for p in item.outputs):
        return False
    why = resume(item)
    if why is None:
        result.kept.append(item.dst.name)
        return True
    for p in item.outputs:
        try:
            p.unlink(missing_ok=True)
        except OSError as e:
            raise InputError(f"cannot remove the incomplete output {str(p)!r}: "
                             f"{e.strerror or e}") from None
    result.redone.append(f"{item.dst.name} ({why})")
    return False


def no_face(policy: str, error: NoFaceError, copy: Callable[[], None],
            copied: str = "copied without metadata") -> list[str]:
    """What a file without a face gets, by ``policy`` (``Output.no_face``): nothing
    ("skip"), a copy ("copy": ``copy()`` makes it; ``copied`` says what it left out), or
    the error ("error"). Returns the note to give."""
    if policy == "error":
        raise error
    if policy == "copy":
        copy()
        return [f"no face found: {copied}"]
    return ["no face found: nothing written"]


def left_out_notes(skipped: Sequence[dict]) -> list[str]:
    """A warning for detected faces left unchanged, a note for low-score candidates."""
    notes = []
    detected = [s for s in skipped if s.get("kind") != "low-score"]
    if detected:
        where = "; ".join(f"{s.get('reason', 'skipped')} at {s.get('box')}" for s in detected)
        notes.append(f"{len(detected)} face(s) not anonymized: {where}")
    low = len(skipped) - len(detected)
    if low:
        notes.append(f"{low} low-score candidate(s) left out: check them with `faceveil "
                     "detect` (or --report) and add missed faces with --box")
    return notes


def face_json(index: int, region) -> dict:
    """A face as reports list it: its number, box, detector and score, and what its mask
    left out as occluders (rule, share of the mask and about how many photo pixels)."""
    out = {"index": region.index if region.index is not None else index,
           "box": [int(v) for v in region.box], "source": region.source,
           "score": region.score}
    if region.occlusion is not None:
        out["occluders"] = region.occlusion.as_json()
    return out


def report_row(src: Path, dst: Path | None, regions: Sequence, skipped: Sequence[dict]) -> dict:
    """A photo's entry in ``anonymize --report``."""
    return {"input": str(src), "output": None if dst is None else str(dst),
            "anonymized": len(regions), "left_out": len(skipped),
            "faces": [face_json(i, r) for i, r in enumerate(regions)],
            "candidates": list(skipped)}


def video_report_row(src: Path, result) -> dict:
    """A clip's entry in ``anonymize --report`` (``result``: its VideoResult, or None
    when no face was found): faces and what was left out (with the frame numbers of the
    candidates, the first 200)."""
    return {"input": str(src), "output": None if result is None or result.output is None
            else str(result.output),
            "anonymized": result.faces if result else 0,
            "left_out": result.left_out if result else 0, "faces": [],
            "candidates": result.candidates if result else [],
            "frames": result.frames if result else None,
            "tracks": result.tracks if result else 0,
            "filled": result.filled if result else 0,
            "segments": result.segments if result else 0}


def report(settings: dict, rows: Sequence[dict]) -> dict:
    """``anonymize --report``: totals, the detection settings, one entry per file."""
    return {"anonymized": sum(r["anonymized"] for r in rows),
            "left_out": sum(r["left_out"] for r in rows), "detection": settings,
            "images": list(rows)}
