"""``faceveil share`` and ``faceveil rewrap``: who holds a format 4 file. One face's key
handed out alone, and the file key wrapped for other holders without touching the
pixels."""

from __future__ import annotations

import click

from .. import media
from .common import get_holder, handle_errors, identity_option, key_options, recipient_options
from .output import fail, note


@click.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("--face", "face", required=True, type=click.IntRange(0), metavar="N",
              help="The face to disclose (numbered from 0, as `faceveil inspect` lists "
                   "them).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the face key (mode 0600).")
@key_options
@identity_option
@click.option("--meta", type=click.Path(dir_okay=False),
              help="The metadata exported with `inspect --export` or `--sidecar`.")
@click.option("--force", is_flag=True, help="Overwrite an existing face key file.")
@handle_errors
def share(input, face, output, key_file, passphrase_stdin, identities, meta, force) -> None:
    """Write a key that recovers one face of one file, and nothing else.

    Hand it to whoever may see that face (`recover --face-key`): it opens no other face
    and no other file.
    """
    from .. import api
    from ..keys import write_private

    record = api.read_record(input, meta)
    if face >= len(record.faces):
        fail(f"--face {face}: this file has {len(record.faces)} face(s), numbered from 0", 2)
    key = get_holder(key_file, passphrase_stdin, confirm=False, identities=identities)
    media.check_output(output, [input, meta, key_file, *identities], force)
    shared = api.share_face(input, key, face, meta=meta)
    write_private(output, shared.to_bytes(), overwrite=force, what="face key")
    note(f"wrote the key of face {face} of {input} to {output}")


@click.command()
@click.argument("input", type=click.Path(dir_okay=False))
@key_options
@identity_option
@recipient_options
@click.option("--remove-recipient", "remove", multiple=True, metavar="PUBKEY",
              help="Take this recipient off the file (repeatable).")
@click.option("--to-key", type=click.Path(dir_okay=False),
              help="Wrap the file key under this key file instead of recipients.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the re-wrapped file here [default: rewrite INPUT in place].")
@click.option("--force", is_flag=True, help="Overwrite an existing OUTPUT.")
@handle_errors
def rewrap(input, key_file, passphrase_stdin, identities, recipients, recipients_files, remove,
           to_key, output, force) -> None:
    """Change who can recover a file, without anonymizing it again.

    Opens the file with its key or identity (-k, -i), then wraps its file key to the
    file's recipients plus -r/-R minus --remove-recipient, or to --to-key. Only the
    record changes (atomically); the pixels stay byte-identical. A removed holder who
    kept an old copy of the file can still open that copy.
    """
    from .. import api
    from ..keys import KeySource
    from ..recipients import Recipients

    key = get_holder(key_file, passphrase_stdin, confirm=False, identities=identities)
    add = (Recipients.parse(recipients, recipients_files)
           if recipients or recipients_files else None)
    new_key = KeySource.from_key_file(to_key) if to_key else None
    if output:
        media.check_output(output, [input, key_file, to_key, *identities], force)
    api.rewrap(input, key, add=add, remove=remove, to_key=new_key, output=output,
               force=force)
    note(f"re-wrapped {output or input}")
