"""``faceveil recover``: the original faces back, with the key."""

from __future__ import annotations

from pathlib import Path

import click

from .. import batch, media
from ..errors import InputError
from ..options import DEFAULTS, RECOVERY_METHODS
from .common import (
    FrameBar,
    Outcome,
    Progress,
    build_options,
    each,
    existing_input,
    folder_only,
    force_options,
    get_holder,
    handle_errors,
    identity_option,
    key_options,
    model_option,
    print_timings,
    process_age,
    ray_options,
    run_folder,
    run_on_ray,
    run_one,
    timings_option,
    video_options,
)

# How each recovery path is named in the line the command prints.
PATHS = {"lossless": "from the sealed originals (bit-exact, no model)",
         "exact-steps": "by diffusion (exact-steps)", "plain": "by diffusion (plain)",
         "mixed": "from the sealed originals, and the rest by diffusion"}


@click.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Recovered image (format from the extension; PNG keeps it lossless), "
                   "clip (.mkv: lossless; .mp4: re-encoded), or output folder when INPUT "
                   "is a folder.")
@key_options
@identity_option
@click.option("--face-key", type=click.Path(dir_okay=False),
              help="A face key made by `faceveil share`: recover that face alone (the "
                   "others stay anonymized).")
@model_option("Where to find the model the file names (overrides its stored reference).")
@click.option("--method", type=click.Choice(list(RECOVERY_METHODS)), default=None,
              help="Recovery method (default: lossless when the file has it, else the "
                   "diffusion method it was anonymized for).")
@click.option("--meta", type=click.Path(dir_okay=False),
              help="Metadata exported with `inspect --export` or `--sidecar`, for images "
                   "whose PNG chunk was lost (for a clip: its .faceveil.jsonl records).")
@click.option("--deniable", is_flag=True,
              help="Accept a file made with --deniable (no key check, no MAC): nothing in it "
                   "is authenticated, and a wrong key gives other faces instead of an error.")
@click.option("--device", default=DEFAULTS.runtime.device, show_default=True,
              help="cpu, cuda, or auto.")
@click.option("--batch-size", default=DEFAULTS.runtime.batch_size, show_default=True,
              type=click.IntRange(1))
@force_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes.")
@timings_option
@video_options
@ray_options
@handle_errors
def recover(input, output, key_file, passphrase_stdin, identities, face_key, model, method,
            meta, deniable, quiet, use_ray, ray_address, ray_workers, timings,
            **params) -> None:
    """Restore the original faces of an anonymized image or clip (needs the key)."""
    from ..timings import Timings

    spent = Timings()
    src, dst = existing_input(input), Path(output)
    options = build_options(params)
    force = options.output.force
    if face_key:
        from ..keys import FaceShare

        if key_file or passphrase_stdin or identities:
            raise InputError("--face-key opens one face by itself: give it without a key "
                             "or identity")
        key = FaceShare.read(face_key)
        key_file = face_key  # an input the outputs must not overwrite
    else:
        key = get_holder(key_file, passphrase_stdin, confirm=False, identities=identities)
    if use_ray or ray_address:
        if identities or face_key:
            raise InputError("-i and --face-key cannot be used with --ray yet: give a key "
                             "file")
        if meta:
            raise InputError("--meta cannot be used with --ray (each file carries its own)")
        run_on_ray("recovered", "recover_folder", quiet, src=src, dst=dst, key=key,
                   address=ray_address, workers=ray_workers, model=model, options=options,
                   protected=[key_file], method=method, deniable=deniable)
        return
    if model is not None:
        from .. import api

        api.get_model(model, options.runtime.device)  # fail early on a bad --model

    def video(src: Path, dst: Path, prefix: str = "") -> Outcome:
        from ..video import recover_video

        if deniable:
            raise InputError("--deniable does not apply to videos (their records are "
                             "always authenticated)")
        bar = FrameBar(not quiet, prefix)
        try:
            result = recover_video(src, dst, key, meta=meta, options=options, model=model,
                                   method=method, progress=bar, protected=[key_file])
        finally:
            bar.close()
        return result.faces, [result.summary(), *result.notes]

    def one(src: Path, dst: Path, prefix: str = "") -> Outcome:
        from .. import api

        if "imports" not in spent.seconds:
            spent.add("imports", process_age())
        if media.is_video(src):
            return video(src, dst, prefix)
        media.check_output(dst, [src, meta, key_file, *identities], force)
        media.output_format(dst)  # before the model runs
        progress = Progress(not quiet, prefix)
        try:
            result = api.recover(src, key, meta=meta, options=options, model=model,
                                 method=method, deniable=deniable, progress=progress,
                                 timings=spent)
        finally:
            progress.close()
        written = api.recovered_outputs(result, dst, [f"faces recovered {PATHS[result.method]}"])
        with spent.phase("writing"):
            api.publish(written, replace=force)
        return written.faces, written.notes

    if not src.is_dir():
        folder_only(options, src)
        run_one(src, dst, one, quiet, "recovered")
        print_timings(spent, timings)
        return
    from .. import api

    plan = batch.plan(src, dst, lambda p: batch.recovered_name(p, options.video.codec),
                      force=force, resume=api.resume_check(options.output, anonymized=False))
    run_folder(plan, dst, quiet, "recovered", each(one))
    print_timings(spent, timings, f" ({len(plan.items)} file(s))")
