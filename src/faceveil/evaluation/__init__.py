"""The evaluation harness: ``faceveil eval`` and :func:`evaluate`.

Measures, on any folder of images, what anonymization and recovery do: identity
(dlib; FaceNet and ArcFace from user weights), fidelity (PSNR, SSIM, MAE), utility
(detection rate, landmark shift), diversity, wrong keys, JPEG robustness and cost; writes
``metrics.json`` and a readable ``report.md`` with plots and example grids.

Example::

    from faceveil.evaluation import evaluate
    metrics = evaluate("crops/", "report/", aligned=True, limit=50)
    print(metrics["recovered"]["psnr"]["face"]["mean"])
"""

from __future__ import annotations

from .command import eval_command
from .harness import evaluate
from .measures import PSNR_CAP, mae, psnr, ssim
from .report import summary_table

__all__ = ["PSNR_CAP", "eval_command", "evaluate", "mae", "psnr", "ssim", "summary_table"]
