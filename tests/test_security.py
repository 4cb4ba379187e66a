"""Security properties of format version 2: one negative test per threat in SECURITY.md."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from faceveil import api, faces, images, keys
from faceveil.cli import main
from faceveil.diffusion import mixing
from faceveil.diffusion.engine import Engine
from faceveil.diffusion.models import load_model
from faceveil.errors import MetadataError, WrongKeyError
from faceveil.format import auth, fields, wrapping
from faceveil.options import Options
from faceveil.pipeline import generate, pixels

from .conftest import FAST_KDF, centre_mask, psnr, smooth_image
from .records import rewrite

KEY = keys.KeySource.from_bytes(bytes(range(32)))


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def files(tmp_path_factory, pixel_model):
    """A normal and a deniable anonymized file of the same smooth 32 px 'face'."""
    d = tmp_path_factory.mktemp("sec")
    x, m = smooth_image(), centre_mask()
    out = {}
    for name, deniable in (("normal", False), ("deniable", True)):
        # The keyed flip of the inverted noise (the diffusion-recoverable key operation,
        # the only one of deniable files), whose threats these tests are about.
        a = api.anonymize(x, KEY, model=str(pixel_model), mask=m,
                          options=Options.of(steps=10, deniable=deniable, flip="mixed"))
        path = d / f"{name}.png"
        path.write_bytes(a.png_bytes())
        out[name] = (path, a)
    return out


def _open(stored: dict, key, deniable: bool = False):
    record = auth.load(stored)
    return (auth.open_unauthenticated if deniable else auth.open)(record, key)


# --- 1. no downgrade -----------------------------------------------------------------


def test_stripped_key_check_and_mac_are_refused(files, tmp_path, pixel_model):
    path, a = files["normal"]

    def strip(r):
        r["key"]["check"] = None
        r["mac"] = None

    meta = tmp_path / "stripped.json"
    meta.write_text(json.dumps(rewrite(a.record, strip)))
    key_file = tmp_path / "k.key"
    key_file.write_text(f"faceveil-key-v1\n{bytes(range(32)).hex()}\n")
    for extra in ([], ["--deniable"]):
        r = run("recover", path, "-o", tmp_path / "b.png", "-k", key_file, "--meta", meta,
                "-m", pixel_model, *extra)
        assert r.exit_code == 4 and "removed" in r.output, r.output
    # A MAC alone removed (key check kept), or the reverse, is refused as well.
    for edit in (lambda r: r.update(mac=None), lambda r: r["key"].update(check=None)):
        with pytest.raises(MetadataError):
            auth.load(rewrite(a.record, edit))


def test_every_edit_of_a_normal_record_is_caught(files):
    _, a = files["normal"]
    edits = [
        lambda r: r["faces"][0]["box"].__setitem__(0, 3),
        lambda r: r["sampler"].update(steps=9, timesteps=r["sampler"]["timesteps"][:9]),
        lambda r: r["model"]["reference"].update(path="/elsewhere"),
        lambda r: r["faces"][0].update(nonce=base64.b64encode(bytes(16)).decode()),
        lambda r: r["sampler"].update(flip="signs"),
    ]
    for edit in edits:
        with pytest.raises(MetadataError, match="MAC"):
            _open(rewrite(a.record, edit), KEY)


# --- 2. nothing in the public record reveals the original -----------------------------


def test_normal_record_publishes_no_geometry_or_residual(files):
    _, a = files["normal"]
    face = a.record.body["faces"][0]
    # Only ciphertext beside the public fields: the sealed geometry, the sealed original.
    assert set(face) == {"box", "crop_size", "nonce", "window_sha256", "sealed", "lossless"}
    assert a.record.sampler.norm == "hidden"
    opened = auth.open(a.record, KEY)
    assert opened.faces[0].residual is not None and opened.faces[0].radius > 0
    wrong = keys.KeySource.from_bytes(bytes(32))
    with pytest.raises(WrongKeyError):
        auth.open(a.record, wrong)


def _band_attack(a: api.Anonymized, residual: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Where the soft mask blends (0 < alpha < 1) the published pixel is
    alpha * new + (1 - alpha) * original, and new = published + residual, so
    original = published - alpha * residual / (1 - alpha). PSNR of that estimate and of
    the published pixels themselves, against the original, inside the band."""
    region = a.regions[0]
    alpha = np.asarray(region.mask, dtype=np.float64)[:, :, None]
    out = faces.extract(a.pixels, region.transform, region.crop_size)
    # Where the new face went past [0, 255] the blend was clipped and the formula does
    # not apply (the tiny test model is wild): the attack uses the other band pixels.
    new = out + residual
    band = ((alpha > 0.05) & (alpha < 0.95))[:, :, 0] & ((new >= 0) & (new <= 255)).all(2)
    assert band.sum() > 10
    estimate = out - np.where(alpha < 1, alpha * residual / np.maximum(1 - alpha, 1e-6), 0)
    return psnr(estimate[band], x[band]), psnr(out[band], x[band])


def test_public_residual_cannot_rebuild_the_blended_band(pixel_model):
    """The template mask (no landmarks found) has a wide feathered band. With the whole
    residual the attack above rebuilds the original there (that is why the normal
    residual is sealed); the residual a deniable file publishes must not help at all."""
    x = smooth_image(32, seed=3)
    normal = api.anonymize(x, KEY, model=str(pixel_model),
                           options=Options.of(aligned=True, steps=10, flip="mixed"))
    sealed = auth.open(normal.record, KEY).faces[0].residual
    leak, baseline = _band_attack(normal, sealed, x)
    assert leak > baseline + 15  # the attack works on the full residual ...
    deniable = api.anonymize(x, KEY, model=str(pixel_model),
                             options=Options.of(aligned=True, steps=10, deniable=True))
    public = auth.open_unauthenticated(deniable.record, KEY).faces[0].residual
    attempt, baseline = _band_attack(deniable, public, x)
    assert attempt <= baseline + 0.1  # ... and gets nothing from the public one


# --- 3. deniable mode is deniable ----------------------------------------------------


def test_deniable_file_holds_nothing_that_authenticates(tmp_path, pixel_model):
    jpg = tmp_path / "in.jpg"
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    Image.fromarray(smooth_image()).save(jpg, exif=exif, quality=95)
    m = centre_mask()
    a = api.anonymize(images.load_image(jpg), KEY, model=str(pixel_model), mask=m,
                      options=Options.of(steps=10, deniable=True))
    assert any("metadata" in n for n in a.notes)
    r = a.record
    assert r.key.check is None and r.mac is None and r.original_metadata is None
    assert all("sealed" not in f and "lossless" not in f for f in r.body["faces"])
    assert b"SecretCam" not in a.png_bytes()
    # Every key opens it the same way and yields a face: no error tells them apart.
    x = smooth_image()
    outs = []
    for k in (KEY, keys.KeySource.from_bytes(bytes(32)), keys.KeySource.from_bytes(b"x" * 32)):
        back = api.recover(a.pixels, k, meta=r, model=str(pixel_model), deniable=True)
        assert back.metadata == {} and not any("authentic" in n for n in back.notes)
        outs.append(psnr(back.pixels[m], x[m]))
    assert outs[0] > 30 and max(outs[1:]) < outs[0] - 8
    with pytest.raises(Exception, match="lossless"):
        api.anonymize(x, KEY, model=str(pixel_model), mask=m,
                      options=Options.of(steps=2, deniable=True, lossless=True))


# --- 5. bounds on everything read before authentication ------------------------------


def _bounded(record_edit, files, match=None):
    _, a = files["deniable"]
    bad = rewrite(a.record, record_edit)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(MetadataError, match=match):
        _open(bad, keys.KeySource.from_passphrase("pw"), deniable=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0 and peak < 32 * 1024 * 1024


@pytest.mark.parametrize("kdf", [
    {"name": "argon2id", "iterations": 3, "lanes": 4, "memory_kib": 64 * 1024 * 1024},
    {"name": "argon2id", "iterations": 10_000, "lanes": 1, "memory_kib": 64},
    {"name": "argon2id", "iterations": 1, "lanes": 1000, "memory_kib": 65536},
    {"name": "scrypt", "iterations": 1, "lanes": 1, "memory_kib": 64},
    {"name": "argon2id", "iterations": "3", "lanes": 1, "memory_kib": 64},
])
def test_hostile_kdf_parameters_are_refused_fast(files, kdf):
    def edit(r):
        r["key"].update(type="passphrase", kdf=kdf)

    _bounded(edit, files, "Argon2id|key derivation")


@pytest.mark.parametrize("edit", [
    lambda r: r["key"].update(salt=base64.b64encode(b"short").decode()),
    lambda r: r.update(image=[1, 2]),
    lambda r: r["image"].update(width=-4),
    lambda r: r.update(faces={"0": 1}),
    lambda r: r["faces"][0].update(transform=[[0, 0, 1], [0, 0, 1]]),
    lambda r: r["faces"][0].update(transform=[[1, 0], [0, 1]]),
    lambda r: r["faces"][0].update(box=[0, 0, "w", 1]),
    lambda r: r["faces"][0].update(crop_size=10**9),
    lambda r: r["faces"][0].update(nonce=base64.b64encode(b"n" * 8).decode()),
    lambda r: r["faces"][0].update(mask={"shape": [32, 32], "bits": [1]}),
    lambda r: r["sampler"].update(steps=10**9),
    lambda r: r["model"].update(reference=[]),
    lambda r: r.update(faces=[r["faces"][0]] * 2),
])
def test_malformed_fields_are_clear_errors(files, edit):
    _bounded(edit, files)


def test_zlib_bombs_are_refused_without_inflating(files):
    bomb = base64.b64encode(zlib.compress(bytes(200 * 1024 * 1024), 9)).decode()

    def mask_bomb(r):
        r["faces"][0]["mask"] = {"shape": [32, 32], "bits": bomb}

    def residual_bomb(r):
        r["faces"][0]["residual"] = {"scale": 64, "data": bomb}

    _bounded(mask_bomb, files, "larger than it may be")
    _bounded(residual_bomb, files, "larger than it may be")


def test_unauthenticated_model_location_is_not_followed(files, pixel_model):
    path, a = files["deniable"]
    assert "path" in a.record.model["reference"]
    with pytest.raises(Exception, match="--model"):
        api.recover(path, KEY, deniable=True)
    assert api.recover(path, KEY, deniable=True, model=str(pixel_model)).pixels.shape


# --- 6. per-face convergence: a face's result does not depend on its batch ------------


def test_exact_steps_batch_independence(pixel_model):
    bb = load_model(str(pixel_model))
    g = torch.Generator().manual_seed(5)
    x = torch.nn.functional.avg_pool2d(torch.rand(3, 3, 64, 64, generator=g), 2) * 2 - 1
    z0 = bb.encode(x)
    m = torch.zeros(3, 1, 16, 16, dtype=torch.bool)
    m[..., 3:13, 4:12] = True
    signs = torch.randint(0, 2, z0.shape, generator=g).float() * 2 - 1
    engine = Engine(bb, steps=10)
    together = engine.transform(z0, signs, m, "exact-steps", "masked").z0
    singles = [engine.transform(z0[i:i + 1], signs[i:i + 1], m[i:i + 1], "exact-steps",
                                "masked") for i in range(3)]
    alone = torch.cat([one.z0 for one in singles])
    assert torch.allclose(together, alone, atol=1e-5)
    # ... and recovering them in another grouping inverts them the same way.
    back_together = engine.transform(together, signs, m, "exact-steps", "masked").z0
    back_alone = torch.cat([engine.transform(alone[i:i + 1], signs[i:i + 1], m[i:i + 1],
                                             "exact-steps", "masked").z0 for i in range(3)])
    assert torch.allclose(back_together, back_alone, atol=1e-5)
    assert all(one.residuals.shape == (1,) for one in singles)


# --- 7. keyed orthogonal mixing with a hidden norm -----------------------------------


def _params(n: int, nonce: bytes = b"n" * 16) -> mixing.MixingParams:
    return keys.SecretKey(bytes(range(32)), bytes(16)).face(nonce).mixing(n)


@pytest.mark.parametrize("n", [1, 2, 3, 64, 1000, 12288])
def test_mixing_is_orthogonal_and_an_involution(n):
    p = _params(n)
    v = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    q = mixing.mix(v, p)
    assert torch.allclose(q.norm(), v.norm(), rtol=1e-12)
    assert torch.allclose(mixing.unmix(q, p), v, atol=1e-12)
    once = mixing.keyed_flip(v, p)
    assert torch.allclose(mixing.keyed_flip(once, p), v, atol=1e-12)


def test_mixing_hides_magnitudes_and_keeps_gaussians_gaussian():
    n = 12288
    p = _params(n)
    v = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.7
    out = mixing.keyed_flip(v, p)
    # The paper's flip keeps |v| exactly; the mixed one leaves no trace of it.
    corr = torch.corrcoef(torch.stack([v.abs(), out.abs()]))[0, 1]
    assert abs(float(corr)) < 0.05
    assert abs(float(out.mean())) < 0.03 and abs(float(out.std()) - 0.7) < 0.02
    kurtosis = float(((out - out.mean()) ** 4).mean() / out.var() ** 2)
    assert abs(kurtosis - 3.0) < 0.2
    # Another nonce (another face) gives unrelated material.
    other = mixing.keyed_flip(v, _params(n, b"m" * 16))
    assert abs(float(torch.corrcoef(torch.stack([out, other]))[0, 1])) < 0.05


def _dense_q(p: mixing.MixingParams) -> np.ndarray:
    """Q as a dense matrix, built independently of mixing.py: Sylvester Hadamard
    matrices, explicit permutation and sign matrices, R_r = H D_r P_r, Q = R_3 R_2 R_1."""
    n = p.n
    m = 1 << (n.bit_length() - 1)
    w = np.array([[1.0]])
    while w.shape[0] < m:
        w = np.block([[w, w], [w, -w]])
    w /= np.sqrt(m)
    first, last = np.eye(n), np.eye(n)
    first[:m, :m] = w
    last[n - m:, n - m:] = w
    h = w if m == n else last @ first
    q = np.eye(n)
    for perm, signs in zip(p.perms, p.round_signs, strict=True):
        q = h @ np.diag(signs.astype(float)) @ np.eye(n)[perm] @ q
    return q


def test_mixing_known_answer():
    from .test_keys import _hkdf_sha256  # RFC 5869, written out independently

    n = 10
    p = _params(n)
    # The permutation, by an independent route: HKDF -> ChaCha20 -> argsort of uint64 LE.
    ikm, salt = bytes(range(32)), bytes(16) + b"n" * 16
    stream = keys._chacha20_keystream(_hkdf_sha256(ikm, salt, b"faceveil/v2/mix/perm/0", 32),
                                      8 * n)
    assert p.perms[0].tolist() == np.argsort(np.frombuffer(stream, "<u8"), kind="stable").tolist()
    # The transform against a dense Q^T diag(k) Q, for this n (not a power of two) and 16.
    for size in (n, 16):
        ps = _params(size)
        q = _dense_q(ps)
        assert np.allclose(q @ q.T, np.eye(size), atol=1e-12)
        v = np.arange(size, dtype=np.float64)
        dense = q.T @ (ps.flip * (q @ v))
        assert np.allclose(mixing.keyed_flip(torch.from_numpy(v), ps).numpy(), dense,
                           atol=1e-12)
    # Pinned: any change here breaks recovery of every version 2 file.
    assert p.perms[0].tolist() == [2, 9, 5, 6, 1, 7, 3, 4, 8, 0]
    assert p.flip.tolist() == [1, -1, -1, -1, 1, 1, -1, -1, 1, -1]
    out = mixing.keyed_flip(torch.arange(n, dtype=torch.float64), p)
    assert np.round(out.numpy(), 6).tolist() == [
        -5.454103, -4.758141, -1.272077, -4.26188, 13.442057, 3.717653, -2.902228, -1.894001,
        0.570066, -2.446644]


def test_hidden_norm_is_the_same_for_every_face():
    n = 500
    z = torch.randn(4, 5, 10, 10, dtype=torch.float64) * torch.tensor([0.3, 0.6, 0.9, 1.2]
                                                                      ).view(4, 1, 1, 1)
    mask = torch.zeros(4, 1, 10, 10, dtype=torch.bool)
    mask[..., :, :] = True
    ps = [_params(n, bytes([i]) * 16) for i in range(4)]
    out, norms = mixing.apply(z, mask, ps, hide=[30.0] * 4)
    assert [round(float(out[b].norm()), 9) for b in range(4)] == [30.0] * 4
    assert norms == pytest.approx([float(z[b].norm()) for b in range(4)])
    back, _ = mixing.apply(out, mask, ps, restore=norms)
    assert torch.allclose(back, z, atol=1e-12)


def test_salt_binds_face_material_and_nonces_must_be_fresh():
    a = keys.SecretKey(bytes(range(32)), b"a" * 16).face(b"n" * 16)
    b = keys.SecretKey(bytes(range(32)), b"b" * 16).face(b"n" * 16)
    assert not np.array_equal(a.signs(256), b.signs(256))
    with pytest.raises(MetadataError):
        keys.SecretKey(bytes(range(32)), b"a" * 16).face(b"short")


def test_version_1_files_still_recover(pixel_model):
    """A file in the format of faceveil 0.1 (signs-only flip, public geometry, v1 key
    derivation), written here the way 0.1 wrote it, still recovers."""
    x, m = smooth_image(), centre_mask()
    bb = load_model(str(pixel_model))
    params = KEY.new_params(FAST_KDF)
    secret = KEY.resolve(params)
    region = faces.aligned_region(x, framing=faces.Framing.ffhq(), crop_size=bb.image_size,
                                  mask=m)
    latent = generate.latent_mask(bb, region.mask > 0)
    nonce = b"v" * 16
    engine = Engine(bb, steps=10)
    signs = secret.signs(nonce, bb.latent_shape)
    crop = faces.extract(x, region.transform, bb.image_size)

    def op(z, mask, part):
        return torch.where(mask, z * torch.from_numpy(signs)[None].float(), z)

    new, _ = generate.run_engine(bb, engine, [crop], [latent], op, 1, "exact-steps", "masked")
    out = faces.paste(x, new[0], region.transform, region.mask)
    out = np.where(m[:, :, None], out, x)
    q = pixels.residual(new[0], out, region)
    record = {
        "format": "faceveil", "version": 1, "created_by": "faceveil 0.1.0",
        "model": bb.describe(),
        "sampler": {"name": "ddim", "eta": 0, "steps": 10, "spacing": "leading",
                    "timesteps": list(engine.schedule.timesteps), "inversion": "exact-steps",
                    "context": "masked", "recovery_methods": ["plain", "exact-steps"],
                    "default_recovery": "exact-steps"},
        "key": {"type": "file", "salt": fields.b64e(params["salt"]), "kdf": None,
                "check": fields.b64e(secret.check_value())},
        "image": {"width": 32, "height": 32},
        "faces": [{"box": [0, 0, 32, 32], "transform": region.transform.tolist(),
                   "crop_size": bb.image_size, "source": "aligned",
                   "nonce": fields.b64e(nonce),
                   "mask": fields.pack_mask(region.mask > 0),
                   "latent_mask": fields.pack_mask(latent),
                   "residual": {**fields.pack_residual(q),
                                "window_sha256": pixels.window_hash(
                                    out, region.transform, bb.image_size)}}],
        "original_metadata": None,
    }
    record["mac"] = fields.b64e(secret.mac(auth.canonical_bytes(record)))
    record["digest"] = hashlib.sha256(auth.canonical_bytes(record)).hexdigest()
    back = api.recover(out, KEY, meta=record, model=str(pixel_model))
    assert psnr(back.pixels[m], x[m]) > 35
    with pytest.raises(WrongKeyError):
        api.recover(out, keys.KeySource.from_bytes(bytes(32)), meta=record,
                    model=str(pixel_model))


# --- sealed originals ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory, pixel_model):
    """A default (sealed) file with two faces side by side, its key file and record."""
    import dataclasses

    d = tmp_path_factory.mktemp("sealed")
    x = np.concatenate([smooth_image(), smooth_image(seed=5)], axis=1)  # 32 x 64
    left = faces.aligned_region(x[:, :32], framing=faces.Framing.ffhq(), crop_size=32,
                                mask=centre_mask())
    shift = np.asarray(left.transform, np.float64).copy()
    shift[:, 2] -= shift[:, 0] * 32  # photo x + 32 maps where x mapped
    right = dataclasses.replace(left, box=(left.box[0] + 32, *left.box[1:]), transform=shift,
                                index=1)
    a = api.anonymize(x, KEY, model=str(pixel_model), regions=[left, right],
                      options=Options.of(steps=3))
    assert [f.lossless is not None for f in a.record.faces] == [True, True]
    key_file = d / "k.key"
    key_file.write_text(f"faceveil-key-v1\n{bytes(range(32)).hex()}\n")
    path = d / "two.png"
    path.write_bytes(a.png_bytes())
    return x, a, path, key_file


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("edit", ["corrupt", "truncate", "swap"])
def test_damaged_or_swapped_sealed_originals_are_refused(two_faces, tmp_path, edit):
    """Exit 4 and nothing written, whether the MAC catches it (an attacker without the
    key) or, with the MAC made again by a key holder, the face's AEAD does: a sealed
    original is bound to its face."""
    x, a, path, key_file = two_faces
    blobs = [base64.b64decode(f["lossless"]) for f in a.record.body["faces"]]

    def damage(r):
        if edit == "corrupt":
            r["faces"][0]["lossless"] = _b64(blobs[0][:40] + bytes([blobs[0][40] ^ 1])
                                             + blobs[0][41:])
        elif edit == "truncate":
            r["faces"][0]["lossless"] = _b64(blobs[0][: len(blobs[0]) // 2])
        else:
            r["faces"][0]["lossless"], r["faces"][1]["lossless"] = map(_b64, blobs[::-1])

    meta = tmp_path / "edited.json"
    meta.write_text(json.dumps(rewrite(a.record, damage)))
    out = tmp_path / "back.png"
    r = run("recover", path, "-o", out, "-k", key_file, "--meta", meta)
    assert r.exit_code == 4 and "MAC" in r.output and not out.exists(), r.output
    # Defence in depth: the record MAC'd again (as only a key holder can), the AEAD
    # still refuses an original that was damaged or belongs to the other face.
    body = json.loads(json.dumps(a.record.body))
    damage(body)
    k = a.record.key
    secret = wrapping.open_file_key(k, KEY)  # format 4: the file key wrapped under KEY
    with pytest.raises(MetadataError, match="face 0: the lossless data does not authenticate"):
        auth.open(auth.seal(body, secret), KEY)
    assert np.array_equal(api.recover(path, KEY).pixels, x)  # the file itself is intact
