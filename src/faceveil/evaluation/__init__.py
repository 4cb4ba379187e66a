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

import importlib

# Names resolve on first use (PEP 562), so ``faceveil --help`` can load the ``eval``
# command without importing the harness and, through it, torch.
_EXPORTS = {
    "eval_command": "command", "evaluate": "harness", "PSNR_CAP": "measures", "mae": "measures",
    "psnr": "measures", "ssim": "measures", "summary_table": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
