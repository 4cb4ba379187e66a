"""training/train.py and export.py on CPU, a few steps of a tiny UNet.

The DCGAN of gan-face-generate is replaced by a tiny random generator of the same
interface (latents (N, 100, 1, 1) -> faces (N, 3, 64, 64) in [-1, 1]), so these tests
need neither its package nor its weights.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

TRAINING = Path(__file__).resolve().parents[1] / "training"
sys.path.insert(0, str(TRAINING))

import celeba  # noqa: E402
import dcgan  # noqa: E402
import export  # noqa: E402
import memorization  # noqa: E402
import numpy as np  # noqa: E402
import train  # noqa: E402
from PIL import Image  # noqa: E402

from faceveil import faces  # noqa: E402
from faceveil.diffusion import hub, models  # noqa: E402

TINY = ["--device", "cpu", "--batch-size", "4", "--channels", "16,32", "--layers-per-block", "1",
        "--log-every", "1", "--sample-count", "2", "--sample-steps", "2",
        "--validation-faces", "2", "--save-every", "1e9", "--warmup", "10"]


class TinyGenerator(nn.Module):
    """A stand-in for the DCGAN generator: one transposed convolution and a tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.ConvTranspose2d(dcgan.NZ, 3, 64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z))


@pytest.fixture(autouse=True)
def stand_in_generator(monkeypatch):
    def load_generator(device="cpu"):
        torch.manual_seed(7)
        return TinyGenerator().eval().requires_grad_(False).to(device)

    monkeypatch.setattr(dcgan, "load_generator", load_generator)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in handlers.items():  # train.py installs its own
        signal.signal(s, h)


def run(out: Path, *extra: str) -> dict:
    assert train.main(["--out", str(out), *TINY, *extra]) == 0
    return torch.load(out / train.CHECKPOINT_NAME, weights_only=False)


def log(out: Path) -> list[dict]:
    return list(train.log_lines(out / "log.jsonl"))


def test_a_few_steps_log_save_and_sample(tmp_path):
    ckpt = run(tmp_path, "--max-steps", "3")
    assert ckpt["step"] == 3 and ckpt["data_stream"] == train.DATA_STREAM
    lines = log(tmp_path)
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all(r["loss"] > 0 and r["faces_per_s"] > 0 for r in lines)
    assert [r["lr"] for r in lines] == pytest.approx([4e-5, 8e-5, 1.2e-4])  # warm-up
    evals = list(train.log_lines(tmp_path / "eval.jsonl"))
    assert [e["step"] for e in evals] == [0, 3] and "val_t980" in evals[1]
    assert (tmp_path / "samples" / "step0000003.png").exists()
    # The model trained; the EMA moved towards it, not onto it.
    moved = [(ckpt["unet"][k] - ckpt["ema"][k]).abs().max() for k in ckpt["unet"]]
    assert max(moved) > 0


def test_a_cool_down_lowers_the_rate_linearly_over_the_last_steps(tmp_path):
    # --warmup 1: the rate is constant until the cool-down's 4 steps before step 6.
    run(tmp_path, "--max-steps", "6", "--warmup", "1", "--cool-down", "4")
    base = 4e-4
    assert [r["lr"] for r in log(tmp_path)] == pytest.approx(
        [base, base, base, 0.75 * base, 0.5 * base, 0.25 * base])
    with pytest.raises(SystemExit):
        train.parse_args(["--out", str(tmp_path), "--cool-down", "4"])


def test_batches_depend_only_on_the_step():
    gen = dcgan.load_generator()
    tables = train.NoiseTables(train.make_scheduler(), torch.device("cpu"))
    a = train.batch_for_step(5, 4, gen, tables, 0, torch.device("cpu"))
    b = train.batch_for_step(5, 4, gen, tables, 0, torch.device("cpu"))
    c = train.batch_for_step(6, 4, gen, tables, 0, torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and a[0].shape == (4, 48, 16, 16)
    # The v target is the schedule's: diffusers' get_velocity of the same noise and faces.
    sched = train.make_scheduler()
    x0 = torch.randn(2, 48, 16, 16)
    noise = torch.randn_like(x0)
    t = torch.tensor([3, 900])
    noisy, v = tables.noisy_and_target(x0, noise, t)
    assert torch.allclose(noisy, sched.add_noise(x0, noise, t), atol=1e-6)
    assert torch.allclose(v, sched.get_velocity(x0, noise, t), atol=1e-6)


def test_ema_is_one_fused_lerp():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = [0.9 * p + 0.1 * q for p, q in zip(a.parameters(), b.parameters())]
    train.EMA(a, b).update(0.9)
    assert all(torch.allclose(p, e) for p, e in zip(a.parameters(), expected))


def test_resumed_run_is_bit_identical(tmp_path):
    straight = run(tmp_path / "a", "--max-steps", "4")
    run(tmp_path / "b", "--max-steps", "2")
    resumed = run(tmp_path / "b", "--max-steps", "4", "--resume")
    for part in ("unet", "ema"):
        for k, v in straight[part].items():
            assert torch.equal(v, resumed[part][k]), (part, k)
    assert train.main(["--out", str(tmp_path / "a"), *TINY]) == 2  # no silent overwrite


def test_init_from_exported_weights_continues_them(tmp_path):
    run(tmp_path / "a", "--max-steps", "4")
    landmarks = json.loads((hub.WEIGHTS_DIR / "face64-v2" / "faceveil.json").read_text())
    doc = export.export(tmp_path / "a" / train.CHECKPOINT_NAME, tmp_path / "face64-vtest",
                        landmarks["framing"]["landmarks68"])
    assert doc["id"] == "faceveil-face64-vtest" and doc["training"]["steps"] == 4
    exported = models.load_model(str(tmp_path / "face64-vtest"))
    assert exported.latent_shape == (48, 16, 16)

    # Zero new steps: model and EMA both start as the exported (fp16) weights.
    start = run(tmp_path / "b", "--init-from", str(tmp_path / "face64-vtest"),
                "--max-steps", "4")
    assert start["step"] == 4 and start["init_from"] == "faceveil-face64-vtest"
    weights = exported.unet.state_dict()
    for part in ("unet", "ema"):
        assert all(torch.equal(start[part][k], weights[k]) for k in weights)
    assert start["optimizer"]["state"] == {}  # a fresh optimizer
    cont = run(tmp_path / "b", "--max-steps", "6", "--resume")
    assert cont["step"] == 6 and [r["step"] for r in log(tmp_path / "b")] == [5, 6]
    assert log(tmp_path / "b")[0]["lr"] == pytest.approx(4e-5)  # warm-up starts again
    doc = export.export(tmp_path / "b" / train.CHECKPOINT_NAME, tmp_path / "face64-vnext",
                        landmarks["framing"]["landmarks68"])
    assert doc["training"]["init_from"] == "faceveil-face64-vtest"


def test_compile_flag_keeps_the_checkpoint_loadable(tmp_path):
    # The "eager" backend exercises the wrapper without a C++ compiler.
    ckpt = run(tmp_path, "--max-steps", "1", "--compile", "--compile-backend", "eager",
               "--channels-last")
    assert not any(k.startswith("_orig_mod") for k in ckpt["unet"])
    train.UNet2DModel(**ckpt["unet_config"]).load_state_dict(ckpt["unet"])


def test_profile_prints_and_saves_nothing(tmp_path, capsys):
    assert train.main(["--out", str(tmp_path), *TINY, "--profile", "1"]) == 0
    assert "Self CPU" in capsys.readouterr().out
    assert (tmp_path / "profile_trace.json").exists()
    assert not (tmp_path / train.CHECKPOINT_NAME).exists()


# --------------------------------------------------------------------------
# real faces (celeba.py): synthetic stand-ins only, never CelebA itself


def framing_v2() -> faces.Framing:
    return celeba.load_framing(hub.WEIGHTS_DIR / "face64-v2")


def fake_cache(path: Path, count: int = 20) -> Path:
    rng = np.random.default_rng(3)
    np.save(path, rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8))
    return path


def test_alignment_frames_a_face_as_the_pipeline_does(monkeypatch):
    """A crop pasted 1:1 into a photo, with landmarks at the framing's places there, comes
    back as the pipeline crops it (``faces.crop_transform``: moved a few pixels so the
    crop holds the whole chin): detection and landmarks run on the upsampled photo and
    map back."""
    framing = framing_v2()
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    photo = rng.integers(0, 256, (109, 89, 3), dtype=np.uint8)
    photo[30:94, 12:76] = crop  # the crop's (0, 0) at photo (x 12, y 30)
    seen = {}

    class OneFace:
        def left(self): return 10
        def top(self): return 20
        def right(self): return 109
        def bottom(self): return 119

    def landmarks68(image, box, angle=0.0):
        seen["shape"], seen["box"] = image.shape, box
        in_photo = framing.landmarks68 * 64 + [12, 30]
        return (in_photo + 0.5) * celeba.UPSAMPLE - 0.5  # in the upsampled photo

    monkeypatch.setattr(faces, "dlib_model", lambda kind: lambda img, up: [OneFace()])
    monkeypatch.setattr(faces, "landmarks68", landmarks68)
    out, reason = celeba.align_photo(photo, framing)
    assert reason == "ok" and out.dtype == np.uint8 and out.shape == (64, 64, 3)
    in_photo = framing.landmarks68 * 64 + [12, 30]
    t = faces.crop_transform(in_photo, framing, 64)
    # The same scale and columns as the pasted crop; moved up by the chin's overflow.
    assert np.allclose(t[:, :2], np.eye(2)) and abs(t[0, 2] + 12) < 1e-6
    assert -38 < t[1, 2] < -30
    expected = faces.extract(photo, t, 64)
    assert np.array_equal(out, np.clip(np.rint(expected), 0, 255).astype(np.uint8))
    assert seen == {"shape": (218, 178, 3), "box": (10, 20, 100, 100)}


def test_photos_without_one_face_are_skipped_and_counted(monkeypatch):
    def jpeg(array):
        buf = __import__("io").BytesIO()
        Image.fromarray(array).save(buf, "JPEG")
        return buf.getvalue()

    blank = jpeg(np.full((109, 89, 3), 128, np.uint8))  # dlib's HOG finds nothing here
    photos = [("a.jpg", blank), ("b.jpg", b"not a jpeg"), ("c.jpg", blank)]
    crops, names, counts = celeba.align_all(photos, framing_v2())
    assert crops.shape == (0, 64, 64, 3) and names == []
    assert counts == {"no face": 2, "unreadable": 1}

    two = [object(), object()]
    monkeypatch.setattr(faces, "dlib_model", lambda kind: lambda img, up: two)
    assert celeba.align_photo(np.zeros((109, 89, 3), np.uint8), framing_v2()) == (
        None, "several faces")


def test_real_faces_mix_and_resume_in_order(tmp_path):
    cache = fake_cache(tmp_path / "faces.npy")
    crops = celeba.load_cache(cache)
    train_idx, held = celeba.split(len(crops))
    assert list(held) == [18, 19] and list(train_idx) == list(range(18))
    real = celeba.RealFaces(crops, train_idx, torch.device("cpu"))
    tables = train.NoiseTables(train.make_scheduler(), torch.device("cpu"))
    cpu = torch.device("cpu")
    # All real: no DCGAN needed; the same step draws the same faces, another step others.
    a = train.batch_for_step(5, 4, None, tables, 0, cpu, real, 4)
    b = train.batch_for_step(5, 4, None, tables, 0, cpu, real, 4)
    c = train.batch_for_step(6, 4, None, tables, 0, cpu, real, 4)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    mixed = train.batch_for_step(5, 4, dcgan.load_generator(), tables, 0, cpu, real, 2)
    assert mixed[0].shape == (4, 48, 16, 16) and train.real_count(32, 0.8) == 26
    # Drawn faces are training faces, some mirrored, never held-out ones.
    drawn = real.draw(64, torch.Generator().manual_seed(1))
    pool = real.images(torch.arange(len(real)))
    pool = torch.cat([pool, pool.flip(-1)])
    match = (drawn[:, None] - pool[None]).abs().flatten(2).amax(2) == 0
    assert match.any(1).all() and (match[:, 18:].any(1)).any()
    # A run with real faces resumes bit-identically.
    straight = run(tmp_path / "a", "--max-steps", "4", "--real", str(cache))
    run(tmp_path / "b", "--max-steps", "2", "--real", str(cache))
    resumed = run(tmp_path / "b", "--max-steps", "4", "--resume", "--real", str(cache))
    assert straight["real"] == {"path": str(cache), "faces": 18, "per_batch": 3}
    for k, v in straight["ema"].items():
        assert torch.equal(v, resumed["ema"][k]), k
    assert "val_real_t980" in list(train.log_lines(tmp_path / "a" / "eval.jsonl"))[-1]


def test_memorization_search_finds_a_copied_face():
    bank = np.random.default_rng(1).integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    query = np.stack([bank[7], bank[3, :, ::-1]])  # a copy and a mirrored copy
    d, j = memorization.pixel_nearest(query, bank)
    assert np.allclose(d, 0, atol=1e-2) and list(j) == [7, 30 + 3]
