#!/usr/bin/env bash
# Format 3 golden files: made once, with the release that first wrote format 3 (the
# commit named in manifest.json), never by the tests. Run from that commit's checkout.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
W=$(mktemp -d)
cd "$W"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
K="$HERE"/golden.key
V3="python -m faceveil.cli"
cp "$HERE"/face.png "$HERE"/photo.png .
$V3 anonymize face.png -o "$HERE"/v3-aligned.png -k "$K" --aligned -q          # default: sealed
$V3 anonymize face.png -o "$HERE"/v3-aligned-diffusion.png -k "$K" --aligned --no-lossless -q
$V3 anonymize photo.png -o "$HERE"/v3-photo.png -k "$K" -q --sidecar
$V3 anonymize face.png -o "$HERE"/v3-deniable.png -k "$K" --aligned --deniable -q
python - "$ROOT" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.videoclips import make_clip
make_clip(Path("clip.mkv"), frames=6, width=176, height=128)
PY
$V3 anonymize clip.mkv -o "$HERE"/v3-clip.mkv -k "$K" -q --sidecar
# What this release recovers from each (references for the diffusion-recovered ones).
for v in v3-aligned-diffusion v3-deniable; do
    extra=""; [ "$v" = v3-deniable ] && extra="--deniable"
    $V3 recover "$HERE"/$v.png -o "$HERE"/$v.recovered.png -k "$K" -q $extra
done
python "$HERE"/manifest_v3.py "$(git -C "$ROOT" rev-parse --short HEAD)"
