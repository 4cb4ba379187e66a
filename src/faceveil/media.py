"""Files on disk: which suffixes are media, output checks, atomic writes, sidecar names.

Every output faceveil writes goes through :class:`Staged` (or :func:`write_atomic`,
which uses it): written to a temporary file beside its destination, flushed to disk and
published under its name, so a reader never sees half a file and an error or Ctrl-C
leaves nothing behind. Without ``--force`` an output is published only while its name is
free (never check-then-replace: another run's file is never overwritten). Inputs are
never overwritten (:func:`check_output`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from .errors import FaceveilError, InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so stale temporary files stay
    fcntl = None

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


def anonymized_output(path: str | os.PathLike) -> Path:
    """``path`` as an anonymized image's output: a .png name (the record lives in a PNG
    chunk)."""
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"anonymized output must be a .png file (got {str(path)!r})")
    return Path(path)


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


class OutputExistsError(InputError):
    """An output's name was taken, between the checks and the write, by another run (or
    another program): nothing was overwritten."""


def publish_file(tmp: Path, dst: Path, *, replace: bool) -> None:
    """Give the finished file ``tmp`` the name ``dst``: ``os.replace`` when ``replace``;
    otherwise only while the name is free at that very moment (a hard link, which fails
    when ``dst`` exists), so a file another run wrote meanwhile is never overwritten.
    Where hard links are not supported (FAT, some network shares) the name is reserved by
    an exclusive create and the file renamed over that reservation."""
    if replace:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)
        return
    except FileExistsError:
        raise OutputExistsError(f"{str(dst)!r} exists: written by another run meanwhile; "
                                "nothing overwritten (use --force to overwrite)") from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
    try:
        os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise OutputExistsError(f"{str(dst)!r} exists: written by another run meanwhile; "
                                "nothing overwritten (use --force to overwrite)") from None
    os.replace(tmp, dst)


_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK,
             errno.EXDEV, errno.EACCES}
_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # mkstemp's, as Staged names them
_PROBE = "faceveil-probe"


def _lock(fd: int, block: bool = True) -> bool:
    """An exclusive advisory lock on an open file: a temporary file is locked while its run
    lives, so a later run tells a live one from one a killed run left (the kernel drops
    the lock when its process dies, even by SIGKILL). False when another holds it."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


class Staged:
    """Outputs written to temporary files beside their destinations (:attr:`temps`) and
    published by :meth:`commit`; anything else (an error, Ctrl-C) removes them. Use as a
    context manager.

    Without ``replace`` a name is only taken while it is free (see
    :class:`OutputExistsError`); with it (``--force``) an existing file is replaced,
    atomically. The first path is published last: a caller lists the file that makes a
    set complete (an image, before its sidecar) first, so a crash between the two never
    leaves it without the rest."""

    def __init__(self, paths: Sequence[str | os.PathLike], *, replace: bool) -> None:
        self.paths = [Path(p) for p in paths]
        self.replace = replace
        self.temps: list[Path] = []
        self._fds: list[int] = []
        try:
            for p in self.paths:
                try:
                    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp",
                                               dir=p.parent)
                except OSError as e:
                    raise InputError(f"cannot write {str(p)!r}: {e.strerror or e}") from None
                self._fds.append(fd)  # held open, locked, until the temporary file goes
                self.temps.append(Path(tmp))
                _lock(fd)
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        """Flush every temporary file to disk and publish it (mode as the umask allows,
        not mkstemp's 0600), the first path last. If a name is taken meanwhile, the files
        this commit already published are taken back and :class:`OutputExistsError` is
        raised."""
        umask = os.umask(0)
        os.umask(umask)
        done: list[tuple[Path, os.stat_result]] = []
        try:
            for tmp, dst in reversed(list(zip(self.temps, self.paths, strict=True))):
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                    st = os.fstat(f.fileno())
                os.chmod(tmp, 0o666 & ~umask)
                publish_file(tmp, dst, replace=self.replace)
                done.append((dst, st))
        except OutputExistsError:
            for dst, st in done:  # take back what this commit published, if still ours
                with contextlib.suppress(OSError):
                    now = os.stat(dst)
                    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                        dst.unlink()
            raise
        except OSError as e:
            raise InputError(f"cannot write {str(dst)!r}: {e.strerror or e}") from None
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the temporary files (published ones keep their final names)."""
        for tmp in self.temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def write_atomic(path: str | os.PathLike, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``path`` atomically (:class:`Staged`): never half a file; an
    existing file is replaced only with ``replace``."""
    write_all([(Path(path), data)], replace=replace)


def write_all(files: Sequence[tuple[Path, bytes]], *, replace: bool) -> None:
    """Write several files as one :class:`Staged` set (the first published last)."""
    with Staged([p for p, _ in files], replace=replace) as staged:
        for tmp, (path, data) in zip(staged.temps, files, strict=True):
            try:
                tmp.write_bytes(data)
            except OSError as e:
                raise InputError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
        staged.commit()


def clean_stale(folder: str | os.PathLike, names: Collection[str]) -> list[str]:
    """Remove the temporary files a killed run left in ``folder`` for the outputs
    ``names`` (faceveil's own pattern, ``.NAME.XXXXXXXX.tmp``, and its write probes; no
    other file). A temporary file still locked by a live run is left alone. Returns the
    names removed."""
    if fcntl is None:
        return []
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or (m["name"] not in names and m["name"] != _PROBE):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd, block=False):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def cache_dir() -> Path:
    """faceveil's cache folder: ``$FACEVEIL_CACHE``, else ``$XDG_CACHE_HOME/faceveil`` or
    ``~/.cache/faceveil`` (what ``models pull`` fetched, dlib's built HOG detector)."""
    root = os.environ.get("FACEVEIL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "faceveil")
    return Path(root)
