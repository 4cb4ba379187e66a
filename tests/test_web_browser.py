"""The web page end to end, in a real headless browser: Debian's chromium driven by
Playwright, against `faceveil serve` started by the test on a free local port.

The round trip a person makes: drop group.jpg, untick one face, generate a key, anonymize,
download; then on the Recover tab drop the download and the key, recover, download, and
compare with the original; a wrong key and a wrong passphrase show the error. A
screenshot of each state is saved under the test's tmp_path (``screenshots/``).

Needs /usr/bin/chromium (``apt-get install chromium``; .ci/run installs it) and the
``playwright`` package (the dev extra); Playwright's own browser downloads are never
used. Without them the test fails, loudly: it is skipped only when FACEVEIL_NO_BROWSER=1
says no browser is available on purpose.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faceveil import images, keys
from faceveil.format import png as png_records

from .conftest import psnr

pytestmark = pytest.mark.browser

DATA = Path(__file__).parent / "data"
SRC = str(Path(__file__).resolve().parents[1] / "src")
CHROMIUM = os.environ.get("FACEVEIL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXCLUDED = 2  # the face left as it is
PASSPHRASE = "not the key, but a long passphrase all the same"

if os.environ.get("FACEVEIL_NO_BROWSER") == "1":
    pytest.skip("FACEVEIL_NO_BROWSER=1: no browser on this machine", allow_module_level=True)


@pytest.fixture
def server(tmp_path, pixel_model):
    """`faceveil serve` on a free port, in its own process; yields (url, log path)."""
    log = tmp_path / "server.log"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faceveil.cli", "serve", "--model", str(pixel_model),
             "--steps", "4", "--port", "0", "--access-log"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        end = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < end and proc.poll() is None:
            found = re.search(r"faceveil web page: (http://127\.0\.0\.1:\d+/)", log.read_text())
            url = found.group(1) if found else time.sleep(0.2)
        assert url, f"faceveil serve did not start:\n{log.read_text()}"
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path):
    """A fresh headless chromium (its own profile folder) with one page."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs playwright (pip install -e '.[dev]'); set "
                    "FACEVEIL_NO_BROWSER=1 to skip it on a machine without a browser")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no browser at {CHROMIUM}: apt-get install chromium (or set "
                    "FACEVEIL_NO_BROWSER=1 to skip this test on purpose)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            accept_downloads=True, viewport={"width": 1280, "height": 900})
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "blob:",
                                                               "data:"))
                else errors.append(f"request to elsewhere: {r.url}"))
        try:
            yield page, errors
        finally:
            context.close()


def test_round_trips_in_the_browser(tmp_path, server, browser):
    url, log = server
    page, errors = browser
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    def download(click: str) -> Path:
        with page.expect_download() as info:
            page.click(click)
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        return target

    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    shot("01-anonymize-empty")

    # Drop the photo: its faces appear, numbered, each with a checkbox.
    page.set_input_files("#photo-input", str(DATA / "group.jpg"))
    page.wait_for_selector("canvas", timeout=60_000)
    faces = page.locator("input[data-kind=face]")
    assert faces.count() == 6
    assert "6 faces" in page.inner_text(".card .meta")
    shot("02-faces-detected")

    # Review: leave one face as it is; draw a box, then click it away again.
    page.locator(f'input[data-kind=face][data-index="{EXCLUDED}"]').uncheck()
    canvas = page.locator("canvas").bounding_box()
    x0, y0 = canvas["x"] + 0.02 * canvas["width"], canvas["y"] + 0.04 * canvas["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 40, y0 + 40, steps=5)
    page.mouse.up()
    assert page.locator("input[data-kind=box]").count() == 1
    assert "6 faces will be anonymized; 1 left as it is" in page.inner_text(".summary")
    shot("03-review-face-off-box-drawn")
    page.mouse.click(x0 + 20, y0 + 20)
    assert page.locator("input[data-kind=box]").count() == 0
    assert "5 faces will be anonymized; 1 left as it is" in page.inner_text(".summary")

    # A new key, generated in the page and downloaded.
    key_path = download(".key-generate")
    key = keys.read_key_file(key_path)
    assert "New key generated" in page.inner_text("#anonymize-key .key-state")
    page.check("#want-sidecar")

    page.click("#anonymize-button")
    page.wait_for_selector("#photos .progress:not([hidden])")
    shot("04-anonymizing")
    page.wait_for_selector(".download-png", timeout=120_000)
    shot("05-anonymized-side-by-side")
    anon_path = download(".download-png")
    sidecar_path = download(".download-sidecar")
    assert anon_path.name == "group.anon.png"
    assert sidecar_path.name == "group.anon.faceveil.json"

    original = images.load_image(DATA / "group.jpg").pixels
    anon = images.load_image(anon_path)
    record = png_records.from_text_chunks(anon.text)
    assert png_records.loads(sidecar_path.read_bytes()) == record
    assert len(record.faces) == 5
    # The boxes the page drew (the server's detections): the file holds all but one.
    detected = {int(i): [int(v) for v in box.split(",")] for i, box in page.evaluate(
        "() => [...document.querySelectorAll('input[data-kind=face]')]"
        ".map((i) => [i.dataset.index, i.dataset.box])")}
    assert sorted(detected) == list(range(6))
    assert sorted(f["box"] for f in record.body["faces"]) == sorted(
        b for i, b in detected.items() if i != EXCLUDED)
    x, y, w, h = detected[EXCLUDED]
    kept = np.s_[y:y + h, x:x + w]
    assert np.array_equal(anon.pixels[kept], original[kept])  # byte for byte, as it was
    for i, (x, y, w, h) in detected.items():
        if i != EXCLUDED:
            assert not np.array_equal(anon.pixels[y:y + h, x:x + w], original[y:y + h, x:x + w])

    # Recover, in the Recover tab, with the generated key file.
    page.click("#tab-recover")
    page.set_input_files("#file-input", str(anon_path))
    page.wait_for_selector("#files .card .preview")
    assert "5 anonymized faces · made with a key file" in page.inner_text("#files .card .meta")
    page.set_input_files("#recover-key .key-file-input", str(key_path))
    shot("06-recover-ready")
    page.click("#recover-button")
    page.wait_for_selector(".download-recovered", timeout=120_000)
    shot("07-recovered-side-by-side")
    back_path = download(".download-recovered")
    assert back_path.name == "group.recovered.png"
    back = images.load_image(back_path).pixels
    assert np.array_equal(back[kept], original[kept])
    for i, (x, y, w, h) in detected.items():
        if i != EXCLUDED:
            face = np.s_[y:y + h, x:x + w]
            # Back to the original face, as close as the tiny 32 px model can bring it
            # (a 134 px face is a 32 px crop to it); far from the anonymized one.
            assert psnr(back[face], original[face]) > psnr(anon.pixels[face],
                                                           original[face]) + 3, i
            assert psnr(back[face], original[face]) > 17, i

    # A wrong key file, then a passphrase: both are told apart from success.
    wrong = tmp_path / "wrong.key"
    keys.generate_key_file(wrong)
    page.set_input_files("#recover-key .key-file-input", str(wrong))
    page.click("#recover-button")
    error = page.wait_for_selector("#files .card .error[data-kind=wrong-key]", timeout=60_000)
    assert "Wrong key" in error.inner_text()
    shot("08-wrong-key")
    page.check("#recover-key input[value=passphrase]")
    page.fill("#recover-key .passphrase", PASSPHRASE)
    page.click("#recover-button")
    page.wait_for_function("() => document.querySelector('#files .card .error')"
                           ".textContent.includes('a passphrase was given')", timeout=60_000)
    assert page.locator(".download-recovered").count() == 0

    assert errors == []
    assert [p.name for p in sorted(shots.iterdir())] == [
        "01-anonymize-empty.png", "02-faces-detected.png", "03-review-face-off-box-drawn.png",
        "04-anonymizing.png", "05-anonymized-side-by-side.png", "06-recover-ready.png",
        "07-recovered-side-by-side.png", "08-wrong-key.png"]
    # The server's log (access log on) holds no key and no passphrase, nor any id.
    text = log.read_text()
    assert '"POST /api/recover HTTP/1.1" 202' in text
    assert key.hex() not in text and PASSPHRASE not in text
    assert not re.search(r"/api/(jobs|photos|files)/(?!<id>)", text)

