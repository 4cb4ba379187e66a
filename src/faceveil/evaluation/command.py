"""``faceveil eval``: the evaluation harness on the command line.

The lead registers it with ``main.add_command(eval_command)`` in :mod:`faceveil.cli`.
Nothing here imports :mod:`faceveil.cli` (it imports this module), so errors are turned
into messages and exit statuses the same way, locally.
"""

from __future__ import annotations

import os
import sys

import click

from ..errors import FaceveilError, InputError


def _ints(text: str, what: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{what} wants comma-separated integers, not {text!r}") from None


@click.command("eval")
@click.argument("data", type=click.Path(file_okay=False))
@click.option("-o", "--output", "report_dir", required=True, type=click.Path(file_okay=False),
              help="Report folder: results.jsonl, metrics.json, report.md and PNGs. "
                   "Run again to resume an interrupted evaluation.")
@click.option("--key-file", "-k", type=click.Path(),
              help="Key file to anonymize with (default: a random key kept in memory only).")
@click.option("--model", "-m", default=None, metavar="ID_OR_DIR",
              help="Preset, local diffusers folder or Hugging Face id (default: the default "
                   "model, see `faceveil models`).")
@click.option("--aligned", is_flag=True, help="DATA holds aligned face crops: no detection.")
@click.option("--pairs", type=click.Path(dir_okay=False),
              help="LFW-style pairs file: adds TAR at FAR = 1e-3 and at the recognizer's "
                   "threshold (images named relative to DATA).")
@click.option("--pairs-by-name", is_flag=True,
              help="Pair the images by name, PERSON_VARIANT.ext: a person's first image "
                   "(sorted) is anonymized and verified against the original others, e.g. "
                   "001_neutral.jpg against 001_smiling.jpg (the Face Research Lab London "
                   "Set); impostors: every other person's. Instead of --pairs.")
@click.option("--limit", type=click.IntRange(1), help="Evaluate only the first N images.")
@click.option("--recognizers", default="dlib", show_default=True,
              help="Comma-separated among dlib, facenet, arcface (dlib is always used; the "
                   "others need their weights).")
@click.option("--facenet-weights", type=click.Path(dir_okay=False),
              help="facenet-pytorch InceptionResnetV1 weights (20180402-114759-vggface2.pt).")
@click.option("--arcface-weights", type=click.Path(dir_okay=False),
              help="insightface arcface_torch IResNet backbone.pth.")
@click.option("--jpeg", default="100,90,75,50", show_default=True,
              help="JPEG qualities at which recovery is tried ('none': no JPEG test).")
@click.option("--steps", default=None, type=click.IntRange(1, 1000),
              help="DDIM steps [default: anonymize's default for these settings].")
@click.option("--diversity-keys", default=3, show_default=True, type=click.IntRange(0),
              help="Keys each face is anonymized under to measure diversity (<2: off).")
@click.option("--examples", default=8, show_default=True, type=click.IntRange(0),
              help="Faces shown in the example grid.")
@click.option("--method", type=click.Choice(["exact-steps", "plain"]), default=None,
              help="Inversion used to anonymize (default: anonymize's default). The paper's "
                   "protocol: --method plain --context own.")
@click.option("--context", type=click.Choice(["masked", "own"]), default=None,
              help="Outside-mask trajectory re-injected while denoising (default: "
                   "anonymize's default).")
@click.option("--lossless/--no-lossless", default=None,
              help="Seal the original pixels (bit-exact recovery with the key) or not (the "
                   "paper's diffusion recovery) [default: anonymize's default, sealed].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, or auto.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def eval_command(data, report_dir, key_file, model, aligned, pairs, pairs_by_name, limit,
                 recognizers,
                 facenet_weights, arcface_weights, jpeg, steps, diversity_keys, examples,
                 method, context, lossless, device, quiet) -> None:
    """Measure anonymization, recovery and key security on the images in DATA.

    For every face: anonymize, recover with the key, try a random and a one-bit-off
    wrong key, recover after JPEG compression, anonymize under other keys; then write
    REPORT_DIR/metrics.json and REPORT_DIR/report.md with plots, example grids and a
    contact sheet (sheet.png: original / anonymized / recovered).

    Realism, per face: the colour shift (CIE76 dE of the mean CIELAB over the replaced
    region) and dlib's HOG and CNN scores at the face; over the run, a two-sample test
    (nearest class mean on dlib embeddings, originals vs anonymized; chance 50%).

    The paper's protocol on a folder of portraits named PERSON_VARIANT.ext (two photos
    per person: 001_neutral.jpg, 001_smiling.jpg, ...): --pairs-by-name verifies each
    anonymized neutral photo against the same person's original smiling one (verified
    at dlib's 0.6; TAR at FAR = 1e-3, ArcFace too with --arcface-weights).

    \b
    faceveil eval photos/ -o report/
    faceveil eval crops/ -o report/ --aligned --limit 100 --jpeg 90,50
    faceveil eval frl/ -o report/ --pairs-by-name --jpeg none --diversity-keys 1
    """
    try:
        from ..diffusion.backends import require_torch

        require_torch("faceveil eval")  # its measures run on torch: exit 5 without it
        from . import evaluate
        from .report import summary_table

        names = [n.strip().lower() for n in recognizers.split(",") if n.strip()]
        metrics = evaluate(
            data, report_dir, key=key_file, model=model, aligned=aligned, pairs=pairs,
            pairs_by_name=pairs_by_name,
            limit=limit, recognizers=names, facenet_weights=facenet_weights,
            arcface_weights=arcface_weights, jpeg=_ints(jpeg, "--jpeg"), steps=steps,
            progress=not quiet, diversity_keys=diversity_keys, examples=examples,
            device=device, method=method, context=context, lossless=lossless,
        )
    except FaceveilError as e:
        click.echo(f"faceveil: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("faceveil: error: interrupted (run the same command again to resume)",
                   err=True)
        sys.exit(130)
    except Exception as e:  # a bug: say so briefly, full trace on request
        if os.environ.get("FACEVEIL_DEBUG"):
            raise
        click.echo(f"faceveil: error: unexpected {type(e).__name__}: {e} "
                   "(set FACEVEIL_DEBUG=1 for details)", err=True)
        sys.exit(70)
    if not quiet:
        click.echo(summary_table(metrics), err=True)
        for note in metrics.get("notes", []):
            click.echo(f"note: {note}", err=True)
        c = metrics["count"]
        click.echo(f"evaluated {c['faces']} face(s) in {c['evaluated']} image(s) "
                   f"({c['skipped']} skipped, {c['no_face']} without a face) -> "
                   f"{report_dir}/report.md", err=True)
