"""What the commands that run a model share: progress bars on a terminal, the key, the
options parsed into :class:`faceveil.options.Options`, running a file or a folder.
Errors, notes and exit statuses are :mod:`faceveil.cli.output`'s (re-exported here).

Nothing heavy is imported here (no numpy, no torch): ``--help`` of every command starts
in a fraction of a second.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from .. import batch
from ..errors import FaceveilError, InputError, KeyMaterialError, KeyWarning
from ..options import (
    BACKENDS,
    DEFAULTS,
    DETECTOR_CHOICES,
    VIDEO_CODECS,
    Detection,
    Options,
    Output,
    Protection,
    Runtime,
    Sampling,
    VideoOptions,
)
from .output import existing_input, fail, handle_errors, note, tty  # noqa: F401 (re-exported)

# Plumbing: progress, keys
# ---------------------------------------------------------------------------


class Progress:
    """tqdm bars for the engine's invert/denoise loops (on stderr, on a terminal only)."""

    def __init__(self, enabled: bool, prefix: str = "") -> None:
        self.enabled = enabled and tty()
        self.prefix = prefix
        self.bar = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None or done == 1:
            self.close()
            self.bar = tqdm(total=total, desc=f"{self.prefix}{phase}", unit="step", leave=False)
        self.bar.update(1)
        if done == total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def key_options(func):
    # A plain Path: a folder given as key file is the key reader's clear error (exit 1),
    # not click's usage error.
    func = click.option("--key-file", "-k", type=click.Path(),
                        help="Key file made by `faceveil keygen`.")(func)
    func = click.option("--passphrase-stdin", is_flag=True,
                        help="Read a passphrase from standard input (first line).")(func)
    return func


def stdin_passphrase() -> str:
    """The first line of standard input, as UTF-8 (a byte-order mark is ignored)."""
    line = click.get_binary_stream("stdin").readline().rstrip(b"\r\n")
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KeyMaterialError("the passphrase on standard input is not valid UTF-8 text "
                               "(save it as UTF-8)") from None


def recipient_options(func):
    """``-r`` and ``-R``: anonymize to public keys (age, SSH) instead of a secret."""
    func = click.option("--recipients-file", "-R", "recipients_files", multiple=True,
                        type=click.Path(dir_okay=False),
                        help="A file of recipients, one per line (# comments; repeatable)."
                        )(func)
    return click.option("--recipient", "-r", "recipients", multiple=True, metavar="PUBKEY",
                        help="Anonymize for this public key (age1… from `faceveil keygen "
                             "--identity` or age-keygen, or ssh-ed25519 / ssh-rsa): only "
                             "its identity can recover; this machine keeps nothing that "
                             "can (repeatable).")(func)


def identity_option(func):
    """``-i``: the private side of a recipient."""
    return click.option("--identity", "-i", "identities", multiple=True,
                        type=click.Path(dir_okay=False),
                        help="Identity file of a recipient: an age identity (`faceveil "
                             "keygen --identity`, age-keygen) or an SSH private key "
                             "(repeatable).")(func)


def ssh_passphrase(name: str) -> str:
    """Ask for an encrypted SSH key's passphrase on the terminal."""
    if not sys.stdin.isatty():
        raise KeyMaterialError(f"{name} is protected by a passphrase: run on a terminal "
                               "to type it, or give an unencrypted identity")
    return click.prompt(f"Passphrase for {name}", hide_input=True, err=True)


def get_holder(key_file: str | None, passphrase_stdin: bool, *, confirm: bool,
               recipients: Sequence[str] = (), recipients_files: Sequence[str] = (),
               identities: Sequence[str] = ()):
    """The key of a command: public-key recipients (anonymize), identities (recover,
    share, rewrap), or else a key file or passphrase (:func:`get_key`)."""
    if (recipients or recipients_files or identities) and (key_file or passphrase_stdin):
        raise InputError("give either recipients/identities (-r, -R, -i) or a key "
                         "(--key-file, --passphrase-stdin), not both")
    if recipients or recipients_files:
        from ..recipients import Recipients

        return Recipients.parse(recipients, recipients_files)
    if identities:
        from ..recipients import Identities

        return Identities.read(identities, ssh_passphrase)
    return get_key(key_file, passphrase_stdin, confirm=confirm)


def ray_options(func):
    """``--ray``, ``--ray-address``, ``--ray-workers``: process a folder on Ray."""
    func = click.option("--ray-workers", type=click.IntRange(1), metavar="N",
                        help="Model workers on Ray (default: one per GPU, or per CPU).")(func)
    func = click.option("--ray-address", metavar="ADDR",
                        help="Ray cluster to run on (e.g. ray://head:10001 or auto); "
                             "implies --ray.")(func)
    func = click.option("--ray", "use_ray", is_flag=True,
                        help="Process the INPUT folder with Ray Data: every core or GPU of "
                             "this machine (a local Ray) or of a cluster (--ray-address). "
                             "Needs pip install 'faceveil[ray]'.")(func)
    return func


def get_key(key_file: str | None, passphrase_stdin: bool, *, confirm: bool):
    """The key source: a key file, a passphrase from stdin, FACEVEIL_PASSPHRASE, or a prompt.
    A passphrase is never taken from a command-line argument (it would land in shell
    history and process listings). ``confirm`` (a new key: anonymize) asks twice."""
    from ..keys import KeySource, short_passphrase

    if key_file and passphrase_stdin:
        raise InputError("give either --key-file or --passphrase-stdin, not both")
    if key_file:
        return KeySource.from_key_file(key_file)
    phrase = (stdin_passphrase() if passphrase_stdin
              else os.environ.get("FACEVEIL_PASSPHRASE") or (
                  click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm,
                               err=True) if sys.stdin.isatty() else None))
    if phrase is not None:
        source = KeySource.from_passphrase(phrase)
        warning = short_passphrase(source) if confirm else None  # only a new file's
        if warning:
            warnings.warn(KeyWarning(warning), stacklevel=2)
        return source
    if confirm:
        raise KeyMaterialError(
            "no key: give --key-file KEY (make one with `faceveil keygen -o KEY`), "
            "--passphrase-stdin, or set FACEVEIL_PASSPHRASE"
        )
    raise KeyMaterialError(
        "no key: give the key the file was anonymized with: --key-file KEY, "
        "--passphrase-stdin, or FACEVEIL_PASSPHRASE"
    )


def force_options(func):
    """``--force`` and ``--skip-existing``: what happens to outputs that exist."""
    func = click.option(
        "--skip-existing", is_flag=True,
        help="Folder INPUT only: keep the outputs that are already complete and valid "
             "(a decodable image whose record verifies), make the missing and broken "
             "ones: resumes an interrupted run.")(func)
    return click.option(
        "--force", is_flag=True,
        help="Overwrite existing outputs. Without it an output is written only while its "
             "name is free; a file another run wrote meanwhile is kept, and this run "
             "reports that output as failed (exit 1).")(func)


def folder_only(options: Options, src: Path) -> None:
    """Refuse ``--skip-existing`` for a single file (a folder run's resume)."""
    if options.output.skip_existing:
        raise InputError(f"--skip-existing resumes a folder run; {str(src)!r} is not a "
                         "folder")


def parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--box wants x,y,w,h in pixels, not {text!r}") from None
    if w <= 0 or h <= 0:
        raise InputError(f"--box {text!r} has no area")
    return x, y, w, h


class FrameBar:
    """A progress bar in frames per second, with the time left (stderr, terminal only)."""

    def __init__(self, enabled: bool, prefix: str = "") -> None:
        self.enabled = enabled and tty()
        self.prefix = prefix
        self.bar = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"{self.prefix}frames", unit="frame",
                            leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def video_options(func):
    """--codec and --crf: how a video output is encoded."""
    func = click.option(
        "--crf", default=DEFAULTS.video.crf, show_default=True, type=click.IntRange(0, 51),
        help="Video only: H.264 quality (lower is better and larger).")(func)
    return click.option(
        "--codec", "video_codec", type=click.Choice(list(VIDEO_CODECS)), default=None,
        help="Video only: the output's codec [default: from its extension: .mkv FFV1, "
             "lossless; .mp4 H.264, lossy].")(func)


def track_gap_option(func):
    return click.option(
        "--track-gap", default=DEFAULTS.video.track_gap, show_default=True,
        type=click.IntRange(0), metavar="N",
        help="Video only: a face the detector misses for up to N frames in a row is still "
             "anonymized (its box interpolated along its track, or carried for N frames "
             "before its first and after its last detection); a person unseen for longer "
             "may come back as a new track (another identity).")(func)


def model_option(help_text: str):
    return click.option("--model", "-m", default=None, metavar="ID_OR_DIR", help=help_text)


def backend_option(func):
    return click.option(
        "--backend", type=click.Choice(list(BACKENDS)), default=DEFAULTS.runtime.backend,
        show_default=True,
        help="Runtime of the model: auto runs the built-in model through onnxruntime on a "
             "CPU when its faces come back from their sealed originals (no torch to load, "
             "faster calls; numerics differ from torch's by rounding), torch otherwise, in "
             "bfloat16 on a CPU that computes it natively (AMX or AVX-512 BF16; about 2x "
             "faster for real checkpoints) when the faces come back from their sealed "
             "originals; torch always runs torch in float32; onnx is refused with "
             "--no-lossless and --deniable, whose recovery runs the model back and needs "
             "torch's exact numerics.")(func)


def timings_option(func):
    return click.option(
        "--timings", is_flag=True,
        help="Say on stderr where the time went: start-up (imports, model load), reading, "
             "detection, model (and its network calls), harmonize/paste, record, "
             "writing.")(func)


_IMPORTED_AT = time.perf_counter()  # when the command line's own modules were imported


def process_age() -> float:
    """Seconds since this process started (interpreter start-up included, from /proc on
    Linux; elsewhere since the command line was imported)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED_AT


def print_timings(timings, show: bool, what: str = "") -> None:
    """The ``--timings`` line on stderr (even with ``--quiet``: it was asked for)."""
    if show:
        click.echo(f"faceveil: timings{what}: {timings.summary()}", err=True)


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter("must be a finite number")
    return value


def detection_options(func):
    """--detector, --threshold, --min-face and --occluders (defaults: faces.DEFAULT_DETECTOR,
    faces.DETECTORS' thresholds, faces.DEFAULT_MIN_FACE; tests check the help says so)."""
    func = click.option(
        "--occluders/--no-occluders", default=None,
        help="Keep what lies in front of a face (a hand, a cloth, hair) as it was, found by "
             "its colour (not the face's skin) or a face parser's classes; the eyes, nose "
             "and mouth are replaced whatever covers them [default: on]. Below the nose "
             "only clearly coloured things are kept (black, grey or white there may be "
             "a beard, which is face). Skin-coloured hands are not told apart from the "
             "face.")(func)
    func = click.option(
        "--min-face", default=None, type=click.IntRange(1), metavar="PX",
        help="Skip (and report) detected faces narrower than this many pixels "
             "[default: 16, so every face of 24 px and more is anonymized].")(func)
    func = click.option(
        "--threshold", default=None, type=float, callback=_finite,
        help="Detector score a face needs, on the detector's scale: centerface 0..1 "
             "[default: 0.2]; hog, cnn: classifier margin [default: 0, lower finds more]. "
             "In a union it is the first detector's. Weaker candidates (from half the "
             "CenterFace threshold, 0.5 below a dlib one) are listed, not anonymized.")(func)
    return click.option(
        "--detector", type=click.Choice(list(DETECTOR_CHOICES)), default=None,
        help="Face detector [default: centerface]; a+b is their union; both = hog+cnn.")(func)


def build_options(params: dict) -> Options:
    """:class:`Options` from a command's parameters (click's keyword arguments): each
    part takes the parameters it declares, under its own name (``flip_kind`` is
    ``flip``, ``video_codec`` is ``codec``); anything a part does not declare is left to
    the command."""
    renamed = {"flip_kind": "flip", "video_codec": "codec"}
    flat = {renamed.get(k, k): v for k, v in params.items()}
    if flat.get("boxes") is not None:
        flat["boxes"] = tuple(parse_box(b) for b in flat["boxes"])
    if flat.get("exclude") is not None:
        flat["exclude"] = tuple(flat["exclude"])
    if "parser_weights" in flat and flat["parser_weights"] is not None:
        flat["parser_weights"] = str(flat["parser_weights"])
    parts = {}
    for name, cls in (("sampling", Sampling), ("detection", Detection),
                      ("protection", Protection), ("runtime", Runtime),
                      ("video", VideoOptions), ("output", Output)):
        fields = cls.__dataclass_fields__
        parts[name] = cls(**{k: v for k, v in flat.items() if k in fields and v is not None})
    return Options(**parts)


# ---------------------------------------------------------------------------
# Running a file or a folder
# ---------------------------------------------------------------------------

Outcome = tuple[int, list[str]]
"""What one file gave: faces done and notes."""


def run_one(src: Path, dst: Path, one: Callable[[Path, Path], Outcome], quiet: bool,
            verb: str) -> None:
    """One file: its notes, then a line with the faces done and the time taken."""
    t0 = time.perf_counter()
    n, notes = one(src, dst)
    for line in notes:
        note(f"{src}: {line}", quiet)
    if n:
        note(f"{verb} {n} face(s) -> {dst} ({time.perf_counter() - t0:.1f} s)", quiet)


def run_folder(plan: batch.Plan, dst: Path, quiet: bool, verb: str,
               chunks: Callable[[Sequence[batch.Item]], list[Outcome | BaseException]],
               chunk_size: int = 1) -> None:
    """The planned items of a folder, ``chunk_size`` at a time (``chunks`` takes them and
    returns, per item, its outcome or the exception that stopped it), with a progress bar
    on a terminal, one line per file and a summary. A file that fails, for any reason, is
    reported and the others go on; the exit status is then 1. A folder where nothing was
    written is not left behind."""
    from tqdm import tqdm

    for line in plan.notes():
        note(line, quiet)
    created = [d for d in (dst, *dst.parents) if not d.exists()]
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot make the output folder {str(dst)!r}: "
                         f"{e.strerror or e}") from None
    items = plan.items
    bar = tqdm(total=len(items), desc=verb, unit="image", disable=quiet or not tty())
    say = bar.write if not bar.disable else functools.partial(click.echo, err=True)
    faces = failed = done = 0
    try:
        for at in range(0, len(items), chunk_size):
            part = items[at: at + chunk_size]
            for item, outcome in zip(part, chunks(part), strict=True):
                done += 1
                where = f"[{done}/{len(items)}] {item.src.name}"
                if isinstance(outcome, FaceveilError):
                    failed += 1
                    say(f"{where}: FAILED: {outcome}")
                elif isinstance(outcome, BaseException):  # a bug on one file
                    if os.environ.get("FACEVEIL_DEBUG"):
                        raise outcome
                    failed += 1
                    say(f"{where}: FAILED: unexpected {type(outcome).__name__}: {outcome} "
                        "(a bug; set FACEVEIL_DEBUG=1 for details)")
                else:
                    n, notes = outcome
                    faces += n
                    if not quiet:
                        say(f"{where}: {n} face(s)" + (f" -> {item.dst.name}" if n else "")
                            + (f" ({'; '.join(notes)})" if notes else ""))
                bar.update(1)
    finally:
        bar.close()
        for folder in created:  # nothing was written there: leave no empty folder behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    summarize(verb, faces, len(items) - failed, failed, quiet)


def each(one: Callable[[Path, Path, str], Outcome]
         ) -> Callable[[Sequence[batch.Item]], list[Outcome | BaseException]]:
    """A chunk function that runs ``one(src, dst, prefix)`` on each item on its own."""

    def run(items: Sequence[batch.Item]) -> list[Outcome | BaseException]:
        outcomes: list[Outcome | BaseException] = []
        for item in items:
            try:
                outcomes.append(one(item.src, item.dst, f"{item.src.name}: "))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001 - reported by run_folder
                outcomes.append(e)
        return outcomes

    return run


def summarize(verb: str, faces: int, done: int, failed: int, quiet: bool,
              extra: str = "") -> None:
    """The last line of a folder run; exit 1 when any file failed."""
    if not quiet:
        click.echo(f"{verb} {faces} face(s) in {done} image(s); {failed} failed{extra}",
                   err=True)
    if failed:  # the batch went on, but the exit status says not everything worked
        sys.exit(1)


def run_on_ray(verb: str, call: str, quiet: bool, **kwargs) -> None:
    """Run a folder through :mod:`faceveil.scale` with a progress bar and a summary."""
    from tqdm import tqdm

    from .. import scale

    with tqdm(desc=f"{verb} (Ray)", unit="image", disable=quiet or not tty()) as bar:
        report = getattr(scale, call)(progress=lambda name, ok: bar.update(1), **kwargs)
    if not quiet:
        for line in report.notes:
            click.echo(line, err=True)
        for f, n, notes in report.done:
            click.echo(f"  {f}: {n} face(s)" + (f" ({'; '.join(notes)})" if notes else ""),
                       err=True)
        for f, r in report.failed:
            click.echo(f"  {f}: FAILED: {r}", err=True)
    rate = len(report.done) / report.seconds if report.seconds else 0.0
    summarize(verb, report.faces, len(report.done), len(report.failed), quiet,
              f" ({report.workers} Ray worker(s) on {report.device}, {report.seconds:.1f} s, "
              f"{rate:.2f} image(s)/s)")

