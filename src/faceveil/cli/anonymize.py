"""``faceveil anonymize``: photos, clips and folders of them, locally or on Ray."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from .. import batch, media
from ..errors import InputError, NoFaceError
from ..options import (
    CONTEXTS,
    DEFAULTS,
    DIFFUSION_SAMPLING,
    FLIPS,
    METHODS,
    NO_FACE,
    SEALED_SAMPLING,
    SOLVERS,
    SPACINGS,
    Options,
)
from .common import (
    FrameBar,
    Outcome,
    Progress,
    backend_option,
    build_options,
    detection_options,
    each,
    existing_input,
    folder_only,
    force_options,
    get_holder,
    handle_errors,
    key_options,
    model_option,
    note,
    print_timings,
    process_age,
    ray_options,
    recipient_options,
    run_folder,
    run_on_ray,
    run_one,
    timings_option,
    track_gap_option,
    video_options,
)

_S, _D = SEALED_SAMPLING, DIFFUSION_SAMPLING


class _Anonymizer:
    """One anonymize run: the key, the options, and the rows of ``--report``."""

    def __init__(self, key, options: Options, model: str | None, mask: str | None,
                 key_file: str | None, quiet: bool) -> None:
        from ..timings import Timings

        self.key, self.options, self.model = key, options, model
        self.mask, self.key_file, self.quiet = mask, key_file, quiet
        self.rows: list[dict] = []
        self.timings = Timings()
        self.started = False

    def api(self):
        """faceveil.api, imported on first use: the start-up's imports end there."""
        from .. import api

        if not self.started:
            self.timings.add("imports", process_age())
            self.started = True
        return api

    @property
    def sidecar(self) -> bool:
        return self.options.output.sidecar

    def video(self, src: Path, dst: Path, prefix: str = "") -> Outcome:
        from ..video import anonymize_video

        d = self.options.detection
        if self.mask or d.aligned or d.boxes or d.exclude:
            raise InputError("--mask, --aligned, --box and --exclude apply to images, not "
                             f"to videos ({str(src)!r})")
        bar = FrameBar(not self.quiet, prefix)
        try:
            result = anonymize_video(src, dst, self.key, options=self.options, model=self.model,
                                     progress=bar, protected=[self.mask, self.key_file])
        except NoFaceError:
            self.rows.append(batch.video_report_row(src, None))
            raise
        finally:
            bar.close()
        self.rows.append(batch.video_report_row(src, result))
        notes = [result.summary(), *result.notes]
        if result.left_out:
            notes.append(f"{result.left_out} detection(s) left out (low scores, too small): "
                         "check them with `faceveil detect` (or --report)")
        return result.faces, notes

    def start(self, src: Path, dst: Path):
        """Checks and decoding before any model work."""
        from .. import images

        media.anonymized_output(dst)
        for path in batch.outputs_of(dst, self.sidecar):
            media.check_output(path, [src, self.mask, self.key_file], self.options.output.force)
        with self.timings.phase("reading"):
            return images.load_image(src)

    def finish(self, src: Path, dst: Path, loaded, result) -> Outcome:
        """Write what anonymization gave (an Anonymized, or the error that stopped it)."""
        api, out = self.api(), self.options.output
        if isinstance(result, NoFaceError):
            self.rows.append(batch.report_row(src, dst if out.no_face == "copy" else None,
                                              [], getattr(result, "skipped", [])))
        elif isinstance(result, Exception):
            raise result
        written = api.anonymized_outputs(result, dst, out, loaded)
        with self.timings.phase("writing"):
            api.publish(written, replace=out.force)
        if not isinstance(result, NoFaceError):
            self.rows.append(batch.report_row(src, dst, result.regions, result.skipped))
        return written.faces, written.notes

    def one(self, src: Path, dst: Path, prefix: str = "") -> Outcome:
        from .. import images

        if media.is_video(src):
            return self.video(src, dst, prefix)
        api = self.api()
        loaded = self.start(src, dst)
        user_mask = (images.load_mask(self.mask, loaded.pixels.shape[1::-1]) if self.mask
                     else None)
        progress = Progress(not self.quiet, prefix)
        try:
            result = api.anonymize(loaded, self.key, options=self.options, model=self.model,
                                   mask=user_mask, progress=progress, timings=self.timings)
        except NoFaceError as e:
            result = e
        finally:
            progress.close()
        return self.finish(src, dst, loaded, result)

    def many(self, items: Sequence[batch.Item]) -> list:
        """Several files at once: the faces of their images fill the model's batches
        together (a clip batches its own frames)."""
        api = self.api()
        outcomes: list = [None] * len(items)
        ready = []
        for k, item in enumerate(items):
            try:
                if media.is_video(item.src):
                    outcomes[k] = self.video(item.src, item.dst, f"{item.src.name}: ")
                else:
                    ready.append((k, self.start(item.src, item.dst)))
            except Exception as e:  # noqa: BLE001 - reported for this file only
                outcomes[k] = e
        if ready:
            progress = Progress(not self.quiet, f"{len(ready)} image(s): ")
            try:
                results = api.anonymize_many([loaded for _, loaded in ready], self.key,
                                             options=self.options, model=self.model,
                                             progress=progress, timings=self.timings)
            except Exception as e:  # noqa: BLE001 - the whole chunk failed the same way
                results = [e] * len(ready)
            finally:
                progress.close()
            for (k, loaded), result in zip(ready, results, strict=True):
                try:
                    outcomes[k] = self.finish(items[k].src, items[k].dst, loaded, result)
                except Exception as e:  # noqa: BLE001
                    outcomes[k] = e
        return outcomes


@click.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Output PNG, clip (.mkv or .mp4) for a video INPUT, or output folder "
                   "when INPUT is a folder.")
@key_options
@recipient_options
@model_option("Preset name, local diffusers folder or Hugging Face id (default: the "
              "default model, see `faceveil models`).")
@click.option("--steps", type=click.IntRange(1, 1000), default=None,
              help=f"DDIM steps [default: {_S.steps} with sealed originals, {_D.steps} "
                   "without].")
@click.option("--spacing", type=click.Choice(list(SPACINGS)), default=None,
              help=f"Timestep spacing [default: {_S.spacing} with sealed originals, "
                   f"{_D.spacing} without].")
@click.option("--method", type=click.Choice(list(reversed(METHODS))), default=None,
              help="Inversion: each DDIM step solved exactly (near-exact diffusion "
                   "recovery), or the paper's single pass [default: plain with sealed "
                   "originals (only the outside of the mask is inverted), exact-steps "
                   "without].")
@click.option("--context", type=click.Choice(list(reversed(CONTEXTS))), default=None,
              help="Outside-mask trajectory re-injected while denoising: one recovery can "
                   "recompute exactly (masked, the default) or the original's own (the "
                   "paper's).")
@click.option("--lossless/--no-lossless", default=None,
              help="Seal each face's original pixels, compressed, under the key: recovery "
                   "is then bit-exact at full resolution and needs no model [default: on, "
                   "except with --deniable]. --no-lossless keeps only what the paper's "
                   "diffusion recovery needs (about 40 KB less for a face 180 px wide, "
                   "recovery approximate).")
@click.option("--flip", "flip_kind", type=click.Choice(list(FLIPS)), default=None,
              help="What the key does to the noise inside the mask: fresh noise drawn from "
                   "the key (nothing of the original survives; the default with sealed "
                   "originals), the inverted noise's signs flipped in a keyed orthogonal "
                   "basis with its norm hidden (mixed: resists linking a file to its "
                   "original; the default without), or the paper's plain sign flip.")
@click.option("--eta", type=click.FloatRange(0, 1), default=None,
              help=f"Fresh noise at every denoising step: 0 deterministic DDIM, 1 DDPM-like "
                   f"[default: {_S.eta:g} with sealed originals, {_D.eta:g} without; above 0 "
                   "needs sealed originals].")
@click.option("--solver", type=click.Choice(list(SOLVERS)), default=None,
              help="How fresh faces are denoised: DPM-Solver++(2M) with the outside noised "
                   "forward under the key (one model call a step; the default), or the "
                   "DDIM chain with the outside inverted (two calls a step, the default "
                   "before issue 26). Only with --flip fresh.")
@click.option("--harmonize/--no-harmonize", default=None,
              help="Match the new face's colour to the skin around it in the published "
                   "photo, and paste it magnified and with the photo's grain [default: on "
                   "with sealed originals; needs them].")
@click.option("--deniable", is_flag=True,
              help="Store no key check and no MAC: a wrong key then yields another face, not "
                   "an error. Nothing in such a file is authenticated (see SECURITY.md), so "
                   "no original is sealed (recovery is by diffusion, approximate) and the "
                   "input's metadata is not kept.")
@click.option("--sidecar", is_flag=True,
              help="Also write the metadata to OUT.faceveil.json (survives re-encoding).")
@click.option("--label/--no-label", default=None,
              help="Say in the PNG's XMP (a clip's container tags) that its faces are synthetic "
                   "(IPTC Digital Source Type compositeWithTrainedAlgorithmicMedia, with the "
                   "model's name) "
                   "[default: on]. Keep it: viewers, newsrooms and platforms read it.")
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
@click.option("--no-face", type=click.Choice(list(NO_FACE)), default=DEFAULTS.output.no_face,
              show_default=True,
              help="When no face is found: write nothing (skip), write the image "
                   "unchanged but stripped of metadata (copy), or fail (error).")
@click.option("--device", default=DEFAULTS.runtime.device, show_default=True,
              help="cpu, cuda, or auto.")
@click.option("--batch-size", default=DEFAULTS.runtime.batch_size, show_default=True,
              type=click.IntRange(1), help="Faces per model batch.")
@backend_option
@force_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes.")
@timings_option
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
def anonymize(input, output, key_file, passphrase_stdin, recipients, recipients_files, model,
              mask, report, quiet, use_ray, ray_address, ray_workers, timings,
              **params) -> None:
    """Replace every face in INPUT with another identity, reversibly.

    INPUT is an image, a video clip or a folder of them; OUTPUT is a PNG, a clip (.mkv:
    lossless FFV1; .mp4: H.264) or a folder, and carries everything recovery needs
    except the key. In a clip, each person (a track) keeps one synthetic face, made once
    and moved with their head, and each frame's original faces are sealed in the clip.
    """
    src, dst = existing_input(input), Path(output)
    options = build_options(params)
    if model is None and not quiet:  # which model runs, when something chose the default
        from ..diffusion.hub import default_model

        said = default_model().note()
        if said:
            note(said)
    key = get_holder(key_file, passphrase_stdin, confirm=True, recipients=recipients,
                     recipients_files=recipients_files)
    if (recipients or recipients_files) and (use_ray or ray_address):
        raise InputError("-r and -R cannot be used with --ray yet: give a key file")
    if use_ray or ray_address:
        if mask or options.detection.parser_weights or report:
            raise InputError("--mask, --parser-weights and --report cannot be used with --ray")
        run_on_ray("anonymized", "anonymize_folder", quiet, src=src, dst=dst, key=key,
                   address=ray_address, workers=ray_workers, model=model, options=options,
                   protected=[key_file])
        return
    force = options.output.force
    if report:
        media.check_output(report, [input, output, mask, key_file], force)
    run = _Anonymizer(key, options, model, mask, key_file, quiet)
    try:
        if not src.is_dir():
            folder_only(options, src)
            run_one(src, dst, run.one, quiet, "anonymized")
            print_timings(run.timings, timings)
            return
        api = run.api()
        plan = batch.plan(src, dst, lambda p: batch.anonymized_name(p, options.video.codec),
                          sidecar=options.output.sidecar, force=force,
                          resume=api.resume_check(options.output, anonymized=True))
        with run.timings.phase("model load"):  # fail early on a bad --model
            api.get_model(model, options=options)
        # Images of a folder go through the model together (a user mask is one image's).
        if mask:
            run_folder(plan, dst, quiet, "anonymized", each(run.one))
        else:
            run_folder(plan, dst, quiet, "anonymized", run.many, options.runtime.batch_size)
        print_timings(run.timings, timings, f" ({len(plan.items)} file(s))")
    finally:  # also when some file failed: the report says what was done
        if report:
            from .. import faces

            d = options.detection
            settings = faces.detector_settings(d.detector, d.threshold, d.min_face)
            media.write_atomic(report, (json.dumps(batch.report(settings, run.rows), indent=2)
                                        + "\n").encode(), replace=force)
