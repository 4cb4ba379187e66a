"""The ``faceveil`` command line: a thin layer over :mod:`faceveil.api`.

Each command lives in a module of its own (:mod:`.anonymize`, :mod:`.recover`,
:mod:`.tools`; ``eval`` and ``serve`` are registered lazily from their packages); what
they share is in :mod:`.common`. Exit status: 0 success, 1 bad input or usage, 2
command-line syntax, 3 wrong key, 4 missing/corrupt/modified metadata, 5 model problem,
6 no face found.
"""

from __future__ import annotations

import importlib
import os

import click
from click.utils import make_default_short_help

from .. import __version__

# OpenMP threads that spin while they wait take the CPU from each other and from every
# other process: on a busy 2-core machine one model call took 5x longer with 2 spinning
# threads than with 1 (benchmarks/cpu_breakdown.py); with passive waiting, 2 threads were
# as fast as 1 there. libgomp reads this once, when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class LazyGroup(click.Group):
    """A group whose commands are imported only when used (or listed in --help).

    ``lazy`` maps a command name to ``"module:attribute"``; the command modules import
    nothing heavy at module level, so ``--version``, ``--help``, ``keygen`` and
    ``inspect`` start without torch.
    """

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from :data:`SHORT_HELP`, importing no command
        module (``tests/test_cli.py`` checks it against each command's own help)."""
        names = self.list_commands(ctx)
        if any(n not in SHORT_HELP or n in self.commands for n in names):
            return super().format_commands(ctx, formatter)
        limit = formatter.width - 6 - max(len(n) for n in names)  # click's own layout
        with formatter.section("Commands"):
            formatter.write_dl([(n, make_default_short_help(SHORT_HELP[n], limit))
                                for n in names])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, _, attribute = self.lazy[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


COMMANDS = {
    "anonymize": "faceveil.cli.anonymize:anonymize",
    "recover": "faceveil.cli.recover:recover",
    "keygen": "faceveil.cli.basic:keygen",
    "share": "faceveil.cli.holders:share",
    "rewrap": "faceveil.cli.holders:rewrap",
    "detect": "faceveil.cli.tools:detect",
    "models": "faceveil.cli.tools:models",
    "inspect": "faceveil.cli.basic:inspect",
    "eval": "faceveil.evaluation.command:eval_command",
    "serve": "faceveil.web.command:serve_command",
}

# What `faceveil --help` lists: each command's first sentence, shortened to the width
# as click shortens a docstring (kept equal by tests/test_cli.py), so that the list
# imports none of the commands.
SHORT_HELP = {
    "anonymize": "Replace every face in INPUT with another identity, reversibly.",
    "detect": "Show what `anonymize` would replace: writes a preview image and prints the "
              "faces, the faces skipped (with reasons, red on the preview) and the "
              "low-score candidates that may be missed faces (dashed yellow) as one JSON "
              "document.",
    "eval": "Measure anonymization, recovery and key security on the images in DATA.",
    "inspect": "Print an anonymized file's metadata as one JSON document (nothing secret).",
    "keygen": "Write a new random 256-bit key file, readable by its owner only.",
    "models": "List the named models: resolution, size, and whether they are on this "
              "machine.",
    "recover": "Restore the original faces of an anonymized image or clip (needs the key).",
    "rewrap": "Change who can recover a file, without anonymizing it again.",
    "share": "Write a key that recovers one face of one file, and nothing else.",
    "serve": "Start the local web page: anonymize photos (review the detected faces first) "
             "and recover them, in a browser on this machine.",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceveil")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Secure, reversible face anonymization with diffusion models.

    \b
    faceveil keygen -o my.key
    faceveil anonymize photo.jpg -o anon.png --key-file my.key
    faceveil recover anon.png -o back.png --key-file my.key
    faceveil inspect anon.png
    faceveil serve                  # the same in a web page on this machine
    """
    from ..offline import hub_offline

    # Only `faceveil models pull` goes online (the models group decides for its own).
    hub_offline(ctx.invoked_subcommand != "models")
