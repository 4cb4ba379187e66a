"""Errors as one line and an exit status, notes and the terminal test: what every
command needs, the fast ones (``keygen``, ``inspect``) included, so this imports only
click and faceveil's errors.

Exit status: 0 success, 1 bad input or usage, 2 command-line syntax, 3 wrong key,
4 missing/corrupt/modified metadata, 5 model problem, 6 no face found, 70 a bug,
130 interrupted, 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import click

from ..errors import FaceveilError, InputError, KeyWarning, MissingExtraError


def fail(message: str, code: int) -> None:
    click.echo(f"faceveil: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func):
    """Turn faceveil's errors into a one-line message and an exit status."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings(), _terminate_cleanly():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except FaceveilError as e:
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except _Terminated:
            fail("terminated", 143)
        except BrokenPipeError:  # the reader of our output went away (`| head`): not an error
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except MemoryError:
            fail("out of memory (try a smaller --batch-size or a smaller image)", 1)
        except Exception as e:  # a bug: say so briefly, full trace on request
            ctx = click.get_current_context(silent=True)  # `models pull`, Ray: torch at root
            missing = MissingExtraError.of(e, ctx.command_path if ctx else "this command")
            if missing is not None:
                fail(str(missing), missing.exit_code)
            if os.environ.get("FACEVEIL_DEBUG"):
                raise
            fail(f"unexpected {type(e).__name__}: {e} (set FACEVEIL_DEBUG=1 for details)", 70)

    return wrapper


class _Terminated(BaseException):
    """SIGTERM, raised where the program is so that it unwinds as after Ctrl-C."""


@contextlib.contextmanager
def _terminate_cleanly():
    """While a command runs, SIGTERM (``kill``, a job scheduler) ends it as Ctrl-C does:
    the files being written are removed on the way out, not left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one plain line, no source paths or line numbers: a warning
    about the key (:class:`faceveil.errors.KeyWarning`), else a note."""
    kind = "warning" if issubclass(category, KeyWarning) else "note"
    click.echo(f"faceveil: {kind}: {message}", err=True)


def existing_input(path: str | os.PathLike) -> Path:
    """A command's INPUT, checked first: a missing file or folder is named as the
    problem, before any output, key or model is looked at."""
    if not os.path.exists(path):
        raise InputError(f"input {str(path)!r} not found (no such file or folder)")
    return Path(path)


def tty() -> bool:
    """Whether stderr is a terminal: progress bars only there, never in logs."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def note(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(message, err=True)
