"""Real faces for the benchmarks: the Face Research Lab London Set (FRL), and the two
settings every realism benchmark compares.

A folder of ``NNN_neutral.jpg`` and ``NNN_smiling.jpg`` (one consenting adult per NNN),
e.g. ``../shared/data/frl``: DeBruine, L., & Jones, B. (2017). Face Research Lab London
Set. figshare. doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0. Measure and look with it;
never train on it. Pictures made from it carry its licence and attribution.

The arms (:data:`ARMS`), passed to ``Options.of``:

- ``default``: faceveil's defaults, originals sealed in the file
  (``options.SEALED_SAMPLING``: fresh keyed noise inside the mask, DDIM eta 1, 25
  trailing steps, masked context, harmonized to the surroundings);
- ``no-lossless``: ``--no-lossless``, nothing sealed, the paper's diffusion recovery
  (``options.DIFFUSION_SAMPLING``: keyed orthogonal mixing, exact-steps inversion,
  masked context, 50 leading steps, no harmonization): the defaults before issue 19;
- ``ddim-25``: the sealed default before issue 26 (DDIM eta 1 over 25 trailing steps,
  the outside context inverted); ``dpm-20``, ``dpm-8``: the sealed default's solver
  (DPM-Solver++(2M) SDE, the context noised forward) at 20 and 8 steps; ``fp32``: the
  sealed default with ``--backend torch`` (float32; a torch model under ``default`` runs
  in bfloat16 where the CPU has it natively: ``Backbone.fast_numerics``).

Every face is anonymized under one fixed benchmark key with a salt and nonce fixed per
identity (:func:`fixed_keys`), so a run is repeatable and both arms see the same key
material.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from faceveil import api, images, keys
from faceveil.faces import FaceRegion
from faceveil.options import FixedKeys

ARMS: dict[str, dict] = {"default": {}, "no-lossless": {"lossless": False},
                         "ddim-25": {"solver": "ddim", "steps": 25},
                         "dpm-20": {"steps": 20}, "dpm-8": {"steps": 8},
                         "fp32": {"backend": "torch"}}
LABELS = {"default": "new defaults (sealed)", "no-lossless": "today's (--no-lossless)",
          "ddim-25": "sealed before issue 26 (DDIM, inverted context, 25 steps)",
          "dpm-20": "DPM-Solver++(2M), noised context, 20 steps",
          "dpm-8": "DPM-Solver++(2M), noised context, 8 steps",
          "fp32": "sealed default, torch in float32 (--backend torch)"}
KEY = keys.KeySource.from_bytes(hashlib.sha256(b"faceveil FRL benchmark key").digest())
ATTRIBUTION = ("Face Research Lab London Set, DeBruine & Jones (2017), "
               "doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0")


def identities(folder: Path, count: int | None = None) -> list[str]:
    """The NNN of every identity with both photos, sorted; the first ``count`` (None or
    0: all)."""
    ids = sorted(p.name.split("_")[0] for p in Path(folder).glob("*_neutral.jpg")
                 if (Path(folder) / p.name.replace("_neutral", "_smiling")).exists())
    if not ids:
        raise SystemExit(f"no NNN_neutral.jpg + NNN_smiling.jpg in {folder}")
    return ids[:count] if count else ids


def photo(folder: Path, ident: str, expression: str = "neutral") -> np.ndarray:
    """One photo's pixels (uint8 RGB)."""
    return images.load_image(Path(folder) / f"{ident}_{expression}.jpg").pixels


def sitter(pixels: np.ndarray, backbone) -> FaceRegion | None:
    """The portrait's face: the largest region the default detector finds."""
    regions, _ = api.find_regions(pixels, model=backbone)
    return max(regions, key=lambda r: r.box[2] * r.box[3]) if regions else None


def fixed_keys(ident: str) -> FixedKeys:
    """The salt and nonce of one identity's files (the same in every arm and run)."""
    h = hashlib.sha256(f"faceveil FRL benchmark {ident}".encode()).digest()
    return FixedKeys(salt=h[:16], nonces=(h[16:32],))


def count_calls(backbone) -> dict[str, int]:
    """Count the model's invocations (``predict_steps``, which ``predict`` calls too):
    ``counter["n"]``. One FRL photo has one face, so calls per photo are calls per face."""
    counter = {"n": 0}
    inner = backbone.predict_steps

    def counted(z, t):
        counter["n"] += 1
        return inner(z, t)

    backbone.predict_steps = counted
    return counter
