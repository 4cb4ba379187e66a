"""Format 4 golden files and failure cases: made ONCE with the release that first wrote
format 4 (the commit named in manifest_v4.json), never by the tests. Run from that
commit's checkout: ``python tests/vectors/make_vectors_v4.py COMMIT``.

Writes ``v4-aligned.png`` (golden.key), ``v4-age.png`` (to golden-age.txt's recipient
and an ssh-ed25519 key, golden-ssh), ``v4-age.face-0.key`` (its face 0), and under
``v4-failures/`` tampered records with the outcome each must give, listed in
``manifest_v4.json`` (as age's testkit lists its cases).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from faceveil import api, keys
from faceveil.format import png
from faceveil.options import Options
from faceveil.recipients import Identities, Recipients

HERE = Path(__file__).parent
OUT = HERE / "v4-failures"
made_by = sys.argv[1]
KEY = keys.KeySource.from_key_file(HERE / "golden.key")
OPTS = Options.of(aligned=True)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Fixed test identities (never use them for anything else).
if not (HERE / "golden-age.txt").exists():
    subprocess.run([sys.executable, "-m", "faceveil", "keygen", "--identity", "-o",
                    HERE / "golden-age.txt"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "",
                    "-f", HERE / "golden-ssh"], check=True)
age_public = (HERE / "golden-age.txt").read_text().split("# public key: ")[1].split()[0]
ssh_public = (HERE / "golden-ssh.pub").read_text().strip()
IDS = Identities.read([HERE / "golden-age.txt"])

a = api.anonymize(HERE / "face.png", KEY, options=OPTS)
(HERE / "v4-aligned.png").write_bytes(a.png_bytes())
b = api.anonymize(HERE / "face.png", Recipients.parse([age_public, ssh_public]), options=OPTS)
(HERE / "v4-age.png").write_bytes(b.png_bytes())
share = api.share_face(HERE / "v4-age.png", IDS, 0)
(HERE / "v4-age.face-0.key").write_bytes(share.to_bytes())


def stored(body: dict, mac) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return json.dumps({"format": body.get("format"), "version": body.get("version"),
                       "record": text, "digest": sha(text.encode()), "mac": mac})


record = b.record
mac = base64.b64encode(record.mac).decode()
OUT.mkdir(exist_ok=True)
cases = []


def case(name, edit, key, exit_code, message, image="v4-age.png"):
    body = json.loads(json.dumps(record.body))
    meta = None
    if edit:  # an attacker's edit: the digest made again, the MAC kept
        edit(body)
        meta = f"v4-failures/{name}.json"
        (HERE / meta).write_text(stored(body, mac) + "\n")
    cases.append({"name": name, "image": image, "meta": meta, "key": key,
                  "exit": exit_code, "message": message})


wrapped = record.key.wrapped


def set_wrapped(data):
    def edit(body):
        body["key"]["wrapped"] = base64.b64encode(data).decode()
    return edit


case("age-header-truncated", set_wrapped(wrapped[:60]), "-i golden-age.txt", 4, "age header")
case("age-header-not-age", set_wrapped(b"\x00" * 120), "-i golden-age.txt", 4,
     "not an age file")
case("recipients-removed", lambda body: body["key"].pop("recipients"), "-i golden-age.txt",
     4, "key recipients")
case("key-check-removed", lambda body: body["key"].update(check=None), "-i golden-age.txt",
     4, "removed")
case("recipient-added-by-attacker",
     lambda body: body["key"]["recipients"].append("age1attacker"), "-i golden-age.txt", 4,
     "MAC mismatch")
case("version-5", lambda body: body.update(version=5), "-i golden-age.txt", 4,
     "version 5 is not supported")
case("key-file-for-age-file", None, "-k golden.key", 3, "identity")
case("other-identity", None, "-i other-age.txt", 3,
     "none of the given identities is a recipient of this file")
case("identity-for-key-file-file", None, "-i golden-age.txt", 3, "not to public-key",
     image="v4-aligned.png")
case("face-key-for-another-file", None, "--face-key v4-age.face-0.key", 3, "another file",
     image="v4-aligned.png")
forged = keys.FaceShare(share.salt, share.nonce, 0, bytes(32)).to_bytes()
(OUT / "face-key-altered.key").write_bytes(forged)
case("face-key-altered", None, "--face-key v4-failures/face-key-altered.key", 3,
     "does not open face 0")
if not (HERE / "other-age.txt").exists():
    subprocess.run([sys.executable, "-m", "faceveil", "keygen", "--identity", "-o",
                    HERE / "other-age.txt"], check=True)

files = sorted(p for p in HERE.rglob("*") if p.is_file() and (
    p.name.startswith(("v4-", "golden-", "other-")) or p.parent == OUT))
manifest = {
    "about": "Format 4 golden files and failure cases (made once by make_vectors_v4.py; "
             "never regenerated). tests/test_vectors_v4.py checks these hashes first.",
    "made_by": made_by,
    "files": {str(p.relative_to(HERE)): sha(p.read_bytes()) for p in files},
    "vectors": {name: {"file": file, "key": args, "recovered_sha256": sha(
        np.ascontiguousarray(api.recover(HERE / file, key).pixels).tobytes())}
        for name, file, args, key in (
            ("v4-aligned", "v4-aligned.png", "-k golden.key", KEY),
            ("v4-age", "v4-age.png", "-i golden-age.txt", IDS),
            ("v4-age-ssh", "v4-age.png", "-i golden-ssh",
             Identities.read([HERE / "golden-ssh"])),
            ("v4-age-face-0", "v4-age.png", "--face-key v4-age.face-0.key", share))},
    "failures": cases,
}
(HERE / "manifest_v4.json").write_text(json.dumps(manifest, indent=1) + "\n")
assert png.read(HERE / "v4-age.png").version == 4
