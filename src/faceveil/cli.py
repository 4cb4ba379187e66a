"""The ``faceveil`` command line: a thin layer over :mod:`faceveil.api`.

Exit status: 0 success, 1 bad input or usage, 2 command-line syntax, 3 wrong key,
4 missing/corrupt/modified metadata, 5 model problem, 6 no face found.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import click

from . import __version__
from .errors import FaceveilError, InputError, KeyMaterialError, NoFaceError

# OpenMP threads that spin while they wait take the CPU from each other and from every
# other process: on a busy 2-core machine one model call took 5x longer with 2 spinning
# threads than with 1 (benchmarks/cpu_breakdown.py); with passive waiting, 2 threads were
# as fast as 1 there. libgomp reads this once, when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".mpo"}


# ---------------------------------------------------------------------------
# Plumbing: errors, progress, keys
# ---------------------------------------------------------------------------


def _fail(message: str, code: int) -> None:
    click.echo(f"faceveil: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func):
    """Turn faceveil's errors into a one-line message and an exit status."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except FaceveilError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory (try a smaller --batch-size or a smaller image)", 1)
        except Exception as e:  # a bug: say so briefly, full trace on request
            if os.environ.get("FACEVEIL_DEBUG"):
                raise
            _fail(f"unexpected {type(e).__name__}: {e} (set FACEVEIL_DEBUG=1 for details)", 70)

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one plain note: no source paths or line numbers."""
    click.echo(f"faceveil: note: {message}", err=True)


def _tty() -> bool:
    """Whether stderr is a terminal: progress bars only there, never in logs."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """tqdm bars for the engine's invert/denoise loops (on stderr, on a terminal only)."""

    def __init__(self, enabled: bool, prefix: str = "") -> None:
        self.enabled = enabled and _tty()
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
    func = click.option("--key-file", "-k", type=click.Path(dir_okay=False),
                        help="Key file made by `faceveil keygen`.")(func)
    func = click.option("--passphrase-stdin", is_flag=True,
                        help="Read a passphrase from standard input (first line).")(func)
    return func


def _stdin_passphrase() -> str:
    """The first line of standard input, as UTF-8 (a byte-order mark is ignored)."""
    line = click.get_binary_stream("stdin").readline().rstrip(b"\r\n")
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KeyMaterialError("the passphrase on standard input is not valid UTF-8 text "
                               "(save it as UTF-8)") from None


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
    from .keys import KeySource

    if key_file and passphrase_stdin:
        raise InputError("give either --key-file or --passphrase-stdin, not both")
    if key_file:
        return KeySource.from_key_file(key_file)
    if passphrase_stdin:
        return KeySource.from_passphrase(_stdin_passphrase())
    env = os.environ.get("FACEVEIL_PASSPHRASE")
    if env:
        return KeySource.from_passphrase(env)
    if sys.stdin.isatty():
        phrase = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm,
                              err=True)
        return KeySource.from_passphrase(phrase)
    if confirm:
        raise KeyMaterialError(
            "no key: give --key-file KEY (make one with `faceveil keygen -o KEY`), "
            "--passphrase-stdin, or set FACEVEIL_PASSPHRASE"
        )
    raise KeyMaterialError(
        "no key: give the key the file was anonymized with: --key-file KEY, "
        "--passphrase-stdin, or FACEVEIL_PASSPHRASE"
    )


def _parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--box wants x,y,w,h in pixels, not {text!r}") from None
    if w <= 0 or h <= 0:
        raise InputError(f"--box {text!r} has no area")
    return x, y, w, h


def _load_parser(weights: str | None):
    if weights is None:
        return None
    from .faces.parsing import load_parser

    try:
        return load_parser(weights)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot use face-parser weights {weights!r}: {e}") from None


def _note(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(message, err=True)


def _media_suffixes() -> set[str]:
    from .video import VIDEO_SUFFIXES

    return IMAGE_SUFFIXES | VIDEO_SUFFIXES


def _image_files(folder: Path) -> list[Path]:
    """The images and videos of a folder, by name (not its subfolders, even one named
    x.jpg)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise InputError(f"cannot list folder {str(folder)!r}: {e.strerror or e}") from None
    suffixes = _media_suffixes()
    return [p for p in entries if p.suffix.lower() in suffixes and p.is_file()]


def _is_video(path: Path) -> bool:
    from .video import is_video

    return is_video(path)


class FrameBar:
    """A progress bar in frames per second, with the time left (stderr, terminal only)."""

    def __init__(self, enabled: bool, prefix: str = "") -> None:
        self.enabled = enabled and _tty()
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
        "--crf", default=18, show_default=True, type=click.IntRange(0, 51),
        help="Video only: H.264 quality (lower is better and larger).")(func)
    return click.option(
        "--codec", "video_codec", type=click.Choice(["ffv1", "h264"]), default=None,
        help="Video only: the output's codec [default: from its extension: .mkv FFV1, "
             "lossless; .mp4 H.264, lossy].")(func)


def track_gap_option(func):
    return click.option(
        "--track-gap", default=5, show_default=True, type=click.IntRange(0), metavar="N",
        help="Video only: a face the detector misses for up to N frames in a row is still "
             "anonymized (its box interpolated along its track, or carried for N frames "
             "before its first and after its last detection); a person unseen for longer "
             "may come back as a new track (another identity).")(func)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


class LazyGroup(click.Group):
    """A group whose heavy commands are imported only when used (or listed in --help).

    ``lazy`` maps a command name to ``"module:attribute"``; the commands written in this
    file import nothing heavy at module level, so ``--version``, ``--help``, ``keygen``
    and ``inspect`` start without torch.
    """

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            import importlib

            module, _, attribute = self.lazy[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy={"eval": "faceveil.evaluation.command:eval_command",
                                   "serve": "faceveil.web.command:serve_command"},
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceveil")
def main() -> None:
    """Secure, reversible face anonymization with diffusion models.

    \b
    faceveil keygen -o my.key
    faceveil anonymize photo.jpg -o anon.png --key-file my.key
    faceveil recover anon.png -o back.png --key-file my.key
    faceveil inspect anon.png
    faceveil serve                  # the same in a web page on this machine
    """


@main.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the new key file (mode 0600).")
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
@handle_errors
def keygen(output: str, force: bool) -> None:
    """Write a new random 256-bit key file, readable by its owner only.

    Keep it safe: without it the original faces cannot be recovered, and anyone who
    has it can recover them.
    """
    from .keys import generate_key_file

    generate_key_file(output, overwrite=force)
    _note(f"wrote key {output}")


def _model_option(help_text: str):
    return click.option("--model", "-m", default=None, metavar="ID_OR_DIR", help=help_text)


DETECTOR_CHOICES = ["centerface", "hog", "cnn", "centerface+hog", "centerface+cnn", "hog+cnn",
                    "both"]


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter("must be a finite number")
    return value


def detection_options(func):
    """--detector, --threshold and --min-face (defaults: faces.DEFAULT_DETECTOR,
    faces.DETECTORS' thresholds, faces.DEFAULT_MIN_FACE; tests check the help says so)."""
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
        "--detector", type=click.Choice(DETECTOR_CHOICES), default=None,
        help="Face detector [default: centerface]; a+b is their union; both = hog+cnn.")(func)


@main.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output PNG, clip (.mkv or .mp4) for a video INPUT, or output folder "
                   "when INPUT is a folder.")
@key_options
@_model_option("Preset name, local diffusers folder or Hugging Face id (default: built-in).")
@click.option("--steps", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="DDIM steps.")
@click.option("--spacing", default="leading", show_default=True,
              type=click.Choice(["leading", "trailing", "linspace"]), help="Timestep spacing.")
@click.option("--method", type=click.Choice(["exact-steps", "plain"]), default="exact-steps",
              show_default=True,
              help="Inversion: each DDIM step solved exactly (near-exact recovery), or the "
                   "paper's single pass (faster, lossier).")
@click.option("--context", type=click.Choice(["masked", "own"]), default="masked",
              show_default=True,
              help="Outside-mask trajectory re-injected while denoising: one recovery can "
                   "recompute exactly (masked) or the original's own (the paper's).")
@click.option("--lossless", is_flag=True,
              help="Also store each face's original pixels, compressed and sealed under the "
                   "key: recovery with the key is then bit-exact at full resolution.")
@click.option("--flip", "flip_kind", type=click.Choice(["mixed", "signs"]), default="mixed",
              show_default=True,
              help="Key operation on the noise: signs flipped in a keyed orthogonal basis "
                   "with the noise norm hidden (resists linking a file to its original), or "
                   "the paper's plain sign flip (for comparison).")
@click.option("--deniable", is_flag=True,
              help="Store no key check and no MAC: a wrong key then yields another face, not "
                   "an error. Nothing in such a file is authenticated (see SECURITY.md); "
                   "incompatible with --lossless, and the input's metadata is not kept.")
@click.option("--sidecar", is_flag=True,
              help="Also write the metadata to OUT.faceveil.json (survives re-encoding).")
@click.option("--aligned", is_flag=True, help="INPUT is an aligned face crop: no detection.")
@click.option("--mask", type=click.Path(dir_okay=False),
              help="Mask image, same size as INPUT: white = replace, black = keep.")
@click.option("--box", "boxes", multiple=True, metavar="X,Y,W,H",
              help="Add a face the detector missed (repeatable).")
@click.option("--exclude", multiple=True, type=int, metavar="N",
              help="Leave detected face N alone (see `faceveil detect`; repeatable).")
@detection_options
@click.option("--report", type=click.Path(dir_okay=False),
              help="Write a JSON report: per image, the faces anonymized and the "
                   "candidates left out (low scores, too small, excluded), with boxes.")
@click.option("--parser-weights", type=click.Path(dir_okay=False),
              help="BiSeNet face-parsing weights (79999_iter.pth): masks from the parser "
                   "instead of landmarks.")
@click.option("--no-face", type=click.Choice(["skip", "copy", "error"]), default="skip",
              show_default=True,
              help="When no face is found: write nothing (skip), write the image "
                   "unchanged but stripped of metadata (copy), or fail (error).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, or auto.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1),
              help="Faces per model batch.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes.")
@video_options
@track_gap_option
@click.option("--per-frame", is_flag=True,
              help="Video only: run the model on every frame's faces, instead of once per "
                   "track segment (a face made once and pasted into each frame, so a person "
                   "keeps one face). Each frame's faces can then be recovered from the "
                   "pixels by diffusion (.mkv), without their sealed originals, but the "
                   "synthetic face changes from frame to frame, and it is about 10x slower.")
@ray_options
@handle_errors
def anonymize(input, output, key_file, passphrase_stdin, model, steps, spacing, method, context,
              lossless, flip_kind, deniable,
              sidecar, aligned, mask, boxes, exclude, detector, threshold, min_face, report,
              parser_weights, no_face, device, batch_size, force, quiet, video_codec, crf,
              track_gap, per_frame, use_ray, ray_address, ray_workers) -> None:
    """Replace every face in INPUT with another identity, reversibly.

    INPUT is an image, a video clip or a folder of them; OUTPUT is a PNG, a clip (.mkv:
    lossless FFV1; .mp4: H.264) or a folder, and carries everything recovery needs
    except the key. In a clip, each person (a track) keeps one synthetic face, made once
    and moved with their head, and each frame's original faces are sealed in the clip.
    """
    from . import api, container, faces, images

    key = get_key(key_file, passphrase_stdin, confirm=True)
    if use_ray or ray_address:
        if mask or parser_weights or report:
            raise InputError("--mask, --parser-weights and --report cannot be used with --ray")
        _no_video_on_ray(Path(input))
        _run_on_ray(
            "anonymized", "anonymize_folder", quiet, src=input, dst=output, key=key,
            address=ray_address, device=device, workers=ray_workers, model=model,
            force=force, sidecar=sidecar, no_face=no_face, protected=[key_file],
            steps=steps, spacing=spacing, method=method, context=context, lossless=lossless,
            deniable=deniable, flip=flip_kind, batch_size=batch_size, aligned=aligned,
            boxes=[_parse_box(b) for b in boxes], exclude=list(exclude), detector=detector,
            threshold=threshold, min_face=min_face)
        return
    options = dict(
        model=model, device=device, steps=steps, spacing=spacing, method=method,
        context=context, lossless=lossless, deniable=deniable, flip=flip_kind,
        batch_size=batch_size,
        boxes=[_parse_box(b) for b in boxes], exclude=list(exclude), detector=detector,
        threshold=threshold, min_face=min_face, parser=_load_parser(parser_weights),
    )
    if report:
        images.check_output(report, [input, output, mask, key_file], force)
    report_rows: list[dict] = []

    def outputs(dst: Path) -> list[Path]:
        if not sidecar:
            return [dst]
        if dst.suffix.lower() in (".mkv", ".mp4"):
            from .video import sidecar_path

            return [dst, sidecar_path(dst)]
        return [dst, api.sidecar_path(dst)]

    def one_video(src: Path, dst: Path, prefix: str = "") -> tuple[int, list[str]]:
        from .video import anonymize_video

        if mask or aligned or boxes or exclude:
            raise InputError("--mask, --aligned, --box and --exclude apply to images, not "
                             f"to videos ({str(src)!r})")
        bar = FrameBar(not quiet, prefix)
        try:
            result = anonymize_video(
                src, dst, key, codec=video_codec, crf=crf, track_gap=track_gap,
                per_frame=per_frame, sidecar=sidecar, no_face=no_face, force=force,
                progress=bar,
                protected=[mask, key_file],
                **{k: v for k, v in options.items() if k not in ("boxes", "exclude")})
        except NoFaceError:
            report_rows.append(_video_report_row(src, None, None))
            raise
        finally:
            bar.close()
        report_rows.append(_video_report_row(src, result.output, result))
        notes = [result.summary(), *result.notes]
        if result.left_out:
            notes.append(f"{result.left_out} detection(s) left out (low scores, too small): "
                         "check them with `faceveil detect` (or --report)")
        return result.faces, notes

    def start(src: Path, dst: Path):
        """Checks and decoding before any model work."""
        if dst.suffix.lower() != ".png":
            raise InputError(f"anonymized output must be a .png file (got {str(dst)!r})")
        for path in outputs(dst):
            images.check_output(path, [src, mask, key_file], force)
        return images.load_image(src)

    def finish(src: Path, dst: Path, loaded, result) -> tuple[int, list[str]]:
        """Write what anonymization gave (an Anonymized, or the error that stopped it)."""
        if isinstance(result, NoFaceError):
            report_rows.append(_report_row(src, dst if no_face == "copy" else None, [],
                                           getattr(result, "skipped", [])))
            if no_face == "error":
                raise result
            if no_face == "copy":
                images.write_atomic(dst, images.encode_image(loaded.pixels, "PNG"))
                return 0, [*loaded.notes, "no face found: copied without metadata"]
            return 0, [*loaded.notes, "no face found: nothing written"]
        if isinstance(result, Exception):
            raise result
        images.write_atomic(dst, result.png_bytes())
        if sidecar:
            images.write_atomic(api.sidecar_path(dst), container.dumps(result.record).encode())
        report_rows.append(_report_row(src, dst, result.regions, result.skipped))
        return len(result.regions), list(result.notes) + _left_out_notes(result.skipped)

    def name(p: Path) -> str:
        if not _is_video(p):
            return p.stem + ".png"
        return p.stem + (".mp4" if video_codec == "h264" else ".mkv")

    def one(src: Path, dst: Path, prefix: str = "") -> tuple[int, list[str]]:
        if _is_video(src):
            return one_video(src, dst, prefix)
        loaded = start(src, dst)
        user_mask = images.load_mask(mask, loaded.pixels.shape[1::-1]) if mask else None
        progress = Progress(not quiet, prefix)
        try:
            result = api.anonymize(loaded, key, mask=user_mask, aligned=aligned,
                                   progress=progress, **options)
        except NoFaceError as e:
            result = e
        finally:
            progress.close()
        return finish(src, dst, loaded, result)

    def many(chunk: list[tuple[Path, Path]]) -> list:
        """Several images at once: their faces fill the model's batches together."""
        outcomes: list = [None] * len(chunk)
        ready = []
        for k, (src, dst) in enumerate(chunk):
            try:
                if _is_video(src):  # a clip batches its own frames
                    outcomes[k] = one_video(src, dst, f"{src.name}: ")
                else:
                    ready.append((k, start(src, dst)))
            except Exception as e:  # noqa: BLE001 - reported for this image only
                outcomes[k] = e
        if ready:
            progress = Progress(not quiet, f"{len(ready)} image(s): ")
            try:
                results = api.anonymize_many([loaded for _, loaded in ready], key,
                                             aligned=aligned, progress=progress, **options)
            except Exception as e:  # noqa: BLE001 - the whole chunk failed the same way
                results = [e] * len(ready)
            finally:
                progress.close()
            for (k, loaded), result in zip(ready, results, strict=True):
                try:
                    outcomes[k] = finish(*chunk[k], loaded, result)
                except Exception as e:  # noqa: BLE001
                    outcomes[k] = e
        return outcomes

    src, dst = Path(input), Path(output)
    jobs = _plan(src, dst, name, outputs, force, quiet)
    if jobs is not None:  # a folder: fail early on a bad --model, not once per image
        api.get_model(model, device)
    try:
        # Images of a folder go through the model together (a user mask is one image's).
        _run(src, dst, jobs, one, quiet, verb="anonymized",
             many=None if mask else (many, batch_size))
    finally:  # also when some file failed: the report says what was done
        if report:
            settings = faces.detector_settings(detector, threshold, min_face)
            images.write_atomic(report, (json.dumps(_report(settings, report_rows), indent=2)
                                         + "\n").encode())


def _no_video_on_ray(src: Path) -> None:
    if src.is_dir() and any(_is_video(p) for p in _image_files(src)):
        raise InputError(f"{str(src)!r} holds videos, which --ray does not process; run "
                         "without --ray")


def _video_report_row(src: Path, dst: Path | None, result) -> dict:
    """A clip's entry in ``anonymize --report``: faces and what was left out (with the
    frame numbers of the candidates, the first 200)."""
    return {"input": str(src), "output": None if dst is None else str(dst),
            "anonymized": result.faces if result else 0,
            "left_out": result.left_out if result else 0, "faces": [],
            "candidates": result.candidates if result else [],
            "frames": result.frames if result else None,
            "tracks": result.tracks if result else 0,
            "filled": result.filled if result else 0,
            "segments": result.segments if result else 0}


def _left_out_notes(skipped: list[dict]) -> list[str]:
    """A warning for detected faces left unchanged, a note for low-score candidates."""
    notes = []
    faces_ = [s for s in skipped if s.get("kind") != "low-score"]
    if faces_:
        where = "; ".join(f"{s.get('reason', 'skipped')} at {s.get('box')}" for s in faces_)
        notes.append(f"{len(faces_)} face(s) not anonymized: {where}")
    low = len(skipped) - len(faces_)
    if low:
        notes.append(f"{low} low-score candidate(s) left out: check them with `faceveil "
                     "detect` (or --report) and add missed faces with --box")
    return notes


def _face_json(index: int, region) -> dict:
    return {"index": region.index if region.index is not None else index,
            "box": list(region.box), "source": region.source, "score": region.score}


def _report_row(src: Path, dst: Path | None, regions: list, skipped: list[dict]) -> dict:
    return {"input": str(src), "output": None if dst is None else str(dst),
            "anonymized": len(regions), "left_out": len(skipped),
            "faces": [_face_json(i, r) for i, r in enumerate(regions)],
            "candidates": list(skipped)}


def _report(settings: dict, rows: list[dict]) -> dict:
    """``anonymize --report``: totals, the detection settings, one entry per image."""
    return {"anonymized": sum(r["anonymized"] for r in rows),
            "left_out": sum(r["left_out"] for r in rows), "detection": settings,
            "images": rows}


@main.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Recovered image (format from the extension; PNG keeps it lossless), "
                   "clip (.mkv: lossless; .mp4: re-encoded), or output folder when INPUT "
                   "is a folder.")
@key_options
@_model_option("Where to find the model the file names (overrides its stored reference).")
@click.option("--method", type=click.Choice(["lossless", "exact-steps", "plain"]), default=None,
              help="Recovery method (default: lossless when the file has it, else the "
                   "diffusion method it was anonymized for).")
@click.option("--meta", type=click.Path(dir_okay=False),
              help="Metadata exported with `inspect --export` or `--sidecar`, for images "
                   "whose PNG chunk was lost (for a clip: its .faceveil.jsonl records).")
@click.option("--deniable", is_flag=True,
              help="Accept a file made with --deniable (no key check, no MAC): nothing in it "
                   "is authenticated, and a wrong key gives other faces instead of an error.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, or auto.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes.")
@video_options
@ray_options
@handle_errors
def recover(input, output, key_file, passphrase_stdin, model, method, meta, deniable, device,
            batch_size, force, quiet, video_codec, crf, use_ray, ray_address,
            ray_workers) -> None:
    """Restore the original faces of an anonymized image or clip (needs the key)."""
    from . import api, images

    key = get_key(key_file, passphrase_stdin, confirm=False)
    if use_ray or ray_address:
        if meta:
            raise InputError("--meta cannot be used with --ray (each file carries its own)")
        _no_video_on_ray(Path(input))
        _run_on_ray("recovered", "recover_folder", quiet, src=input, dst=output, key=key,
                    address=ray_address, device=device, workers=ray_workers, model=model,
                    force=force, protected=[key_file], method=method, batch_size=batch_size,
                    deniable=deniable)
        return
    if model is not None:
        api.get_model(model, device)  # fail early on a bad --model

    def one_video(src: Path, dst: Path, prefix: str = "") -> tuple[int, list[str]]:
        from .video import recover_video

        if deniable:
            raise InputError("--deniable does not apply to videos (their records are "
                             "always authenticated)")
        bar = FrameBar(not quiet, prefix)
        try:
            result = recover_video(src, dst, key, meta=meta, model=model, device=device,
                                   batch_size=batch_size, method=method, codec=video_codec,
                                   crf=crf, force=force, progress=bar, protected=[key_file])
        finally:
            bar.close()
        return result.faces, [result.summary(), *result.notes]

    def one(src: Path, dst: Path, prefix: str = "") -> tuple[int, list[str]]:
        if _is_video(src):
            return one_video(src, dst, prefix)
        images.check_output(dst, [src, meta, key_file], force)
        fmt = images.output_format(dst)
        progress = Progress(not quiet, prefix)
        try:
            result = api.recover(src, key, meta=meta, model=model, device=device,
                                 batch_size=batch_size, progress=progress, method=method,
                                 deniable=deniable)
        finally:
            progress.close()
        notes = list(result.notes)
        images.write_atomic(dst, result.encode(fmt, notes))
        return len(result.record["faces"]), notes

    def name(p: Path) -> str:  # a clip comes back lossless unless --codec h264
        if not _is_video(p):
            return p.name
        return p.stem + (".mp4" if video_codec == "h264" else ".mkv")

    src, dst = Path(input), Path(output)
    _run(src, dst, _plan(src, dst, name, lambda d: [d], force, quiet), one, quiet,
         verb="recovered")


def _plan(src: Path, dst: Path, name, outputs, force: bool, quiet: bool):
    """The (input, output) pairs of a folder, decided before any work; None for a file.

    ``name(input)`` is an output's file name and ``outputs(output)`` every file one
    input writes (the output and, say, its sidecar). Outputs never collide with each
    other (case-insensitively, for the file systems that ignore case) nor with an
    input: a colliding name gets the input's extension (``x_jpg.png``) and, if needed, a
    number; each renaming is said here. Existing outputs are refused without --force
    and the output folder must be writable: all before the first model run.
    """
    from . import images

    if not src.is_dir():
        return None
    if dst.exists() and not dst.is_dir():
        raise InputError(f"{str(dst)!r} is a file; the output of a folder must be a folder")
    if not dst.exists() and dst.suffix.lower() in _media_suffixes():
        raise InputError(f"{str(src)!r} is a folder, so the output must be a folder too, "
                         f"not {str(dst)!r}")
    files = _image_files(src)
    if not files:
        raise InputError(f"no images or videos in {str(src)!r} (looked for "
                         f"{', '.join(sorted(_media_suffixes()))})")
    probe = dst
    while not probe.exists():
        probe = probe.parent
    images.check_writable(probe)
    inputs = {str(p.resolve()).lower() for p in files}
    taken: set[str] = set()

    def names(path: Path) -> set[str]:
        return {str(p.resolve()).lower() for p in outputs(path)}

    def free(path: Path) -> bool:
        return not (names(path) & inputs or names(path) & taken)

    wanted = collections.Counter(str((dst / name(p)).resolve()).lower() for p in files)
    jobs, renamed = [], []
    for path in files:
        target = dst / name(path)
        if wanted[str(target.resolve()).lower()] > 1 or not free(target):  # rename them all
            base = f"{target.stem}_{path.suffix.lstrip('.').lower()}"
            target = target.with_name(base + target.suffix)
            k = 2
            while not free(target):
                target, k = target.with_name(f"{base}-{k}{target.suffix}"), k + 1
            renamed.append(f"{path.name} -> {target.name}")
        taken |= {str(p.resolve()).lower() for p in outputs(target)}
        jobs.append((path, target))
    if renamed:
        _note("output names that would collide with an input or with each other are renamed: "
              + ", ".join(renamed), quiet)
    existing = [p.name for _, t in jobs for p in outputs(t) if p.exists()]
    if existing and not force:
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise InputError(f"{len(existing)} output(s) exist in {str(dst)!r} "
                         f"({', '.join(existing[:5])}{more}); use --force to overwrite them")
    return jobs


def _run(src: Path, dst: Path, jobs, one, quiet: bool, *, verb: str, many=None) -> None:
    """One file (``jobs`` None), or the planned jobs of a folder with a progress bar on a
    terminal, one line per image, and a summary. An image that fails, for any reason,
    is reported and the batch goes on; the exit status is then 1.

    ``many``: ``(function, n)`` to process the folder n images at a time; the function
    takes a list of (input, output) and returns, per image, ``(faces, notes)`` or the
    exception that stopped it."""
    if jobs is None:
        t0 = time.perf_counter()
        n, notes = one(src, dst)
        for note in notes:
            _note(f"{src}: {note}", quiet)
        if n:
            _note(f"{verb} {n} face(s) -> {dst} ({time.perf_counter() - t0:.1f} s)", quiet)
        return
    from tqdm import tqdm

    created = [d for d in (dst, *dst.parents) if not d.exists()]
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot make the output folder {str(dst)!r}: "
                         f"{e.strerror or e}") from None
    bar = tqdm(total=len(jobs), desc=verb, unit="image", disable=quiet or not _tty())
    say = bar.write if not bar.disable else functools.partial(click.echo, err=True)
    faces = 0
    failed = 0

    def outcome_of(path: Path, target: Path):
        try:
            return one(path, target, prefix=f"{path.name}: ")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - reported below, the others go on
            return e

    def chunks():
        if many is None:
            for path, target in jobs:
                yield [(path, target)], [outcome_of(path, target)]
            return
        function, size = many
        for at in range(0, len(jobs), size):
            chunk = jobs[at: at + size]
            yield chunk, function(chunk)

    try:
        i = 0
        for chunk, outcomes in chunks():
            for (path, target), outcome in zip(chunk, outcomes, strict=True):
                i += 1
                where = f"[{i}/{len(jobs)}] {path.name}"
                if isinstance(outcome, FaceveilError):
                    failed += 1
                    say(f"{where}: FAILED: {outcome}")
                elif isinstance(outcome, Exception):  # a bug on one image
                    if os.environ.get("FACEVEIL_DEBUG"):
                        raise outcome
                    failed += 1
                    say(f"{where}: FAILED: unexpected {type(outcome).__name__}: {outcome} "
                        "(a bug; set FACEVEIL_DEBUG=1 for details)")
                else:
                    n, notes = outcome
                    faces += n
                    if not quiet:
                        say(f"{where}: {n} face(s)" + (f" -> {target.name}" if n else "")
                            + (f" ({'; '.join(notes)})" if notes else ""))
                bar.update(1)
    finally:
        bar.close()
        for folder in created:  # nothing was written there: leave no empty folder behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    if not quiet:
        click.echo(f"{verb} {faces} face(s) in {len(jobs) - failed} image(s); "
                   f"{failed} failed", err=True)
    if failed:  # the batch went on, but the exit status says not everything worked
        sys.exit(1)


def _summarize(verb: str, done: list, failed: list, quiet: bool, extra: str = "") -> None:
    """Per-file lines and totals of a folder run; exit 1 when any file failed."""
    if not quiet:
        for f, n, notes in done:
            click.echo(f"  {f}: {n} face(s)" + (f" ({'; '.join(notes)})" if notes else ""),
                       err=True)
        for f, r in failed:
            click.echo(f"  {f}: FAILED: {r}", err=True)
        click.echo(f"{verb} {sum(n for _, n, _ in done)} face(s) in {len(done)} image(s); "
                   f"{len(failed)} failed{extra}", err=True)
    if failed:  # the batch went on, but the exit status says not everything worked
        sys.exit(1)


def _run_on_ray(verb: str, call, quiet: bool, **kwargs) -> None:
    """Run a folder through :mod:`faceveil.scale` with a progress bar and a summary."""
    from tqdm import tqdm

    from . import scale

    with tqdm(desc=f"{verb} (Ray)", unit="image", disable=quiet or not _tty()) as bar:
        report = getattr(scale, call)(progress=lambda name, ok: bar.update(1), **kwargs)
    rate = len(report.done) / report.seconds if report.seconds else 0.0
    _summarize(verb, report.done, report.failed, quiet,
               f" ({report.workers} Ray worker(s) on {report.device}, {report.seconds:.1f} s, "
               f"{rate:.2f} image(s)/s)")


@main.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Preview image (format from the extension: .png, .jpg, ...): boxes, "
                   "masks and numbers of the faces found; for a clip, a preview clip "
                   "(.mkv or .mp4) with each face's track number.")
@_model_option("Model whose crop framing and resolution to use (default: built-in).")
@click.option("--box", "boxes", multiple=True, metavar="X,Y,W,H", help="Add a face (repeatable).")
@click.option("--exclude", multiple=True, type=int, metavar="N", help="Leave face N out.")
@detection_options
@click.option("--aligned", is_flag=True, help="INPUT is an aligned face crop.")
@click.option("--parser-weights", type=click.Path(dir_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing preview.")
@track_gap_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def detect(input, output, model, boxes, exclude, detector, threshold, min_face, aligned,
           parser_weights, device, force, track_gap, quiet) -> None:
    """Show what `anonymize` would replace: writes a preview image and prints the faces,
    the faces skipped (with reasons, red on the preview) and the low-score candidates
    that may be missed faces (dashed yellow) as one JSON document. For a clip: a preview
    clip (track numbers; + marks a face filled in where the detector missed it) and the
    tracks with their boxes per frame."""
    from . import api, faces, images

    if _is_video(Path(input)):
        from .video import detect_video

        if boxes or exclude or aligned:
            raise InputError("--box, --exclude and --aligned apply to images, not to videos")
        bar = FrameBar(not quiet)
        try:
            report = detect_video(input, output, model=model, device=device,
                                  track_gap=track_gap, force=force, progress=bar,
                                  detector=detector, threshold=threshold, min_face=min_face,
                                  parser=_load_parser(parser_weights))
        finally:
            bar.close()
        report["detection"] = faces.detector_settings(detector, threshold, min_face)
        for note in report["notes"]:
            _note(f"{input}: {note}")
        click.echo(json.dumps(report, indent=2, default=float))
        return
    fmt = images.output_format(output)
    images.check_output(output, [input], force)
    loaded = images.load_image(input)
    backbone = api.get_model(model, device)
    regions, skipped = api.find_regions(
        loaded.pixels, backbone, aligned=aligned, boxes=[_parse_box(b) for b in boxes],
        exclude=list(exclude), detector=detector, threshold=threshold, min_face=min_face,
        parser=_load_parser(parser_weights),
    )
    preview = faces.draw_preview(loaded.pixels, regions, skipped)
    images.write_atomic(output, images.encode_image(preview, fmt))
    for note in loaded.notes:
        _note(f"{input}: {note}")
    report = {
        "image": {"width": int(loaded.pixels.shape[1]), "height": int(loaded.pixels.shape[0])},
        "model": backbone.model_id,
        "detection": faces.detector_settings(detector, threshold, min_face),
        "faces": [_face_json(i, r) for i, r in enumerate(regions)],
        "skipped": [s for s in skipped if s.get("kind") != "low-score"],
        "candidates": [s for s in skipped if s.get("kind") == "low-score"],
        "notes": api.resolution_notes(regions, backbone),
    }
    click.echo(json.dumps(report, indent=2, default=float))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@handle_errors
def models(as_json) -> None:
    """List the named models: resolution, size, and whether they are on this machine."""
    from .models import DEFAULT_MODEL, PRESETS, available_locally

    rows = [{"name": p.name, "source": p.repo or "built-in", "resolution": p.resolution,
             "size": p.size, "available": available_locally(p), "default": p.name == DEFAULT_MODEL,
             "description": p.description} for p in PRESETS.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        where = "available" if r["available"] else f"missing: hf download {r['source']}"
        click.echo(f"{mark} {r['name']:<18} {r['resolution']:>4}px  {r['size']:>8}  {where}")
        click.echo(f"    {r['description']}")
    click.echo("(* default; --model also takes a local diffusers folder or a Hugging Face id)")


@main.command()
@click.argument("input", type=click.Path())
@click.option("--export", type=click.Path(dir_okay=False),
              help="Also write the metadata to this JSON file (for `recover --meta`); for a "
                   "clip, all its records as JSON Lines (.jsonl).")
@click.option("--force", is_flag=True, help="Overwrite an existing export file.")
@handle_errors
def inspect(input, export, force) -> None:
    """Print an anonymized file's metadata as one JSON document (nothing secret)."""
    from . import container, images  # not api: inspect must not load torch

    if _is_video(Path(input)):
        from .video import inspect_video

        click.echo(json.dumps(inspect_video(input, export=export, force=force), indent=2,
                              sort_keys=True))
        return
    if export:
        images.check_output(export, [input], force)
    record = container.read_record(input)
    if export:
        images.write_atomic(export, container.dumps(record).encode())
    click.echo(json.dumps(record, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
