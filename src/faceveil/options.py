"""Every option of faceveil, declared once: frozen, validated dataclasses and their defaults.

The Python API, the command line, video, Ray and the web page all take these objects
(:class:`Options` bundles them), so a default lives here and nowhere else::

    from faceveil.options import Options
    options = Options.of(steps=25, lossless=True)   # keywords go to the part that owns them
    options.sampling.steps                           # 25

This module imports nothing heavy (no numpy, no torch): the command line builds options
before it knows whether a model will run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .choices import (  # noqa: F401 (the choices, re-exported beside their options)
    BACKENDS,
    CONTEXTS,
    DETECTOR_CHOICES,
    DEVICES,
    FLIPS,
    METHODS,
    NO_FACE,
    RECOVERY_METHODS,
    SOLVERS,
    SPACINGS,
    VIDEO_CODECS,
)
from .errors import InputError

Box = tuple[int, int, int, int]


def _choice(value: object, choices: tuple, what: str) -> None:
    if value not in choices:
        raise InputError(f"{what} must be one of {', '.join(map(str, choices))}, "
                         f"not {value!r}")


def _whole(value: object, lo: int, what: str, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (
            hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
        raise InputError(f"{what} must be a whole number {bound}, not {value!r}")


@dataclass(frozen=True)
class Sampling:
    """How a face is turned into another: the DDIM chain and the key operation.

    Every field left None takes the default of how the file is recovered
    (:data:`SEALED_SAMPLING` when the originals are sealed in the file, the default;
    :data:`DIFFUSION_SAMPLING` when recovery runs the procedure back, the paper's way:
    ``--no-lossless`` or ``--deniable``); :meth:`resolve` fills them in.

    ``flip``: "fresh" draws new noise inside the mask from the face's key (nothing of the
    original survives there, so only the sealed original brings it back); "mixed" flips
    the inverted noise's signs in a keyed orthogonal basis with its norm hidden (resists
    linking a file to its original); "signs" is the paper's plain sign flip. ``method``:
    "exact-steps" solves every inversion step exactly, so diffusion recovery can be
    near-exact; "plain" is the paper's single pass. ``context``: "masked" re-injects
    outside the mask a trajectory recovery can recompute exactly; "own" the original's
    own (the paper's). ``eta``: fresh noise at every denoising step (0: deterministic
    DDIM, 1: DDPM-like; needs sealed originals). ``harmonize``: match the new face's
    colour and contrast to the skin just outside its mask in the published photo (needs
    sealed originals). ``solver``, for fresh faces: "dpm++2m", DPM-Solver++(2M) (its SDE
    form at eta 1) with the outside noised forward from the photo under the key (no
    inversion: one model call a step), or "ddim", the DDIM chain with the outside
    inverted (two calls a step; the sealed default before issue 26). Diffusion-style
    faces always use DDIM (recovery runs it back).
    """

    steps: int | None = None
    spacing: str | None = None
    method: str | None = None
    context: str | None = None
    flip: str | None = None
    eta: float | None = None
    harmonize: bool | None = None
    solver: str | None = None

    def __post_init__(self) -> None:
        if self.steps is not None:
            _whole(self.steps, 1, "steps", 1000)
        for value, choices, what in ((self.spacing, SPACINGS, "spacing"),
                                     (self.method, METHODS, "method"),
                                     (self.context, CONTEXTS, "context"),
                                     (self.flip, FLIPS, "flip"),
                                     (self.solver, SOLVERS, "solver")):
            if value is not None:
                _choice(value, choices, what)
        if self.eta is not None and not (isinstance(self.eta, (int, float))
                                         and not isinstance(self.eta, bool)
                                         and 0.0 <= self.eta <= 1.0):
            raise InputError(f"eta must be a number from 0 to 1, not {self.eta!r}")

    def resolve(self, sealed: bool) -> Sampling:
        """Every field filled in for a file whose originals are (``sealed``) or are not
        sealed; a choice that only sealed originals can recover is refused without
        them. Asking for a diffusion-style choice (the keyed flip of the inverted noise,
        exact inversion, the original's own context) takes the diffusion defaults for
        the rest, sealed or not."""
        diffusion_style = (self.flip in ("mixed", "signs") or self.method == "exact-steps"
                           or self.context == "own")
        base = SEALED_SAMPLING if sealed and not diffusion_style else DIFFUSION_SAMPLING
        done = dataclasses.replace(base, **{f.name: getattr(self, f.name) for f in fields(self)
                                            if getattr(self, f.name) is not None})
        if not sealed:
            needs = [what for what, on in (("--flip fresh", done.flip == "fresh"),
                                           ("--eta above 0", done.eta > 0),
                                           ("--harmonize", done.harmonize)) if on]
            if needs:
                raise InputError(f"{', '.join(needs)} makes faces that only their sealed "
                                 "originals bring back: not with --no-lossless or "
                                 "--deniable")
        if done.flip == "fresh" and done.method != "plain":
            raise InputError("--flip fresh inverts only the outside of the mask: use it with "
                             "--method plain")
        if done.flip != "fresh" and self.solver not in (None, "ddim"):
            raise InputError(f"--solver {self.solver} makes only fresh faces (--flip fresh): "
                             "the keyed flip of the inverted noise is run back with DDIM")
        if done.solver == "dpm++2m" and done.eta not in (0, 1):
            raise InputError("--solver dpm++2m takes --eta 0 or 1")
        return done

    @property
    def passes(self) -> int:
        """Engine passes over the schedule per batch of faces (resolved samplers only):
        see :func:`engine_passes`."""
        return engine_passes(self.method, self.context, self.flip, self.solver)

    @property
    def diffusion_recoverable(self) -> bool:
        """Whether recovery can run the model back on faces made so (resolved sampling):
        not when they are fresh noise, stochastic or harmonized; those come back only
        from their sealed originals, so the model's numerics may change (onnxruntime)."""
        return self.flip != "fresh" and not self.eta and not self.harmonize


def engine_passes(method: str, context: str, flip: str = "mixed", solver: str = "ddim") -> int:
    """Passes the engine makes over the schedule for one batch of faces, each reported
    to its progress callback, anonymizing or recovering (recovery never uses "fresh"):
    a separate outside-context inversion only where the paper's single-pass inversion of
    the whole crop needs one beside it (exact inversion computes the context along the
    way, and fresh faces invert only the context, or none where the multistep solver
    noises it forward). The one count the page's progress bar is made of."""
    if flip == "fresh" and solver == "dpm++2m":
        return 1
    separate_context = context == "masked" and method == "plain" and flip != "fresh"
    return 3 if separate_context else 2


@dataclass(frozen=True)
class RecoveryPlan:
    """How an anonymized file's faces come back (:func:`plan_recovery`)."""

    method: str  # the diffusion method of the faces in ``diffusion``
    diffusion: tuple[int, ...]  # faces the engine brings back
    restored: tuple[int, ...]  # faces restored from their sealed originals
    passes: int  # engine passes per batch of ``diffusion`` faces

    def engine_passes(self, batch_size: int) -> int:
        """Engine passes of the whole recovery, ``batch_size`` faces per batch."""
        return self.passes * -(-len(self.diffusion) // batch_size)


def plan_recovery(sampler: Any, sealed: Any, method: str | None = None) -> RecoveryPlan:
    """Which faces of a file come back how: ``sampler`` is its record's (public) sampler,
    ``sealed`` says per face whether its original is sealed in the file, ``method`` is
    the user's choice (None: the one the file names). With "lossless", sealed faces are
    restored and the others go through the engine with the file's inversion method.

    Raises:
        InputError: a method the file does not support.
    """
    method = method or sampler.default_recovery
    if method not in sampler.recovery_methods:
        raise InputError(f"this file supports recovery methods {list(sampler.recovery_methods)}"
                         f", not {method!r}")
    faces = range(len(sealed))
    restored = tuple(i for i in faces if sealed[i]) if method == "lossless" else ()
    if method == "lossless":
        method = sampler.inversion
    return RecoveryPlan(method, tuple(i for i in faces if i not in restored), restored,
                        engine_passes(method, sampler.context))


# With sealed originals the face is made for how it looks (measured on the Face Research
# Lab London Set: benchmarks/builtin_quality.py, docs/measured.md): fresh keyed noise,
# DDPM-like sampling (DPM-Solver++(2M) SDE, the context noised forward: issue 26),
# 12 trailing steps, colour matched to the surrounding skin.
SEALED_SAMPLING = Sampling(steps=12, spacing="trailing", method="plain", context="masked",
                           flip="fresh", eta=1.0, harmonize=True, solver="dpm++2m")
# When recovery runs the procedure back, the chain must invert exactly.
DIFFUSION_SAMPLING = Sampling(steps=50, spacing="leading", method="exact-steps",
                              context="masked", flip="mixed", eta=0.0, harmonize=False,
                              solver="ddim")


@dataclass(frozen=True)
class Detection:
    """Which faces are anonymized.

    ``detector`` (None: CenterFace), ``threshold`` (None: the detector's own, on its
    scale: CenterFace's centre heat 0..1, 0.2; dlib's classifier margin, 0) and
    ``min_face`` (pixels; narrower detections are skipped and reported) choose what the
    detector finds; ``boxes`` (x, y, w, h) add faces it missed, ``exclude`` leaves
    detections out by number. ``aligned``: the input is already an aligned face crop (no
    detection). ``parser_weights``: a BiSeNet face parser's weights file, whose masks
    replace the landmark masks. ``occluders``: keep what lies in front of a face (a
    hand, a cloth, hair) as it was, by the skin-colour rule or the parser's classes;
    the eyes, nose and mouth are replaced whatever lies there (``faces.occluders``).
    """

    detector: str | None = None
    threshold: float | None = None
    min_face: int = 16
    boxes: tuple[Box, ...] = ()
    exclude: tuple[int, ...] = ()
    aligned: bool = False
    parser_weights: str | None = None
    occluders: bool = True

    def __post_init__(self) -> None:
        if self.detector is not None:
            _choice(self.detector, DETECTOR_CHOICES, "the detector")
        if self.threshold is not None:
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                raise InputError(f"the detection threshold must be a finite number, not {t!r}")
        _whole(self.min_face, 1, "min_face")
        boxes = tuple(tuple(int(v) for v in b) for b in self.boxes)
        if any(len(b) != 4 or b[2] <= 0 or b[3] <= 0 for b in boxes):
            raise InputError("a box is x, y, w, h with a positive width and height")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "exclude", tuple(int(i) for i in self.exclude))


@dataclass(frozen=True)
class Protection:
    """What the file keeps for recovery.

    ``lossless``: seal each face's original pixels under its key, so recovery is
    bit-exact and needs no model; None (the default) seals them unless ``deniable``,
    False keeps only what the paper's diffusion recovery needs. ``deniable``: store no
    key check and no MAC, so a wrong key yields another face instead of an error
    (nothing in such a file is authenticated, so nothing is sealed). ``kdf``: Argon2id
    parameters for passphrases (None: 64 MiB, 3 passes).
    """

    lossless: bool | None = None
    deniable: bool = False
    kdf: dict | None = None

    def __post_init__(self) -> None:
        if self.deniable and self.lossless:
            raise InputError("--lossless cannot be deniable: the sealed original pixels would "
                             "tell a wrong key from the right one; choose one of them")

    @property
    def seal_originals(self) -> bool:
        """Whether each face's original pixels are sealed in the file."""
        return not self.deniable if self.lossless is None else self.lossless


@dataclass(frozen=True)
class Runtime:
    """Where the model runs (``device``: auto, cpu, cuda or cuda:N), how many faces go
    through it at once (results do not depend on it) and on which runtime
    (``backend``): "auto" runs the built-in model through onnxruntime on a CPU where its
    faces come back from their sealed originals (the default), torch everywhere else;
    "torch" always torch; "onnx" onnxruntime, refused where a recovery would run the
    model back (``--no-lossless``, ``--deniable``: those keep torch's exact numerics)."""

    device: str = "auto"
    batch_size: int = 8
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not (self.device in DEVICES or str(self.device).startswith("cuda:")):
            raise InputError(f"the device must be auto, cpu, cuda or cuda:N, "
                             f"not {self.device!r}")
        _whole(self.batch_size, 1, "batch_size")
        _choice(self.backend, BACKENDS, "the backend")


@dataclass(frozen=True)
class VideoOptions:
    """Clips only. ``codec`` (None: from the output's extension, .mkv FFV1, .mp4
    H.264) and ``crf`` (H.264 quality); ``track_gap``: frames a tracked face may be
    missed and still be anonymized; ``per_frame``: run the model on every frame instead
    of once per track segment."""

    codec: str | None = None
    crf: int = 18
    track_gap: int = 5
    per_frame: bool = False

    def __post_init__(self) -> None:
        if self.codec is not None:
            _choice(self.codec, VIDEO_CODECS, "the video codec")
        _whole(self.crf, 0, "crf", 51)
        _whole(self.track_gap, 0, "the track gap")


@dataclass(frozen=True)
class Output:
    """What a file or folder run writes: ``sidecar`` (the record also as JSON beside
    the output), ``no_face`` (an image without faces: write nothing, "skip"; write it
    stripped of metadata, "copy"; or fail, "error"), ``force`` (overwrite existing
    outputs; an input is never overwritten), ``skip_existing`` (a folder run keeps the
    outputs that are already complete and valid and makes the others: resuming) and
    ``label`` (an anonymized photo says in its XMP, a clip in its container tags, that
    its faces are synthetic: IPTC Digital Source Type)."""

    sidecar: bool = False
    no_face: str = "skip"
    force: bool = False
    skip_existing: bool = False
    label: bool = True

    def __post_init__(self) -> None:
        _choice(self.no_face, NO_FACE, "no_face")
        if self.force and self.skip_existing:
            raise InputError("give --force or --skip-existing, not both")


@dataclass(frozen=True)
class FixedKeys:
    """A fixed file salt and per-face nonces, to make one run repeatable (tests,
    benchmarks). Never reuse them for another image: every face's key material depends
    on both."""

    salt: bytes | None = None
    nonces: tuple[bytes, ...] | None = None
    # Format 4's random file key; with a fixed salt and a key file or passphrase it is
    # derived from them instead, so that the run repeats.
    file_key: bytes | None = None


@dataclass(frozen=True)
class Options:
    """All options of one run, part by part (see each part for its fields)."""

    sampling: Sampling = field(default_factory=Sampling)
    detection: Detection = field(default_factory=Detection)
    protection: Protection = field(default_factory=Protection)
    runtime: Runtime = field(default_factory=Runtime)
    video: VideoOptions = field(default_factory=VideoOptions)
    output: Output = field(default_factory=Output)

    @property
    def sampler(self) -> Sampling:
        """The sampling actually used: :attr:`sampling` with the defaults of how the file
        is recovered filled in (:meth:`Sampling.resolve`)."""
        return self.sampling.resolve(self.protection.seal_originals)

    @property
    def norm(self) -> str:
        """What the record says of the noise's norm: "hidden" (the keyed flip rescales
        it, as every non-deniable mixed flip does), "kept", or "none" (fresh noise)."""
        sampler = self.sampler
        if sampler.flip == "fresh":
            return "none"
        return "hidden" if sampler.flip == "mixed" and not self.protection.deniable else "kept"

    def recovery_methods(self, invertible: bool = True) -> tuple[str, ...]:
        """The recovery methods a file made with these options supports, "lossless"
        first when originals are sealed; diffusion methods only when every face is the
        engine's own result (``invertible``) and its sampling can be run back."""
        diffusion = [m for m in RECOVERY_METHODS if m != "lossless"] \
            if invertible and self.sampler.diffusion_recoverable else []
        return tuple((["lossless"] if self.protection.seal_originals else []) + diffusion)

    @property
    def default_recovery(self) -> str:
        """The recovery method a file made with these options names as its default."""
        return "lossless" if self.protection.seal_originals else self.sampler.method

    @classmethod
    def of(cls, **flat: Any) -> Options:
        """Options from flat keywords, each given to the part that declares it
        (``Options.of(steps=25, lossless=True)``)."""
        return cls().replace(**flat)

    def replace(self, **flat: Any) -> Options:
        """A copy with these fields changed, each in the part that declares it."""
        parts: dict[str, dict] = {}
        for name, value in flat.items():
            part = _OWNER.get(name)
            if part is None:
                raise InputError(f"unknown option {name!r}")
            parts.setdefault(part, {})[name] = value
        return dataclasses.replace(self, **{p: dataclasses.replace(getattr(self, p), **v)
                                            for p, v in parts.items()})


_PARTS = {"sampling": Sampling, "detection": Detection, "protection": Protection,
          "runtime": Runtime, "video": VideoOptions, "output": Output}
_OWNER = {f.name: part for part, cls in _PARTS.items() for f in fields(cls)}
assert len(_OWNER) == sum(len(fields(c)) for c in _PARTS.values()), "option names must differ"
DEFAULTS = Options()
