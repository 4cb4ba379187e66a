"""The commands that need the face tools or the model catalogue: ``detect`` and ``models``
(``keygen`` and ``inspect`` are in :mod:`faceveil.cli.basic`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import media
from ..errors import InputError
from .common import (
    FrameBar,
    build_options,
    detection_options,
    existing_input,
    handle_errors,
    model_option,
    note,
    track_gap_option,
)


@click.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Preview image (format from the extension: .png, .jpg, ...): boxes, "
                   "masks and numbers of the faces found; for a clip, a preview clip "
                   "(.mkv or .mp4) with each face's track number.")
@model_option("Model whose crop framing and resolution to use (default: the default "
              "model, see `faceveil models`).")
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
def detect(input, output, model, quiet, **params) -> None:
    """Show what `anonymize` would replace: writes a preview image and prints the faces,
    the faces skipped (with reasons, red on the preview) and the low-score candidates
    that may be missed faces (dashed yellow) as one JSON document. For a clip: a preview
    clip (track numbers; + marks a face filled in where the detector missed it) and the
    tracks with their boxes per frame."""
    from .. import api, batch, faces, images

    existing_input(input)
    options = build_options(params)
    d = options.detection
    settings = faces.detector_settings(d.detector, d.threshold, d.min_face)
    if media.is_video(Path(input)):
        from ..video import detect_video

        if d.boxes or d.exclude or d.aligned:
            raise InputError("--box, --exclude and --aligned apply to images, not to videos")
        bar = FrameBar(not quiet)
        try:
            report = detect_video(input, output, options=options, model=model, progress=bar)
        finally:
            bar.close()
        report["detection"] = settings
        for line in report["notes"]:
            note(f"{input}: {line}")
        click.echo(json.dumps(report, indent=2, default=float))
        return
    fmt = media.output_format(output)
    media.check_output(output, [input], options.output.force)
    loaded = images.load_image(input)
    backbone = api.get_model(model, options=options)  # its framing and crop size
    regions, skipped = api.find_regions(loaded.pixels, options=options, model=backbone)
    preview = faces.draw_preview(loaded.pixels, regions, skipped)
    media.write_atomic(output, images.encode_image(preview, fmt),
                       replace=options.output.force)
    for line in loaded.notes:
        note(f"{input}: {line}")
    report = {
        "image": {"width": int(loaded.pixels.shape[1]), "height": int(loaded.pixels.shape[0])},
        "model": backbone.model_id,
        "detection": settings,
        "faces": [batch.face_json(i, r) for i, r in enumerate(regions)],
        "skipped": [s for s in skipped if s.get("kind") != "low-score"],
        "candidates": [s for s in skipped if s.get("kind") == "low-score"],
        "notes": api.resolution_notes(regions, backbone),
    }
    click.echo(json.dumps(report, indent=2, default=float))


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
@handle_errors
def models(ctx, as_json) -> None:
    """List the named models: resolution, size, and whether they are on this machine.

    `faceveil models pull NAME` fetches one into the Hugging Face cache and makes it the
    default; `faceveil models default NAME` (or builtin) chooses the default.
    """
    from ..offline import hub_offline

    hub_offline(ctx.invoked_subcommand != "pull")
    if ctx.invoked_subcommand is not None:
        return
    from ..diffusion.hub import BUILTIN, PRESETS, available_locally, default_model

    chosen = default_model()
    rows = [{"name": p.name, "source": p.repo or "built-in", "resolution": p.resolution,
             "size": p.size, "available": available_locally(p), "default": p.name == chosen.name,
             "description": p.description} for p in PRESETS.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        where = "available" if r["available"] else f"missing: faceveil models pull {r['name']}"
        click.echo(f"{mark} {r['name']:<18} {r['resolution']:>4}px  {r['size']:>8}  {where}")
        click.echo(f"    {r['description']}")
    click.echo(f"default: {chosen.name} ("
               + (f"chosen by {chosen.source}" if not chosen.builtin else "built-in") + ")")
    click.echo("(* default; --model also takes a local diffusers folder or a Hugging Face id; "
               f"`faceveil models default NAME|{BUILTIN}` chooses the default)")


def _pullable(ctx, param, value: str) -> str:
    from ..diffusion.hub import PRESETS

    names = [n for n, p in PRESETS.items() if p.repo]
    if value in names or ("/" in value and value not in PRESETS):
        return value
    raise click.BadParameter(f"{value!r} is not a model to pull; choose one of "
                             f"{', '.join(names)}, or a Hugging Face id (owner/name)")


@models.command("pull")
@click.argument("name", callback=_pullable)
@click.option("--revision", metavar="COMMIT", help="A commit (or branch) of the repository to "
              "fetch and pin [default: the preset's pinned commit, else main].")
@handle_errors
def pull(name: str, revision: str | None) -> None:
    """Download model NAME (a preset, or a Hugging Face id owner/name) into the Hugging
    Face cache, with a progress bar; an interrupted download resumes. The commit and the
    weights' SHA-256 are recorded, so later loads check them. The pulled model becomes
    the default."""
    from ..diffusion.hub import set_default_model
    from ..diffusion.pull import pull as fetch

    done = fetch(name, revision)
    note(f"pulled {done.repo} at {done.revision or 'main'} into {done.folder} "
         f"(weights sha256 {done.sha256[:16]}...)")
    # A pinned commit stays pinned as the default (a preset names none).
    _say_default(set_default_model(f"{done.repo}@{done.revision}" if revision else name))


@models.command("default")
@click.argument("name")
@handle_errors
def default(name: str) -> None:
    """Make model NAME the default of runs without --model: a preset, a local diffusers
    folder or a Hugging Face id on this machine, or `builtin` for the built-in model.
    $FACEVEIL_MODEL, when set, still comes first."""
    from ..diffusion.hub import set_default_model

    _say_default(set_default_model(name))


def _say_default(chosen) -> None:
    """Say which model runs without --model now, and what chose it."""
    from ..diffusion.hub import BUILTIN, MODEL_ENV

    if chosen.source == f"${MODEL_ENV}":
        note(f"saved; ${MODEL_ENV} is set, so runs without --model still use {chosen.name}")
    elif chosen.builtin:
        note(f"the default model is now the built-in {chosen.name}")
    else:
        note(f"the default model is now {chosen.name}; `faceveil models default {BUILTIN}` "
             "goes back to the built-in model")
