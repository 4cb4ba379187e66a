"""Add the format-3 golden files to manifest.json (run by make_vectors_v3.sh, once)."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from faceveil import api, keys, video

HERE = Path(__file__).parent
KEY = keys.KeySource.from_key_file(HERE / "golden.key")
made_by = sys.argv[1]
manifest = json.loads((HERE / "manifest.json").read_text())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recovered(name: str, deniable: bool = False) -> str:
    back = api.recover(HERE / name, KEY, deniable=deniable).pixels
    return sha(np.ascontiguousarray(back).tobytes())


photos = {
    "v3-aligned": ("face.png", "lossless", False, None),
    "v3-aligned-diffusion": ("face.png", "exact-steps", False, None),
    "v3-photo": ("photo.png", "lossless", False, "v3-photo.faceveil.json"),
    "v3-deniable": ("face.png", "exact-steps", True, None),
}
for name, (source, recovery, deniable, sidecar) in photos.items():
    entry = {"file": f"{name}.png", "version": 3, "made_by": made_by, "input": source,
             "recovery": recovery, "deniable": deniable,
             "recovered_sha256": recovered(f"{name}.png", deniable)}
    if recovery != "lossless":
        entry["recovered_reference"] = f"{name}.recovered.png"
    if sidecar:
        entry["sidecar"] = sidecar
    manifest["vectors"][name] = entry
back = HERE / "v3-clip.recovered.mkv"
api.recover_video(HERE / "v3-clip.mkv", back, KEY)
digest, frames = hashlib.sha256(), 0
for _, pixels in video.read_frames(back):
    digest.update(pixels.tobytes())
    frames += 1
back.unlink()
manifest["vectors"]["v3-clip"] = {
    "file": "v3-clip.mkv", "version": 3, "clip_version": 2, "made_by": made_by,
    "frames": frames, "recovery": "lossless", "sidecar": "v3-clip.faceveil.jsonl",
    "recovered_frames_sha256": digest.hexdigest()}
for p in sorted(HERE.iterdir()):
    if p.name.startswith("v3-"):
        manifest["files"][p.name] = sha(p.read_bytes())
manifest["files"] = dict(sorted(manifest["files"].items()))
(HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
print("\n".join(sorted(n for n in manifest["files"] if n.startswith("v3-"))))
