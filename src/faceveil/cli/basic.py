"""The commands that load no model and start in a fraction of a second: ``keygen`` and
``inspect``. They import click, the key file writer and the record reader, nothing of
the options or the pipeline (``tests/test_startup.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import media
from .output import existing_input, handle_errors, note


@click.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the new key file (mode 0600).")
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
@click.option("--identity", is_flag=True,
              help="Write an age X25519 identity instead (the text age-keygen writes) and "
                   "print its public recipient age1…, for `anonymize -r`.")
@handle_errors
def keygen(output: str, force: bool, identity: bool) -> None:
    """Write a new random 256-bit key file, readable by its owner only.

    Keep it safe: without it the original faces cannot be recovered, and anyone who
    has it can recover them. With --identity, the file is a private age identity and
    the line printed is its public recipient, which may be shared freely.
    """
    if identity:
        from ..keys import write_private
        from ..recipients import new_identity

        text, public = new_identity()
        write_private(output, text.encode("ascii"), overwrite=force, what="identity")
        note(f"wrote identity {output}")
        click.echo(public)
        return
    from ..keys import generate_key_file

    generate_key_file(output, overwrite=force)
    note(f"wrote key {output}")


@click.command()
@click.argument("input", type=click.Path())
@click.option("--export", type=click.Path(dir_okay=False),
              help="Also write the metadata to this JSON file (for `recover --meta`); for a "
                   "clip, all its records as JSON Lines (.jsonl).")
@click.option("--force", is_flag=True, help="Overwrite an existing export file.")
@handle_errors
def inspect(input, export, force) -> None:
    """Print an anonymized file's metadata as one JSON document (nothing secret)."""
    from ..format import png  # not the api: inspect must not load torch

    existing_input(input)
    if media.is_video(Path(input)):
        from ..video.inspect import inspect_video

        click.echo(json.dumps(inspect_video(input, export=export, force=force), indent=2,
                              sort_keys=True))
        return
    if export:
        media.check_output(export, [input], force)
    record = png.read(input)
    if export:
        media.write_atomic(export, png.sidecar_bytes(record), replace=force)
    click.echo(json.dumps(record.public(), indent=2, sort_keys=True))
