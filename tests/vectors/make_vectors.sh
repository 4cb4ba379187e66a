#!/usr/bin/env bash
# Golden files: made once with the writers of earlier releases, never by the tests.
set -euo pipefail
. /work/main/.venv/bin/activate
OUT=/work/main/tests/vectors
W=$(mktemp -d)
cd "$W"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
python - <<'PY'
from PIL import Image
import numpy as np
g = Image.open("/work/main/tests/data/gan_faces.png").convert("RGB")
g.crop((64 * 3, 0, 64 * 4, 64)).save("face.png")          # seed 3, aligned 64x64
o = Image.open("/work/main/tests/data/obama.jpg").convert("RGB")
o.resize((156, 140), Image.Resampling.LANCZOS).save("photo.png")  # one face, ~60 px
PY
cp face.png photo.png "$OUT"/
printf 'faceveil-key-v1\n%s\n' 6a8f1c5e0d9b4a7386f2e1c0b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0 > "$OUT"/golden.key
K="$OUT"/golden.key
# format 1: faceveil at bccfaf7 (the last commit that wrote version 1)
V1="env PYTHONPATH=/tmp/v1tree/src python -m faceveil.cli"
$V1 anonymize face.png -o "$OUT"/v1-aligned.png -k "$K" --aligned -q
$V1 anonymize face.png -o "$OUT"/v1-aligned-lossless.png -k "$K" --aligned --lossless -q
# format 2: faceveil at b449626
V2="python -m faceveil.cli"
$V2 anonymize face.png -o "$OUT"/v2-aligned.png -k "$K" --aligned -q --sidecar
$V2 anonymize face.png -o "$OUT"/v2-aligned-lossless.png -k "$K" --aligned --lossless -q
$V2 anonymize photo.png -o "$OUT"/v2-photo.png -k "$K" -q
$V2 anonymize face.png -o "$OUT"/v2-deniable.png -k "$K" --aligned --deniable -q
python - <<'PY'
import sys; sys.path.insert(0, "/work/main")
from pathlib import Path
from tests.videoclips import make_clip
make_clip(Path("clip.mkv"), frames=6, width=176, height=128)
PY
$V2 anonymize clip.mkv -o "$OUT"/v2-clip.mkv -k "$K" -q --sidecar
ls -la "$OUT"
