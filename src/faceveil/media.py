"""Files on disk: which suffixes are media, output checks, atomic writes, sidecar names.

Every output faceveil writes goes through :class:`Staged` (or :func:`write_atomic`,
which uses it): written to a temporary file beside its destination, flushed to disk and
renamed into place, so a reader never sees half a file and an error or Ctrl-C leaves
nothing behind. Inputs are never overwritten (:func:`check_output`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import FaceveilError, InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif",
                            ".mpo"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg",
                            ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp", ".ogv"})
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
VIDEO_OUTPUTS = (".mkv", ".mp4")
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                  ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str,
            error: type[FaceveilError] = InputError) -> Iterator:
    """A small input file (a key, a sidecar) opened for binary reading; a missing,
    folder or unreadable file is ``error`` with a message naming ``what`` it is."""
    name = repr(str(path))
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, errors mapped
    except FileNotFoundError:
        raise error(f"{what} {name} not found") from None
    except IsADirectoryError:
        raise error(f"{what} {name} is a folder") from None
    except OSError as e:
        raise error(f"cannot read {what} {name}: {e.strerror}") from None
    with f:
        try:
            yield f
        except OSError as e:  # a read that fails half-way
            raise error(f"cannot read {what} {name}: {e.strerror}") from None


def is_video(path: str | os.PathLike) -> bool:
    """Whether a path names a video, by its extension."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_media(path: str | os.PathLike) -> bool:
    """Whether a path names an image or a video faceveil takes, by its extension."""
    return Path(path).suffix.lower() in MEDIA_SUFFIXES


def output_format(path: str | os.PathLike) -> str:
    """Pillow format name for an image output path's extension."""
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise InputError(f"cannot tell the output format from {str(path)!r}; use .png")
    return OUTPUT_FORMATS[ext]


def sidecar_path(output: str | os.PathLike) -> Path:
    """Where ``--sidecar`` writes the records of ``output``: ``NAME.faceveil.json`` for a
    photo, ``NAME.faceveil.jsonl`` (JSON Lines, one record per frame) for a clip."""
    out = Path(output)
    suffix = ".faceveil.jsonl" if out.suffix.lower() in VIDEO_OUTPUTS else ".faceveil.json"
    return out.with_name(out.stem + suffix)


def check_writable(folder: str | os.PathLike) -> None:
    """Refuse a folder where a file cannot be created (permissions, read-only mounts,
    /sys): a real temporary file is made and removed, so nothing is guessed."""
    folder = Path(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".faceveil-probe.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise InputError(f"cannot write to folder {str(folder)!r}: "
                         f"{e.strerror or e}") from None
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)


def check_output(output: str | os.PathLike, inputs: Sequence[str | os.PathLike | None],
                 force: bool) -> Path:
    """Refuse outputs that would overwrite an input, exist already (without ``force``),
    have no folder, or cannot be written."""
    out = Path(output)
    for src in inputs:
        if src is None:
            continue
        src_p = Path(src)
        if out.resolve() == src_p.resolve() or (
            out.exists() and src_p.exists() and os.path.samefile(out, src_p)
        ):
            raise InputError(f"output {str(out)!r} is an input file; choose another name")
    if not out.parent.exists():
        raise InputError(f"output folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise InputError(f"output {str(out)!r} is a folder; give a file name")
    if out.exists() and not force:
        raise InputError(f"{str(out)!r} exists; use --force to overwrite it")
    check_writable(out.parent)
    return out


class Staged:
    """Outputs written to temporary files beside their destinations (:attr:`temps`) and
    renamed into place by :meth:`commit`; anything else (an error, Ctrl-C) removes them.
    Use as a context manager."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = [Path(p) for p in paths]
        self.temps: list[Path] = []
        for p in self.paths:
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
            except OSError as e:
                self.discard()
                raise InputError(f"cannot write {str(p)!r}: {e.strerror or e}") from None
            os.close(fd)
            self.temps.append(Path(tmp))

    def commit(self) -> None:
        """Flush every temporary file to disk and rename it into place (mode as the
        umask allows, not mkstemp's 0600)."""
        umask = os.umask(0)
        os.umask(umask)
        try:
            for tmp, dst in zip(self.temps, self.paths, strict=True):
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~umask)
                os.replace(tmp, dst)
        except OSError as e:
            raise InputError(f"cannot write {str(dst)!r}: {e.strerror or e}") from None
        finally:
            self.discard()

    def discard(self) -> None:
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:class:`Staged`): never half a file."""
    with Staged([path]) as staged:
        try:
            staged.temps[0].write_bytes(data)
        except OSError as e:
            raise InputError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
        staged.commit()


def cache_dir() -> Path:
    """faceveil's cache folder: ``$FACEVEIL_CACHE``, else ``$XDG_CACHE_HOME/faceveil`` or
    ``~/.cache/faceveil`` (what ``models pull`` fetched, dlib's built HOG detector)."""
    root = os.environ.get("FACEVEIL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "faceveil")
    return Path(root)
