"""Where models come from: the presets, the built-in weights, local folders, and the
Hugging Face cache that ``faceveil models pull`` fills.

Loading never downloads: a model that is not on this machine is a clear
:class:`~faceveil.errors.ModelError` naming the command that fetches it
(``faceveil models pull NAME``, or ``hf download`` on another machine). Pulling records
what it fetched (repository, commit and the SHA-256 of the weights as faceveil hashes
them, :func:`faceveil.diffusion.models.weights_hash`) in faceveil's own cache folder, so a
later load can check that the weights on disk are still the ones pulled.

The model a run uses without ``--model`` is decided here, once (:func:`default_model`):
``$FACEVEIL_MODEL``, else the default that ``faceveil models default`` or the last
``faceveil models pull`` wrote to faceveil's settings file, else the built-in model.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError, ModelError
from ..media import cache_dir, write_atomic

WEIGHTS_DIR = Path(__file__).parent.parent / "weights"


@dataclass(frozen=True)
class Preset:
    """A named model: shipped inside the package (``folder``) or on the hub (``repo``)."""

    name: str
    description: str
    resolution: int
    size: str
    folder: str | None = None
    repo: str | None = None
    revision: str | None = None  # a commit to pin (None: the repository's main)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "face64-v2",
            "built-in 64x64 pixel face model (synthetic faces, 10 min on an H100)",
            64,
            "~28 MB",
            folder="face64-v2",
        ),
        Preset(
            "face64-v1",
            "built-in 64x64 pixel face model (synthetic faces, 85 min on a CPU; "
            "kept so its files recover)",
            64,
            "~28 MB",
            folder="face64-v1",
        ),
        Preset(
            "ldm-celebahq-256",
            "CompVis unconditional latent diffusion, CelebA-HQ 256 (closest to the paper)",
            256,
            "~1.1 GB",
            repo="CompVis/ldm-celebahq-256",
        ),
        Preset(
            "sd15",
            "Stable Diffusion 1.5, empty prompt",
            512,
            "~2.7 GB",
            repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
        ),
        Preset(
            "sd21-base",
            "Stable Diffusion 2.1 base, empty prompt",
            512,
            "~2.6 GB",
            repo="stabilityai/stable-diffusion-2-1-base",
        ),
    )
}
DEFAULT_MODEL = "face64-v2"  # the built-in model: the default until another is chosen
DEFAULT = PRESETS[DEFAULT_MODEL]
MODEL_ENV = "FACEVEIL_MODEL"
BUILTIN = "builtin"  # what `models default` and $FACEVEIL_MODEL take for the built-in model

# Only what a backbone needs; skips safety checkers, fp16 and EMA-only copies.
HUB_IGNORE = [
    "*fp16*", "*non_ema*", "*.ckpt", "*.msgpack", "*.onnx", "*.pb", "*.h5",
    "safety_checker/*", "feature_extractor/*",
]



# ---------------------------------------------------------------------------
# A model folder's JSON files
# ---------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    """A model folder's JSON file, or a :class:`ModelError` saying what is wrong with it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{str(path)!r} is missing: not a diffusers model folder") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {str(path)!r}: {e}") from None


FACEVEIL_JSON_HELP = (
    "copy faceveil.json from the folder this model came from (for a built-in model: "
    "reinstall faceveil); training/README.md describes the file"
)


def faceveil_json(folder: Path) -> dict:
    """The folder's ``faceveil.json`` ({} when there is none), checked field by field."""
    path = folder / "faceveil.json"
    if not path.exists():
        return {}
    try:
        extra = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{str(path)!r} is not readable JSON ({e}): {FACEVEIL_JSON_HELP}"
                         ) from None

    def bad(what: str) -> ModelError:
        return ModelError(f"{str(path)!r} is malformed ({what}): {FACEVEIL_JSON_HELP}")

    if not isinstance(extra, dict):
        raise bad("not a JSON object")
    if "id" in extra and not (isinstance(extra["id"], str) and extra["id"]):
        raise bad("id must be a non-empty string")
    for name in ("patch_size", "image_size"):
        value = extra.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(f"{name} must be a positive integer")
    framing = extra.get("framing")
    if framing is not None:
        points = framing.get("landmarks68") if isinstance(framing, dict) else None
        ok = isinstance(points, list) and len(points) == 68 and all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in p) for p in points)
        if not ok:
            raise bad("framing.landmarks68 must hold 68 [u, v] number pairs")
    return extra


# ---------------------------------------------------------------------------
# Resolving a model name to a folder
# ---------------------------------------------------------------------------


def model_record(backbone: Any) -> dict:
    """The model record a file stores for a loaded backbone (torch or onnxruntime alike):
    its reference, identity and geometry."""
    return {
        "reference": backbone.reference,
        "id": backbone.model_id,
        "sha256": backbone.sha256,
        "image_size": backbone.image_size,
        "latent_shape": list(backbone.latent_shape),
        "prediction_type": backbone.prediction_type,
    }


# ---------------------------------------------------------------------------
# The default model
# ---------------------------------------------------------------------------


def settings_path() -> Path:
    """faceveil's settings on this machine (the default model): ``settings.json`` in
    faceveil's cache folder, beside the record of pulls, so that clearing the cache (and
    the models in it) also resets the default."""
    return cache_dir() / "settings.json"


def settings() -> dict:
    """The settings file's contents ({} when there is none); an unreadable one is a
    :class:`ModelError`, never silently ignored (it may name the default model)."""
    path = settings_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read faceveil's settings {str(path)!r} ({e}): choose the "
                         "default model again with `faceveil models default NAME` (or "
                         f"{BUILTIN})") from None
    if not isinstance(data, dict):
        raise ModelError(f"faceveil's settings {str(path)!r} are not a JSON object: choose "
                         "the default model again with `faceveil models default NAME`")
    return data


@dataclass(frozen=True)
class DefaultModel:
    """The model a run without ``--model`` uses, and what chose it (``source``: the
    environment variable, the settings file, or "" for the built-in model)."""

    name: str
    source: str = ""

    @property
    def builtin(self) -> bool:
        """Whether nothing chose another model than the built-in one."""
        return not self.source

    def note(self) -> str:
        """What a run without ``--model`` says about the model it uses ("" for the
        built-in model, unless something chose it)."""
        return f"model: {self.name} (the default, chosen by {self.source})" if self.source else ""


def default_model() -> DefaultModel:
    """``$FACEVEIL_MODEL``, else the settings file's default (``faceveil models default``,
    or the last ``faceveil models pull``), else the built-in model."""
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return DefaultModel(DEFAULT_MODEL if env == BUILTIN else env, f"${MODEL_ENV}")
    name = settings().get("default_model")
    if isinstance(name, str) and name:
        return DefaultModel(name, str(settings_path()))
    return DefaultModel(DEFAULT_MODEL)


def set_default_model(name: str) -> DefaultModel:
    """Make ``name`` (a preset, folder or hub id on this machine; ``builtin``: the
    built-in model) the default, written atomically to :func:`settings_path`. A model
    that is not on this machine is refused, naming the pull command."""
    if name == BUILTIN:
        value = None
    else:
        reference = parse_reference(name)
        locate(reference)  # on this machine, or the error that says how to get it
        value = reference.get("path", name)
    try:
        data = settings()
    except ModelError:
        data = {}  # an unreadable file is what this command repairs
    data.pop("default_model", None)
    if value is not None:
        data["default_model"] = value
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(),
                 replace=True)
    return default_model()


def parse_reference(spec: str | None) -> dict:
    """Turn what a user typed into a model reference: preset, folder or hub id (None:
    the default model, :func:`default_model`)."""
    if not spec:
        chosen = default_model()
        try:
            return parse_reference(chosen.name)
        except ModelError as e:  # a default folder that went away, a bad $FACEVEIL_MODEL
            raise ModelError(f"{e} (the default model, chosen by {chosen.source}; `faceveil "
                             f"models default {BUILTIN}` goes back to the built-in model)"
                             ) from None
    if spec in PRESETS:
        return {"preset": spec}
    path = Path(spec).expanduser()
    if path.is_dir():
        return {"path": str(path.resolve())}
    if path.exists():
        raise ModelError(f"{spec!r} is a file; a model is a diffusers folder, a preset or a hub id")
    repo, _, revision = spec.partition("@")
    parts = repo.split("/")
    if len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~")):
        return {"hub": repo, "revision": revision or None}
    names = ", ".join(PRESETS)
    raise ModelError(
        f"unknown model {spec!r}: give a preset ({names}), a local diffusers folder, "
        "or a Hugging Face id such as CompVis/ldm-celebahq-256"
    )


def pull_hint(name: str, revision: str | None = None) -> str:
    """How to fetch a model that is not on this machine."""
    preset = PRESETS.get(name)
    repo = preset.repo if preset is not None and preset.repo else name
    rev = f" --revision {revision}" if revision else ""
    folder = repo.split("/")[-1]
    return (f"fetch it with `faceveil models pull {name}{rev}` (it needs network access), or "
            f"on a machine with network access: `hf download {repo}{rev} --local-dir "
            f"{folder}`, copy the folder here and pass --model ./{folder}")


def locate(reference: dict) -> Path:
    """The local folder holding a referenced model (never downloads)."""
    if "preset" in reference:
        preset = PRESETS.get(reference["preset"])
        if preset is None:
            known = ", ".join(PRESETS)
            raise ModelError(f"unknown preset {reference['preset']!r} (known: {known})")
        if preset.folder is not None:
            folder = WEIGHTS_DIR / preset.folder
            if not (folder / "model_index.json").exists():
                raise ModelError(
                    f"the built-in model {preset.name!r} is missing from this installation "
                    f"({folder}); reinstall faceveil")
            return folder
        return _snapshot(preset.repo, reference.get("revision") or preset.revision,
                         preset.name)
    if "path" in reference:
        folder = Path(reference["path"])
        if not folder.is_dir():
            raise ModelError(f"model folder {str(folder)!r} not found (use --model to point to it)")
        return folder
    if "hub" in reference:
        return _snapshot(reference["hub"], reference.get("revision"), reference["hub"])
    raise ModelError(f"cannot understand model reference {reference!r}")


def reference_name(reference: dict) -> str:
    """A reference as a person would type it: preset, hub id or folder."""
    return str(reference.get("preset") or reference.get("hub") or reference.get("path")
               or reference)


def _snapshot(repo: str, revision: str | None, name: str) -> Path:
    """The cached snapshot of ``repo`` (local files only)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingExtraError(f"the model {name!r} (in the Hugging Face cache)",
                                "huggingface_hub") from None
    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True,
                                      ignore_patterns=HUB_IGNORE))
    except Exception:  # noqa: BLE001 - any failure means: not (all) in the cache
        chosen = default_model()
        why = ""
        if not chosen.builtin and chosen.name.partition("@")[0] in (name, repo):
            why = (f" (it is the default model, chosen by {chosen.source}; `faceveil models "
                   f"default {BUILTIN}` goes back to the built-in model)")
        raise ModelError(f"model {repo!r} is not on this machine{why}: "
                         + pull_hint(name, revision)) from None


def hub_revision(folder: Path) -> str | None:
    # huggingface_hub snapshots live in .../snapshots/<commit hash>/
    return folder.name if folder.parent.name == "snapshots" else None


def available_locally(preset: Preset) -> bool:
    """Whether a preset's weights are on this machine (no network access)."""
    if preset.folder is not None:
        return (WEIGHTS_DIR / preset.folder / "model_index.json").exists()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # the light install cannot look (or use it)
        return False
    try:
        snapshot_download(preset.repo, revision=preset.revision, local_files_only=True,
                          ignore_patterns=HUB_IGNORE)
        return True
    except Exception:  # noqa: BLE001 - not in the cache
        return False


def real_models() -> list[str]:
    """The presets of real checkpoints that are on this machine (none without the
    models extra, which is needed to use them)."""
    return [p.name for p in PRESETS.values() if p.repo and available_locally(p)]


def resolution_advice(reference: dict) -> str:
    """What to do about faces much larger than the model in use (``reference``) renders:
    a real model already on this machine, else (for a built-in model) the command that
    fetches one; "" when there is nothing to suggest."""
    using = reference_name(reference)
    here = [name for name in real_models()
            if name != using and PRESETS[name].repo != reference.get("hub")]
    if here:
        return f"for a higher-resolution model on this machine add --model {here[0]}"
    preset = PRESETS.get(reference.get("preset", ""))
    if preset is not None and preset.folder is not None:
        return ("for a higher-resolution model run 'faceveil models pull ldm-celebahq-256' "
                "once (it then becomes the default model)")
    return ""


# ---------------------------------------------------------------------------
# Pulling
# ---------------------------------------------------------------------------


def pulled_path() -> Path:
    """faceveil's record of pulled models: ``$FACEVEIL_CACHE`` (default:
    ``$XDG_CACHE_HOME/faceveil`` or ``~/.cache/faceveil``) / ``pulled.json``."""
    return cache_dir() / "pulled.json"


def pulled() -> dict[str, dict]:
    """Every pull recorded on this machine, by snapshot folder."""
    try:
        data = json.loads(pulled_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def verify_pulled(folder: Path, sha256: str) -> None:
    """Refuse weights that differ from what ``faceveil models pull`` recorded for this
    snapshot (a damaged or replaced cache)."""
    entry = pulled().get(str(folder.resolve()))
    if entry and entry.get("sha256") and entry["sha256"] != sha256:
        raise ModelError(
            f"the weights in {str(folder)!r} are not the ones `faceveil models pull "
            f"{entry.get('name', '')}` fetched (sha256 {sha256[:16]}..., pulled "
            f"{entry['sha256'][:16]}...): the cache was damaged or changed; pull it again")
