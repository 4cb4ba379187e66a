"""Format 4 end to end on the tiny pixel model: public-key recipients (age, SSH), face
keys, re-wrapping and the XMP label; Debian's age and exiftool check interoperability."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from PIL import Image

from faceveil import api, images, keys
from faceveil.cli import main
from faceveil.errors import InputError, MetadataError, RecipientError, WrongKeyError
from faceveil.format import holders, png
from faceveil.options import Options
from faceveil.recipients import Identities, Recipients, new_identity

from .conftest import centre_mask, smooth_image
from .records import rewrite

FAST = Options.of(steps=4)


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def ssh_pair(tmp_path, name="ssh", passphrase=None):
    """An ed25519 OpenSSH key pair: (private key file, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    enc = (ser.BestAvailableEncryption(passphrase.encode()) if passphrase
           else ser.NoEncryption())
    path = tmp_path / name
    path.write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, enc))
    public = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    return path, public.decode() + " someone@laptop"


def age_pair(tmp_path, name="id.txt"):
    text, public = new_identity()
    path = tmp_path / name
    path.write_text(text)
    return path, public


@pytest.fixture
def face(face_files):
    """The aligned face and its mask (the conftest's key file is not used here)."""
    return face_files[:2]


def anonymize_cli(tmp_path, face, model, *key_args, out="anon.png"):
    img, mask = face
    out = tmp_path / out
    r = run("anonymize", img, "-o", out, *key_args, "-m", model, "--aligned", "--mask", mask,
            "--steps", 4, "-q")
    return r, out


def test_keygen_identity_writes_age_keygen_text(tmp_path):
    r = run("keygen", "--identity", "-o", tmp_path / "id.txt")
    assert r.exit_code == 0, r.output
    public = r.stdout.strip().splitlines()[-1]
    text = (tmp_path / "id.txt").read_text()
    assert public.startswith("age1") and f"# public key: {public}\n" in text
    assert text.splitlines()[-1].startswith("AGE-SECRET-KEY-1")
    assert (tmp_path / "id.txt").stat().st_mode & 0o777 == 0o600
    if shutil.which("age-keygen"):  # the reference implementation derives the same key
        derived = subprocess.run(["age-keygen", "-y", tmp_path / "id.txt"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        assert derived == public


def test_two_recipients_each_recover_bit_exactly(tmp_path, face, pixel_model):
    age_id, age_pub = age_pair(tmp_path)
    ssh_key, ssh_pub = ssh_pair(tmp_path)
    before = set(tmp_path.iterdir())
    r, out = anonymize_cli(tmp_path, face, pixel_model, "-r", age_pub, "-r", ssh_pub)
    assert r.exit_code == 0, r.output
    assert set(tmp_path.iterdir()) - before == {out}  # nothing written but the output
    record = api.inspect(out)
    assert record["version"] == 4 and record["key"]["type"] == "age"
    assert record["key"]["recipients"] == [age_pub, ssh_pub.rsplit(" ", 1)[0]]  # no comment
    original = np.array(Image.open(face[0]))
    for identity in (age_id, ssh_key):
        back = tmp_path / f"back-{identity.name}.png"
        r = run("recover", out, "-o", back, "-i", identity, "-q")
        assert r.exit_code == 0, r.output
        assert np.array_equal(np.array(Image.open(back)), original)


def test_age_opens_the_wrapped_file_key(tmp_path, face, pixel_model):
    if not shutil.which("age"):
        pytest.skip("Debian's age is not installed")
    age_id, age_pub = age_pair(tmp_path)
    r, out = anonymize_cli(tmp_path, face, pixel_model, "-r", age_pub)
    assert r.exit_code == 0, r.output
    key = api.inspect(out)["key"]
    (tmp_path / "wrapped.age").write_bytes(base64.b64decode(key["wrapped"]))
    file_key = subprocess.run(["age", "-d", "-i", age_id, tmp_path / "wrapped.age"],
                              check=True, capture_output=True).stdout
    assert len(file_key) == 32
    # The key age unwrapped is the file's: its key check matches.
    assert keys.FileKey(file_key, base64.b64decode(key["salt"])).check_value() == \
        base64.b64decode(key["check"])


def test_wrong_or_missing_identity_is_exit_3_and_writes_nothing(tmp_path, face, pixel_model):
    _, age_pub = age_pair(tmp_path)
    other, _ = age_pair(tmp_path, "other.txt")
    r, out = anonymize_cli(tmp_path, face, pixel_model, "-r", age_pub)
    assert r.exit_code == 0, r.output
    back = tmp_path / "back.png"
    r = run("recover", out, "-o", back, "-i", other)
    assert r.exit_code == 3 and "none of the given identities is a recipient" in r.output
    keyfile = tmp_path / "k.key"
    keys.generate_key_file(keyfile)
    r = run("recover", out, "-o", back, "-k", keyfile)
    assert r.exit_code == 3 and "identity" in r.output
    # The reverse: an identity for a file made with a key file.
    r, out2 = anonymize_cli(tmp_path, face, pixel_model, "-k", keyfile, out="k.png")
    assert r.exit_code == 0, r.output
    r = run("recover", out2, "-o", back, "-i", other)
    assert r.exit_code == 3
    assert not back.exists()


@pytest.mark.parametrize("bad, says", [
    ("age1notakey", "not a valid age recipient"),
    ("hello", "is not a recipient"),
    ("ssh-ed25519 AAAAnotbase64!", "not a valid SSH public key"),
])
def test_malformed_recipient_is_exit_2(tmp_path, face, pixel_model, bad, says):
    r, out = anonymize_cli(tmp_path, face, pixel_model, "-r", bad)
    assert r.exit_code == 2 and says in r.output, r.output
    assert not out.exists()


def test_unsupported_ssh_type_says_which_work(tmp_path, face, pixel_model):
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    listing = tmp_path / "recipients.txt"
    listing.write_text(f"# the team\n\n{pub}\n")
    r, out = anonymize_cli(tmp_path, face, pixel_model, "-R", listing)
    assert r.exit_code == 2 and "ssh-ed25519, ssh-rsa" in r.output and "line 3" in r.output
    assert not out.exists()


def test_encrypted_ssh_identity_asks_for_its_passphrase(tmp_path):
    path, public = ssh_pair(tmp_path, passphrase="open sesame")
    wrapped = Recipients.parse([public]).wrap(b"k" * 32)
    asked = []
    ids = Identities.read([path], lambda name: asked.append(name) or "open sesame")
    assert ids.unwrap(wrapped) == b"k" * 32 and asked == [repr(str(path))]
    with pytest.raises(Exception, match="wrong passphrase"):
        Identities.read([path], lambda name: "nope")


def test_corrupt_age_header_is_exit_4(tmp_path, face, pixel_model):
    age_id, age_pub = age_pair(tmp_path)
    r, out = anonymize_cli(tmp_path, face, pixel_model, "-r", age_pub)
    record = api.read_record(out)

    def truncate(f):
        f["key"]["wrapped"] = base64.b64encode(record.key.wrapped[:60]).decode()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rewrite(record, truncate)))
    r = run("recover", out, "--meta", bad, "-o", tmp_path / "x.png", "-i", age_id)
    assert r.exit_code == 4 and "age header" in r.output, r.output
    assert not (tmp_path / "x.png").exists()


def test_record_grows_at_most_300_bytes_per_recipient(tmp_path):
    """Each recipient adds its stanza (base64 in the record) and its public key; age's
    random-length grease stanza is added once per file, not per recipient."""
    ssh_key, ssh_pub = ssh_pair(tmp_path)
    for public in (new_identity()[1], ssh_pub):
        header = Recipients.parse([public]).wrap(bytes(32)).split(b"\n---")[0]
        stanzas = header.split(b"\n-> ")[1:]
        mine = [s for s in stanzas if b"grease" not in s.split(b"\n")[0]]
        assert len(mine) == 1
        stanza = len(b"-> " + mine[0] + b"\n")
        growth = 4 * (stanza + 2) // 3 + len(Recipients.parse([public]).texts[0]) + 3
        assert growth <= 300, growth


def two_faces(pixel_model):
    """A 32x64 picture with two 'faces' side by side, anonymized through explicit
    regions (the pixel model's aligned crops)."""
    left, right = smooth_image(seed=1), smooth_image(seed=2)
    pixels = np.concatenate([left, right], axis=1)
    regions = [api.box_region(pixels, (x, 0, 32, 32), model=str(pixel_model),
                              index=i)
               for i, x in enumerate((0, 32))]
    return pixels, regions


def test_face_key_recovers_its_face_only(tmp_path, pixel_model):
    pixels, regions = two_faces(pixel_model)
    key = keys.KeySource.from_bytes(bytes(range(32)))
    a = api.anonymize(pixels, key, model=str(pixel_model), regions=regions, options=FAST)
    out = tmp_path / "anon.png"
    out.write_bytes(a.png_bytes())
    keyfile = tmp_path / "k.key"
    keyfile.write_bytes(b"faceveil-key-v1\n" + bytes(range(32)).hex().encode() + b"\n")
    r = run("share", out, "--face", 1, "-k", keyfile, "-o", tmp_path / "face-1.key")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "face-1.key").stat().st_mode & 0o777 == 0o600
    back = tmp_path / "back.png"
    r = run("recover", out, "-o", back, "--face-key", tmp_path / "face-1.key", "-q")
    assert r.exit_code == 0, r.output
    got = np.array(Image.open(back).convert("RGB"))
    full = api.recover(out, key, model=str(pixel_model)).pixels
    shared = np.any(got != a.pixels, axis=2)  # what the face key changed
    assert shared.any() and np.array_equal(got[shared], full[shared])  # exactly the original
    assert np.array_equal(got[:, 48:], full[:, 48:])  # face 1 is back
    assert np.array_equal(got[:, :16], a.pixels[:, :16])  # face 0 stays anonymized
    assert not np.array_equal(full[:, :16], a.pixels[:, :16])
    # The output still says it holds a synthetic face.
    assert "Iptc4xmpExt:DigitalSourceType" in Image.open(back).info.get("XML:com.adobe.xmp", "")
    # Another file (same key, same picture): exit 3.
    b = api.anonymize(pixels, key, model=str(pixel_model), regions=regions, options=FAST)
    other = tmp_path / "other.png"
    other.write_bytes(b.png_bytes())
    r = run("recover", other, "-o", tmp_path / "o.png", "--face-key", tmp_path / "face-1.key")
    assert r.exit_code == 3 and "another file" in r.output
    # The key of face 1, claiming face 0's nonce or altered: exit 3.
    share = keys.FaceShare.read(tmp_path / "face-1.key")
    for forged in (keys.FaceShare(share.salt, a.record.faces[0].nonce, 0, share.secret),
                   keys.FaceShare(share.salt, share.nonce, 1, bytes(32))):
        with pytest.raises(WrongKeyError):
            holders.open_face(a.record, forged)
    r = run("share", out, "--face", 2, "-k", keyfile, "-o", tmp_path / "face-2.key")
    assert r.exit_code == 2 and "2 face(s)" in r.output
    assert not (tmp_path / "face-2.key").exists()


def test_rewrap_moves_the_file_to_new_holders(tmp_path, face, pixel_model):
    old_id, old_pub = age_pair(tmp_path, "old.txt")
    new_id, new_pub = age_pair(tmp_path, "new.txt")
    r, out = anonymize_cli(tmp_path, face, pixel_model, "-r", old_pub)
    before = out.read_bytes()
    pixels = images.load_image(out).pixels
    # Without the right identity: exit 3, the file untouched.
    r = run("rewrap", out, "-i", new_id, "-r", new_pub)
    assert r.exit_code == 3 and out.read_bytes() == before
    r = run("rewrap", out, "-i", old_id, "-r", new_pub, "--remove-recipient", old_pub)
    assert r.exit_code == 0, r.output
    assert api.inspect(out)["key"]["recipients"] == [new_pub]
    assert np.array_equal(images.load_image(out).pixels, pixels)
    assert _chunks(out.read_bytes(), b"IDAT") == _chunks(before, b"IDAT")
    original = np.array(Image.open(face[0]))
    r = run("recover", out, "-o", tmp_path / "b.png", "-i", new_id, "-q")
    assert r.exit_code == 0 and np.array_equal(np.array(Image.open(tmp_path / "b.png")),
                                               original)
    r = run("recover", out, "-o", tmp_path / "c.png", "-i", old_id)
    assert r.exit_code == 3 and not (tmp_path / "c.png").exists()
    # To a key file, then back from it.
    keyfile = tmp_path / "k.key"
    keys.generate_key_file(keyfile)
    r = run("rewrap", out, "-i", new_id, "--to-key", keyfile)
    assert r.exit_code == 0, r.output
    assert api.inspect(out)["key"]["type"] == "file"
    r = run("recover", out, "-o", tmp_path / "d.png", "-k", keyfile, "-q")
    assert r.exit_code == 0 and np.array_equal(np.array(Image.open(tmp_path / "d.png")),
                                               original)


def _chunks(data: bytes, kind: bytes) -> list[bytes]:
    out, at = [], 8
    while at < len(data):
        n = int.from_bytes(data[at:at + 4], "big")
        if data[at + 4:at + 8] == kind:
            out.append(data[at + 8:at + 8 + n])
        at += 12 + n
    return out


def test_rewrap_refuses_what_it_cannot_do():
    with pytest.raises(RecipientError):
        Recipients.parse(["ssh-dss AAAA"])
    with pytest.raises(RecipientError):
        Recipients.parse([])


def test_label_says_synthetic_faces_and_can_be_turned_off(tmp_path, face, pixel_model):
    keyfile = tmp_path / "k.key"
    keys.generate_key_file(keyfile)
    r, out = anonymize_cli(tmp_path, face, pixel_model, "-k", keyfile)
    assert r.exit_code == 0, r.output
    xmp = Image.open(out).info["XML:com.adobe.xmp"]
    assert "compositeWithTrainedAlgorithmicMedia" in xmp and "AGE-SECRET" not in xmp
    # The recovered photo holds the original face: it does not keep the label.
    back = tmp_path / "back.png"
    r = run("recover", out, "-o", back, "-k", keyfile, "-q")
    assert r.exit_code == 0, r.output
    assert "compositeWithTrainedAlgorithmicMedia" not in str(Image.open(back).info)
    if shutil.which("exiftool"):
        said = subprocess.run(["exiftool", "-XMP-iptcExt:DigitalSourceType", out],
                              check=True, capture_output=True, text=True).stdout
        assert "compositeWithTrainedAlgorithmicMedia" in said.replace(" ", "") or \
            "Composite With Trained Algorithmic Media" in said
    r, bare = anonymize_cli(tmp_path, face, pixel_model, "-k", keyfile, "--no-label",
                            out="bare.png")
    assert r.exit_code == 0, r.output
    assert "XML:com.adobe.xmp" not in Image.open(bare).info


def test_api_takes_recipients_and_identities(tmp_path, pixel_model):
    age_id, age_pub = age_pair(tmp_path)
    x = smooth_image()
    a = api.anonymize(x, Recipients.parse([age_pub]), model=str(pixel_model), mask=centre_mask(),
                      options=FAST)
    ids = Identities.read([age_id])
    assert np.array_equal(api.recover(a.png_bytes(), ids, model=str(pixel_model)).pixels, x)
    share = api.share_face(a.png_bytes(), ids, 0)
    assert np.array_equal(api.recover(a.png_bytes(), share, model=str(pixel_model)).pixels, x)
    with pytest.raises(InputError):
        api.share_face(a.png_bytes(), ids, 1)
    with pytest.raises(MetadataError):
        png.replace_record(b"not a png", a.record)
