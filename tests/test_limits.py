"""Hostile and careless inputs met with a clear word (issue 27): a missing input, key
files others can read, short passphrases, a folder given as key file."""

import os

import pytest
from click.testing import CliRunner

from faceveil.cli import main


def run(*args, input=None, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env)


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "my.key"
    assert run("keygen", "-o", path).exit_code == 0
    return path


@pytest.mark.parametrize("command", [
    ("anonymize", "nosuchdir/", "-o", "outdir/", "-k", "KEY"),
    ("anonymize", "nosuch.jpg", "-o", "out.png", "-k", "KEY"),
    ("recover", "nosuchdir/", "-o", "back/", "-k", "KEY"),
    ("recover", "nosuch.png", "-o", "back.png", "-k", "KEY"),
    ("detect", "nosuch.jpg", "-o", "preview.png"),
    ("inspect", "nosuch.png"),
])
def test_a_missing_input_is_named(tmp_path, key, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    r = run(*(str(key) if a == "KEY" else a for a in command))
    assert r.exit_code == 1, r.output
    assert f"input {command[1]!r} not found" in r.output
    assert "output" not in r.output.split("error:", 1)[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.key"]  # nothing written


def test_a_folder_as_key_file_is_a_clear_error(tmp_path, face_files):
    img, _, _ = face_files
    for command in ("anonymize", "recover"):
        r = run(command, img, "-o", tmp_path / "o.png", "-k", tmp_path)
        assert r.exit_code == 1, r.output
        assert "is a folder" in r.output and "key file" in r.output


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_key_file_others_can_read_is_warned_about(tmp_path, face_files, pixel_model):
    img, mask, key = face_files
    args = (img, "-o", tmp_path / "a.png", "-k", key, "-m", pixel_model, "--aligned",
            "--mask", mask, "--steps", 2, "--force", "-q")
    r = run("anonymize", *args)  # keygen's mode 0600: no word
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    for mode in (0o640, 0o604):
        key.chmod(mode)
        r = run("anonymize", *args)
        assert r.exit_code == 0, r.output  # warned, not refused
        assert f"warning: key file {str(key)!r} is accessible by others (mode " \
               f"{mode:04o})" in r.output
        assert "chmod 600" in r.output


def test_a_short_passphrase_is_warned_about(tmp_path, face_files, pixel_model):
    img, mask, _ = face_files
    out = tmp_path / "a.png"
    args = ("anonymize", img, "-o", out, "-m", pixel_model, "--aligned", "--mask", mask,
            "--steps", 2, "--force", "-q", "--passphrase-stdin")
    r = run(*args, input="x\n")
    assert r.exit_code == 0, r.output
    assert "warning: the passphrase has only 1 character(s)" in r.output
    r = run(*args, input="eight ch\n")
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    # Recovering a file made with a short passphrase is no time to say it again.
    r = run("recover", out, "-o", tmp_path / "b.png", "-q", "--passphrase-stdin",
            input="eight ch\n")
    assert r.exit_code == 0 and "warning" not in r.output, r.output
