"""``faceveil models pull``: a preset (or any hub id) into the Hugging Face cache, its
weights hashed and the pull recorded (:func:`faceveil.diffusion.hub.pulled_path`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from .hub import HUB_IGNORE, PRESETS, hub_revision, parse_reference, pulled, pulled_path
from .models import load_folder


@dataclass(frozen=True)
class Pulled:
    """What a pull fetched."""

    name: str
    repo: str
    revision: str
    folder: Path
    sha256: str


def pull(name: str, revision: str | None = None) -> Pulled:
    """Download a preset (or a hub id ``owner/name``) into the standard Hugging Face cache
    (huggingface_hub shows progress and resumes an interrupted download), load it once to
    hash its weights, and record repository, commit and hash (:func:`pulled_path`).

    Raises:
        ModelError: an unknown name, no network, or weights that do not load.
    """
    from huggingface_hub import snapshot_download

    preset = PRESETS.get(name)
    if preset is not None and preset.folder is not None:
        raise ModelError(f"{name!r} is built into faceveil; there is nothing to pull")
    if preset is not None:
        repo, revision = preset.repo, revision or preset.revision
    else:
        reference = parse_reference(name)
        if "hub" not in reference:
            raise ModelError(f"{name!r} is not a preset or a Hugging Face id (owner/name)")
        repo, revision = reference["hub"], revision or reference.get("revision")
    try:
        folder = Path(snapshot_download(repo, revision=revision, ignore_patterns=HUB_IGNORE))
    except Exception as e:  # noqa: BLE001 - network, authentication, a missing repository
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelError(f"cannot download {repo!r} ({reason}); on a machine with network "
                         f"access run `faceveil models pull {name}` (or `hf download {repo}"
                         f"{' --revision ' + revision if revision else ''}`) and copy the "
                         "Hugging Face cache (or the folder, then --model FOLDER) here") from None
    backbone = load_folder(folder, {"hub": repo, "revision": hub_revision(folder)})
    done = Pulled(name, repo, hub_revision(folder) or revision or "", folder, backbone.sha256)
    record = pulled()
    record[str(folder.resolve())] = {"name": name, "repo": repo, "revision": done.revision,
                                     "sha256": done.sha256,
                                     "pulled": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime())}
    from ..media import write_atomic

    pulled_path().parent.mkdir(parents=True, exist_ok=True)
    write_atomic(pulled_path(), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
                 replace=True)
    return done


