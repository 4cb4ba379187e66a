"""Datasets on Ray (faceveil.scale): a local Ray with 2 CPUs, tiny images, a tiny model.

One Ray session serves the module (starting Ray takes seconds). Its workers run a setup
hook that makes any file named ``crash-*`` kill the worker process outright, as a
segfault or an out-of-memory kill would, to test that a lost worker fails only its files.
"""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceveil import images, keys, scale
from faceveil.cli import main
from faceveil.errors import ModelError
from faceveil.format import png as png_records
from faceveil.options import Options

from .conftest import psnr, smooth_image

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray")

STEPS = 4


@pytest.fixture(scope="module")
def local_ray():
    def crash_hook():  # defined here so that Ray ships it by value to its workers
        import os

        from faceveil import images

        real = images.load_image

        def load_image(source):
            if os.path.basename(str(source)).startswith("crash-"):
                os._exit(1)
            return real(source)

        images.load_image = load_image

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": crash_hook})
    yield ray
    ray.shutdown()


@pytest.fixture
def dataset(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(seed=i)).save(src / f"face{i}.png")
    (src / "broken.jpg").write_bytes(b"not an image")
    key_path = tmp_path / "my.key"
    keys.generate_key_file(key_path)
    return src, keys.KeySource.from_key_file(key_path), key_path


def _anonymize(src, dst, key, pixel_model, progress=None, **options):
    return scale.anonymize_folder(src, dst, key, model=str(pixel_model), workers=2,
                                  options=Options.of(aligned=True, steps=STEPS, device="cpu",
                                                     **options), progress=progress)


def test_round_trip_on_local_ray(local_ray, tmp_path, dataset, pixel_model):
    src, key, key_path = dataset
    report = _anonymize(src, tmp_path / "anon", key, pixel_model, sidecar=True)
    assert sorted(n for n, _, _ in report.done) == ["face0.png", "face1.png", "face2.png"]
    assert [n for n, _ in report.failed] == ["broken.jpg"]
    assert "not an image" in report.failed[0][1] and report.workers == 2
    for i in range(3):
        anon = tmp_path / "anon" / f"face{i}.png"
        record = png_records.read(anon)
        assert record == png_records.read_sidecar(tmp_path / "anon" / f"face{i}.faceveil.json")
        assert psnr(images.load_image(anon).pixels, smooth_image(seed=i)) < 40  # changed

    back = scale.recover_folder(tmp_path / "anon", tmp_path / "back", key,
                                options=Options.of(device="cpu"))
    assert back.ok and len(back.done) == 3
    for i in range(3):
        got = images.load_image(tmp_path / "back" / f"face{i}.png").pixels
        assert psnr(got, smooth_image(seed=i)) > 35
    # No temporary file is left anywhere, and the inputs are untouched.
    assert not [p for p in (tmp_path / "anon").iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in src.iterdir()) == [
        "broken.jpg", "face0.png", "face1.png", "face2.png"]

    # The key never appears in Ray's logs or spilled objects (it only travels sealed).
    secret = key.secret
    session = ray._private.worker._global_node.get_session_dir_path()
    for root, _, files in os.walk(session):
        for f in files:
            try:
                with open(os.path.join(root, f), "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            assert secret not in data and secret.hex().encode() not in data, f


def test_outputs_follow_the_folder_rules(local_ray, tmp_path, dataset, pixel_model):
    src, key, key_path = dataset
    out = tmp_path / "anon"
    out.mkdir()
    (out / "face0.png").write_bytes(b"keep me")
    # An existing output is refused up front, before any work, as the command line does.
    with pytest.raises(scale.InputError, match=r"1 output\(s\) exist .*use --force"):
        _anonymize(src, out, key, pixel_model)
    assert (out / "face0.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in out.iterdir()) == ["face0.png"]  # nothing else written
    report = _anonymize(src, out, key, pixel_model, force=True)
    assert len(report.done) == 3 and png_records.read(out / "face0.png")
    # Recovering into the input folder never overwrites an input, even with force: each
    # output that would is renamed (the folder planner of every folder run).
    inputs = {p.name: p.read_bytes() for p in out.iterdir()}
    report = scale.recover_folder(out, out, key, options=Options.of(device="cpu", force=True))
    assert sorted(n for n, _, _ in report.done) == ["face0.png", "face1.png", "face2.png"]
    assert report.ok and "face0.png -> face0_png.png" in report.notes[0]
    assert {n: (out / n).read_bytes() for n in inputs} == inputs
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*inputs, "face0_png.png", "face1_png.png", "face2_png.png"])


def test_a_dead_worker_or_a_full_disk_fails_only_its_files(local_ray, tmp_path, dataset,
                                                            pixel_model, monkeypatch, capfd):
    """A worker killed on one file, the disk full for another's output, an unreadable
    third: each is reported as failed as the plain run reports it, the others are
    written, the summary is printed, and no traceback reaches the terminal."""
    from click.testing import CliRunner

    src, _, key_path = dataset
    Image.fromarray(smooth_image(seed=9)).save(src / "crash-me.png")
    real = Path.write_bytes

    def full_disk(self, data):  # the driver writes every output
        if self.name.startswith(".face1.png."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    anon = tmp_path / "anon"
    r = CliRunner().invoke(main, ["anonymize", str(src), "-o", str(anon), "-k", str(key_path),
                                  "-m", str(pixel_model), "--aligned", "--steps", str(STEPS),
                                  "--ray", "--device", "cpu"])
    assert r.exit_code == 1, r.output
    assert "crash-me.png: FAILED: its Ray worker died twice" in r.output
    assert "face1.png: FAILED: cannot write" in r.output and "No space left" in r.output
    assert "broken.jpg: FAILED" in r.output
    assert "anonymized 2 face(s) in 2 image(s); 3 failed" in r.output
    assert sorted(p.name for p in anon.iterdir()) == ["face0.png", "face2.png"]
    out, err = capfd.readouterr()
    assert "Traceback" not in r.output + out + err


def test_a_model_that_does_not_load_fails_each_file(local_ray, tmp_path, dataset):
    src, key, _ = dataset
    broken = tmp_path / "broken-model"
    broken.mkdir()
    report = scale.anonymize_folder(src, tmp_path / "anon", key, model=str(broken), workers=1,
                                    options=Options.of(device="cpu", aligned=True,
                                                       steps=STEPS))
    assert not report.done and len(report.failed) == 4
    assert all("model_index.json" in r or "not an image" in r for _, r in report.failed)
    with pytest.raises(ModelError):
        scale.anonymize_folder(src, tmp_path / "anon", key, model="no-such-preset")


def test_interrupted_run_leaves_only_whole_outputs(local_ray, tmp_path, dataset, pixel_model):
    src, key, _ = dataset
    seen = []

    def stop(name, ok):
        seen.append(name)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _anonymize(src, tmp_path / "anon", key, pixel_model, progress=stop)
    written = sorted(p.name for p in (tmp_path / "anon").iterdir())
    assert written == [n for n in seen if n != "broken.jpg"]  # only whole files, no temp
    for name in written:
        assert png_records.read(tmp_path / "anon" / name)


def test_cuda_asked_for_but_absent(local_ray, tmp_path, dataset, pixel_model):
    src, key, _ = dataset
    if ray.cluster_resources().get("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(scale.InputError, match="no GPU"):
        scale.anonymize_folder(src, tmp_path / "anon", key,
                               options=Options.of(device="cuda"))


def test_cli_ray_folder(local_ray, tmp_path, dataset, pixel_model):
    from click.testing import CliRunner

    src, key, key_path = dataset
    r = CliRunner().invoke(main, ["anonymize", str(src), "-o", str(tmp_path / "anon"), "-k",
                                  str(key_path), "-m", str(pixel_model), "--aligned",
                                  "--steps", str(STEPS), "--ray", "--device", "cpu"])
    assert r.exit_code == 1, r.output  # broken.jpg failed, the others were written
    assert "broken.jpg: FAILED" in r.output and "3 image(s); 1 failed" in r.output
    assert "Ray worker" in r.output
    anon = tmp_path / "anon"
    (anon / "broken.png").unlink(missing_ok=True)
    r = CliRunner().invoke(main, ["recover", str(anon), "-o", str(tmp_path / "back"), "-k",
                                  str(key_path), "--ray", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == [
        "face0.png", "face1.png", "face2.png"]
    back = np.asarray(Image.open(tmp_path / "back" / "face1.png"))
    assert psnr(back, smooth_image(seed=1)) > 35


def test_same_stem_gives_two_outputs_as_the_plain_run_does(local_ray, tmp_path, dataset,
                                                            pixel_model):
    from click.testing import CliRunner

    _, key, key_path = dataset
    src = tmp_path / "same"
    src.mkdir()
    Image.fromarray(smooth_image(seed=5)).save(src / "a.jpg")
    Image.fromarray(smooth_image(seed=6)).save(src / "a.png")
    report = _anonymize(src, tmp_path / "anon", key, pixel_model)
    assert report.ok and sorted(n for n, _, _ in report.done) == ["a.jpg", "a.png"]
    assert "a.jpg -> a_jpg.png" in report.notes[0] and "a.png -> a_png.png" in report.notes[0]
    written = sorted(p.name for p in (tmp_path / "anon").iterdir())
    assert written == ["a_jpg.png", "a_png.png"]
    outputs = [images.load_image(tmp_path / "anon" / n).pixels for n in written]
    assert not np.array_equal(*outputs)  # two faces, two outputs
    assert all(png_records.read(tmp_path / "anon" / n) for n in written)
    # The plain folder run (no Ray) plans the same outputs.
    r = CliRunner().invoke(main, ["anonymize", str(src), "-o", str(tmp_path / "plain"), "-k",
                                  str(key_path), "-m", str(pixel_model), "--aligned",
                                  "--steps", str(STEPS), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "a.jpg -> a_jpg.png" in r.output and "a.png -> a_png.png" in r.output
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == written


def test_ray_missing_names_the_extra(tmp_path, dataset, monkeypatch):
    from click.testing import CliRunner

    src, _, key_path = dataset
    monkeypatch.setitem(sys.modules, "ray", None)
    r = CliRunner().invoke(main, ["anonymize", str(src), "-o", str(tmp_path / "anon"), "-k",
                                  str(key_path), "--ray"])
    assert r.exit_code == 1
    assert "pip install 'faceveil[ray]'" in r.output
    assert not (tmp_path / "anon").exists()


def test_transport_sealing_round_trip():
    receiver = scale._Receiver()
    sealed = scale.seal_to(receiver.public, b"secret material")
    assert b"secret material" not in sealed
    assert receiver.open(sealed) == b"secret material"
    with pytest.raises(Exception):  # noqa: B017  (cryptography's InvalidTag)
        scale._Receiver().open(sealed)
    key = keys.KeySource.from_passphrase("correct horse")
    assert scale._key_from_payload(scale._key_payload(key)) == key


LEAK_PROBE = """
import glob, json, os, sys
from pathlib import Path
from faceveil import keys, scale
from faceveil.options import Options

secret = os.environ["FACEVEIL_PASSPHRASE"].encode()
leaks = set()

def look(name, ok):  # on the driver, while Ray's processes are up
    for env in glob.glob("/proc/[0-9]*/environ"):
        pid = int(env.split("/")[2])
        try:
            data = Path(env).read_bytes()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\\0", b" ")[:80]
        except OSError:
            continue
        if pid != os.getpid() and secret in data:
            leaks.add(cmd.decode(errors="replace"))

report = scale.anonymize_folder(sys.argv[1], sys.argv[2],
                                keys.KeySource.from_passphrase(secret.decode()),
                                model=sys.argv[3], workers=1, num_cpus=1, progress=look,
                                options=Options.of(aligned=True, steps=2, device="cpu",
                                                   kdf=json.loads(sys.argv[4])))
print(json.dumps({"leaks": sorted(leaks), "done": len(report.done),
                  "kept": os.environ.get("FACEVEIL_PASSPHRASE") == secret.decode()}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_the_passphrase_never_reaches_rays_processes(tmp_path, dataset, pixel_model):
    """FACEVEIL_PASSPHRASE is not in the environment of any process a local Ray starts
    (gcs_server, raylet, workers): the key reaches the workers only sealed. A fresh
    interpreter, so that the run starts its own Ray."""
    import json

    from .conftest import FAST_KDF

    src, _, _ = dataset
    (src / "broken.jpg").unlink()
    phrase = "i27-" + os.urandom(8).hex()
    env = {**os.environ, "FACEVEIL_PASSPHRASE": phrase, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    r = subprocess.run([sys.executable, "-c", LEAK_PROBE, str(src), str(tmp_path / "anon"),
                        str(pixel_model), json.dumps(FAST_KDF)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["done"] == 3 and result["kept"]
    assert result["leaks"] == []
