"""The web page's request handlers (`faceveil serve`), through Starlette's TestClient.

The model is a tiny pixel model and anonymization runs 2 DDIM steps: these tests check
what the server accepts, refuses and returns, not image quality (the browser test and
tests/test_photos.py look at pixels).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the web extra is not installed")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the dev extra)")

from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from faceveil import api, images, keys  # noqa: E402
from faceveil.diffusion import backends  # noqa: E402
from faceveil.format import png as png_records  # noqa: E402
from faceveil.options import Options  # noqa: E402
from faceveil.web import app as web  # noqa: E402
from faceveil.web import (
    command,  # noqa: E402
    protocol,  # noqa: E402
)

from .conftest import psnr  # noqa: E402
from .records import rewrite  # noqa: E402
from .tinymodels import make_pixel_model  # noqa: E402

DATA = Path(__file__).parent / "data"
TOKEN = "test-token"
PASSPHRASE = "correct horse battery staple, web edition"


def make_client(pixel_model, max_upload: int = web.DEFAULT_MAX_UPLOAD,
                **options) -> TestClient:
    settings = web.Settings(model=str(pixel_model), options=Options.of(steps=2, **options),
                            max_upload=max_upload)
    return TestClient(web.create_app(settings, token=TOKEN), base_url="http://127.0.0.1:8765")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    model = make_pixel_model(tmp_path_factory.mktemp("web-model") / "tiny")
    with make_client(model) as c:
        yield c


H = {"X-Faceveil-Token": TOKEN}


def upload(client, path: str, data: bytes, name: str = "photo.jpg"):
    return client.post(path, content=data, headers={**H, "X-Faceveil-Name": name,
                                                      "Content-Type": "application/octet-stream"})


def key_file_spec(data: bytes) -> dict:
    return {"key_file": base64.b64encode(data).decode()}


def wait(client, job: str, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = client.get(f"/api/jobs/{job}", headers=H).json()
        if status["state"] in ("done", "error"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not finish in {timeout} s")


def run_job(client, path: str, body: dict) -> tuple[dict, str]:
    r = client.post(path, json=body, headers=H)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    return wait(client, job), job


@pytest.fixture(scope="module")
def obama(client):
    """obama.jpg uploaded once: (photo JSON, decoded pixels)."""
    data = (DATA / "obama.jpg").read_bytes()
    r = upload(client, "/api/photos", data, "obama.jpg")
    assert r.status_code == 200, r.text
    return r.json(), images.load_image(data).pixels


@pytest.fixture(scope="module")
def key_bytes() -> bytes:
    return keys.new_key_file()


@pytest.fixture(scope="module")
def anonymized(client, obama, key_bytes):
    """obama.jpg anonymized with a key file, with a sidecar: (status, png, sidecar)."""
    photo, _ = obama
    status, job = run_job(client, "/api/anonymize", {"photo": photo["id"],
                                                     "key": key_file_spec(key_bytes),
                                                     "sidecar": True})
    assert status["state"] == "done", status
    png = client.get(f"/api/jobs/{job}/output", headers=H)
    sidecar = client.get(f"/api/jobs/{job}/sidecar", headers=H)
    assert png.status_code == sidecar.status_code == 200
    return status, png.content, sidecar.content


def recover_job(client, png: bytes, key: dict, sidecar: str | None = None) -> tuple[dict, str]:
    r = upload(client, "/api/files", png, "obama.anon.png")
    assert r.status_code == 200, r.text
    return run_job(client, "/api/recover", {"file": r.json()["id"], "key": key,
                                            "sidecar": sidecar})


# ---------------------------------------------------------------------------
# The page and who may call the API
# ---------------------------------------------------------------------------


def test_page_carries_the_token_and_fetches_nothing_from_elsewhere(client):
    r = client.get("/")
    assert r.status_code == 200
    assert f'content="{TOKEN}"' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in r.headers
    static = Path(web.__file__).parent / "static"
    for name in ("index.html", "app.js", "style.css"):
        served = client.get("/" if name == "index.html" else f"/static/{name}")
        assert served.status_code == 200
        text = (static / name).read_text()
        # Nothing from the internet: no absolute URL, no protocol-relative one.
        assert "http:" not in text and "https:" not in text and '"//' not in text, name
        assert "@import" not in text and "<iframe" not in text


def test_api_needs_the_page_token(client):
    assert client.post("/api/keygen").status_code == 403
    r = client.post("/api/keygen", headers={"X-Faceveil-Token": "guess"})
    assert r.status_code == 403 and r.json()["error"]["kind"] == "forbidden"
    assert client.get("/api/jobs/whatever").status_code == 403
    r = client.post("/api/keygen", headers=H)
    assert r.status_code == 200
    assert len(keys.parse_key_file(r.content)) == keys.KEY_BYTES
    assert client.post("/api/keygen", headers=H).content != r.content


def test_other_hosts_and_cross_site_requests_are_refused(client):
    # DNS rebinding: a foreign name that resolves to 127.0.0.1 must not reach the page.
    r = client.get("/", headers={"Host": "evil.example:8765"})
    assert r.status_code == 421 and TOKEN not in r.text
    assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    r = client.post("/api/keygen", headers={**H, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    # Another page's Origin (or a sandboxed one's "null"), even with the token, is refused;
    # the page's own Origin is not.
    for origin in ("https://evil.example", "null", "http://127.0.0.1:1", "http://127.0.0.1"):
        r = client.post("/api/keygen", headers={**H, "Origin": origin})
        assert r.status_code == 403, origin
    r = client.post("/api/keygen", headers={**H, "Origin": "http://127.0.0.1:8765"})
    assert r.status_code == 200
    # No CORS: a preflight gets no permission, so other sites cannot send the header.
    r = client.options("/api/photos", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-faceveil-token"})
    assert "access-control-allow-origin" not in r.headers
    assert r.status_code >= 400


# ---------------------------------------------------------------------------
# Anonymize and recover
# ---------------------------------------------------------------------------


def test_detection_and_the_decoded_photo(client, obama):
    photo, pixels = obama
    assert photo["name"] == "obama.jpg"
    assert (photo["width"], photo["height"]) == (pixels.shape[1], pixels.shape[0])
    assert len(photo["faces"]) == 1
    face = photo["faces"][0]
    assert face["index"] == 0 and face["source"] == "centerface" and face["score"] > 0.5
    x, y, w, h = face["box"]
    assert 0 <= x < pixels.shape[1] and 0 <= y < pixels.shape[0] and w > 40 and h > 40
    # The page draws the boxes on the server's decoding of the photo.
    r = client.get(f"/api/photos/{photo['id']}/image", headers=H)
    assert r.headers["content-type"] == "image/png"
    assert np.array_equal(images.load_image(r.content).pixels, pixels)


def test_anonymize_then_recover_round_trip(client, obama, anonymized, key_bytes):
    photo, original = obama
    status, png, sidecar = anonymized
    assert status["result"]["faces"] == 1 and status["fraction"] == 1.0
    assert status["seconds"] > 0 and status["has_sidecar"]
    record = png_records.from_png_bytes(png)
    assert record is not None and png_records.loads(sidecar) == record
    assert record.sampler.steps == 2 and record.key.type == "file"
    anon = images.load_image(png).pixels
    x, y, w, h = photo["faces"][0]["box"]
    face = np.s_[y:y + h, x:x + w]
    assert not np.array_equal(anon[face], original[face])
    outside = np.ones(original.shape[:2], bool)
    outside[max(0, y - h):y + 2 * h, max(0, x - w):x + 2 * w] = False
    assert np.array_equal(anon[outside], original[outside])

    r = upload(client, "/api/files", png, "obama.anon.png")
    info = r.json()
    assert info["record"]["faces"] == 1 and info["record"]["key_type"] == "file"
    status, job = run_job(client, "/api/recover", {"file": info["id"],
                                                   "key": key_file_spec(key_bytes)})
    assert status["state"] == "done", status
    back = images.load_image(client.get(f"/api/jobs/{job}/output", headers=H).content).pixels
    # The page recovers exactly what the API (and so the command line) recovers: the
    # 32 px model's crop of a 128 px face, hence the modest PSNR.
    expected = api.recover(png, keys.KeySource.from_key_file_bytes(key_bytes)).pixels
    assert np.array_equal(back, expected)
    assert psnr(back[face], original[face]) > psnr(anon[face], original[face]) + 3
    assert np.array_equal(back[outside], original[outside])
    # Forgotten on request: the output is gone.
    assert client.delete(f"/api/jobs/{job}", headers=H).status_code == 204
    assert client.get(f"/api/jobs/{job}/output", headers=H).status_code == 404


def test_excluded_faces_and_drawn_boxes(client, obama, key_bytes):
    photo, original = obama
    x, y, w, h = photo["faces"][0]["box"]
    box = [5, 5, 60, 60]  # a "missed face" drawn by hand, away from the detected one
    status, job = run_job(client, "/api/anonymize", {
        "photo": photo["id"], "exclude": [0], "boxes": [box], "key": key_file_spec(key_bytes)})
    assert status["state"] == "done", status
    result = status["result"]
    assert result["faces"] == 1 and result["excluded"] == [0]
    assert result["anonymized"][0]["source"] == "box"
    assert result["anonymized"][0]["index"] == 1  # numbered after the detections
    anon = images.load_image(client.get(f"/api/jobs/{job}/output", headers=H).content).pixels
    assert np.array_equal(anon[y:y + h, x:x + w], original[y:y + h, x:x + w])  # left alone
    assert not np.array_equal(anon[5:65, 5:65], original[5:65, 5:65])
    assert png_records.from_png_bytes(anon_png := client.get(
        f"/api/jobs/{job}/output", headers=H).content).body["faces"][0]["box"] == box
    assert anon_png


def test_low_score_candidates_are_listed_and_can_be_added(pixel_model, obama, key_bytes):
    _, original = obama
    with make_client(pixel_model, threshold=0.97) as c:  # obama's face scores about 0.9
        photo = upload(c, "/api/photos", (DATA / "obama.jpg").read_bytes()).json()
        assert photo["faces"] == []
        (candidate,) = photo["candidates"]
        assert 0.485 <= candidate["score"] < 0.97 and "below the threshold" in candidate["reason"]
        # The page adds a ticked candidate as a drawn box.
        status, job = run_job(c, "/api/anonymize", {"photo": photo["id"],
                                                    "boxes": [candidate["box"]],
                                                    "key": key_file_spec(key_bytes)})
        assert status["state"] == "done" and status["result"]["faces"] == 1
        x, y, w, h = candidate["box"]
        anon = images.load_image(c.get(f"/api/jobs/{job}/output", headers=H).content).pixels
        assert not np.array_equal(anon[y:y + h, x:x + w], original[y:y + h, x:x + w])


def test_passphrase_round_trip_and_nothing_secret_logged(client, obama, caplog):
    photo, original = obama
    caplog.set_level(logging.DEBUG)
    status, job = run_job(client, "/api/anonymize", {"photo": photo["id"],
                                                     "key": {"passphrase": PASSPHRASE}})
    assert status["state"] == "done"
    png = client.get(f"/api/jobs/{job}/output", headers=H).content
    assert png_records.from_png_bytes(png).key.type == "passphrase"
    status, _ = recover_job(client, png, {"passphrase": PASSPHRASE})
    assert status["state"] == "done"
    status, _ = recover_job(client, png, {"passphrase": PASSPHRASE + "!"})
    assert status["error"]["kind"] == "wrong-key" and status["error"]["code"] == 3
    assert PASSPHRASE not in caplog.text
    assert PASSPHRASE not in json.dumps(status)


def test_recipients_and_identity_round_trip(client, obama):
    """The page's API anonymizes to a public key and recovers with its identity."""
    from faceveil.recipients import new_identity

    photo, original = obama
    identity, public = new_identity()
    status, job = run_job(client, "/api/anonymize", {"photo": photo["id"],
                                                     "key": {"recipients": [public]}})
    assert status["state"] == "done", status
    png = client.get(f"/api/jobs/{job}/output", headers=H).content
    assert png_records.from_png_bytes(png).key.type == "age"
    spec = {"identity": base64.b64encode(identity.encode()).decode()}
    status, job = recover_job(client, png, spec)
    assert status["state"] == "done", status
    back = images.load_image(client.get(f"/api/jobs/{job}/output", headers=H).content)
    assert np.array_equal(back.pixels, original)
    other = {"identity": base64.b64encode(new_identity()[0].encode()).decode()}
    status, _ = recover_job(client, png, other)
    assert status["error"]["kind"] == "wrong-key" and status["error"]["code"] == 3
    r = client.post("/api/anonymize", json={"photo": photo["id"],
                                            "key": {"recipients": ["age1nope"]}}, headers=H)
    assert r.status_code == 400 and r.json()["error"]["code"] == 2


# ---------------------------------------------------------------------------
# Errors, as the command line's exit statuses
# ---------------------------------------------------------------------------


def test_wrong_key_is_exit_3(client, anonymized):
    _, png, _ = anonymized
    status, _ = recover_job(client, png, key_file_spec(keys.new_key_file()))
    assert status["state"] == "error"
    assert status["error"]["kind"] == "wrong-key" and status["error"]["code"] == 3
    assert "wrong key" in status["error"]["message"]
    # A passphrase for a file made with a key file is a wrong key too.
    status, _ = recover_job(client, png, {"passphrase": "x"})
    assert status["error"]["code"] == 3 and "key file" in status["error"]["message"]


def move_face(record: dict) -> None:
    record["faces"][0]["box"][0] += 3


def test_tampered_file_is_exit_4(client, anonymized, key_bytes):
    _, png, _ = anonymized
    loaded = images.load_image(png)
    record = png_records.from_text_chunks(loaded.text)
    stored = rewrite(record, move_face)  # move the face: the digest and MAC no longer match
    stored["digest"] = record.digest  # the digest as it was
    tampered = images.encode_image(loaded.pixels, "PNG",
                                   text={png_records.CHUNK_KEYWORD: json.dumps(stored)})
    r = upload(client, "/api/files", tampered, "tampered.png")
    # The record's own digest catches it as soon as the file is read, key or not.
    assert r.status_code == 422
    assert r.json()["error"]["kind"] == "metadata" and r.json()["error"]["code"] == 4


def test_modified_record_with_valid_digest_is_exit_4(client, anonymized, key_bytes):
    _, png, _ = anonymized
    loaded = images.load_image(png)
    stored = rewrite(png_records.from_text_chunks(loaded.text), move_face)  # digest made right
    forged = images.encode_image(loaded.pixels, "PNG",
                                 text={png_records.CHUNK_KEYWORD: json.dumps(stored)})
    status, _ = recover_job(client, forged, key_file_spec(key_bytes))
    assert status["error"]["kind"] == "metadata" and status["error"]["code"] == 4


def test_stripped_metadata_needs_the_sidecar(client, anonymized, key_bytes):
    _, png, sidecar = anonymized
    plain = images.encode_image(images.load_image(png).pixels, "PNG")
    r = upload(client, "/api/files", plain, "stripped.png")
    assert r.status_code == 200 and r.json()["record"] is None
    r2 = client.post("/api/recover", json={"file": r.json()["id"],
                                           "key": key_file_spec(key_bytes)}, headers=H)
    assert r2.status_code == 422 and r2.json()["error"]["code"] == 4
    assert "sidecar" in r2.json()["error"]["message"]
    status, _ = run_job(client, "/api/recover", {"file": r.json()["id"],
                                                 "key": key_file_spec(key_bytes),
                                                 "sidecar": sidecar.decode()})
    assert status["state"] == "done", status
    r3 = client.post("/api/recover", json={"file": r.json()["id"], "sidecar": "{not json",
                                           "key": key_file_spec(key_bytes)}, headers=H)
    assert r3.status_code == 422 and r3.json()["error"]["kind"] == "metadata"


def test_missing_model_is_exit_5(client, tmp_path, key_bytes):
    folder = make_pixel_model(tmp_path / "gone", seed=3)
    face = np.asarray(Image.open(DATA / "obama.jpg").convert("RGB").resize((32, 32)))
    key = keys.KeySource.from_key_file_bytes(key_bytes)
    diffusion = api.anonymize(face, key, model=str(folder),
                              options=Options.of(aligned=True, steps=2, lossless=False))
    sealed = api.anonymize(face, key, model=str(folder), options=Options.of(aligned=True, steps=2))
    shutil.rmtree(folder)
    backends.cached_torch.cache_clear()  # the server would still hold it otherwise
    status, _ = recover_job(client, diffusion.png_bytes(), key_file_spec(key_bytes))
    assert status["error"]["kind"] == "model" and status["error"]["code"] == 5
    # Sealed originals (the default) come back without the model.
    status, job = recover_job(client, sealed.png_bytes(), key_file_spec(key_bytes))
    assert status["state"] == "done", status
    out = client.get(f"/api/jobs/{job}/output", headers=H).content
    assert np.array_equal(images.load_image(out).pixels, face)


def test_no_face_is_exit_6(client, key_bytes):
    blank = images.encode_image(np.full((64, 96, 3), 128, np.uint8), "PNG")
    photo = upload(client, "/api/photos", blank, "wall.png").json()
    assert photo["faces"] == [] and photo["candidates"] == []
    r = client.post("/api/anonymize", json={"photo": photo["id"],
                                            "key": key_file_spec(key_bytes)}, headers=H)
    assert r.status_code == 422
    assert r.json()["error"] == {"kind": "no-face", "code": 6, "message": r.json()["error"][
        "message"]} and "no face" in r.json()["error"]["message"]


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"hello, this is not an image", "not an image"),
    ((DATA / "obama.jpg").read_bytes()[:3000], "truncated"),
])
def test_uploads_that_are_not_images(client, data, words):
    for path in ("/api/photos", "/api/files"):
        r = upload(client, path, data, "x.jpg")
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["kind"] == "bad-input" and error["code"] == 1
        assert words in error["message"]


def test_oversized_uploads_are_refused(pixel_model):
    data = (DATA / "group.jpg").read_bytes()
    with make_client(pixel_model, max_upload=len(data) - 1) as c:
        for path in ("/api/photos", "/api/files"):
            r = upload(c, path, data)
            assert r.status_code == 413
            assert r.json()["error"]["kind"] == "too-large"
        # A body streamed without a Content-Length is cut off at the limit too.
        r = c.post("/api/photos", content=iter([data[:40_000], data[40_000:]]), headers=H)
        assert r.status_code == 413
        assert upload(c, "/api/photos", data[: len(data) // 2]).status_code == 400  # fits
        big_json = json.dumps({"photo": "x" * len(data)})
        r = c.post("/api/anonymize", content=big_json, headers=H)
        assert r.status_code == 413


def test_decompression_bombs_are_refused(client):
    bomb = io.BytesIO()
    Image.new("L", (9000, 8000)).save(bomb, "PNG")  # 72 MP, a few hundred kB
    r = upload(client, "/api/photos", bomb.getvalue(), "bomb.png")
    assert r.status_code == 400 and "decompression bomb" in r.json()["error"]["message"]


def test_missing_and_malformed_fields(client, obama, key_bytes):
    photo, _ = obama
    key = key_file_spec(key_bytes)

    def post(body, raw=None):
        r = client.post("/api/anonymize", content=raw if raw is not None else json.dumps(body),
                        headers=H)
        return r.status_code, r.json()["error"]

    assert post(None, b"{nope")[0] == 400
    assert post(None, b"[1, 2]")[0] == 400
    status, error = post({"key": key})
    assert status == 400 and "'photo'" in error["message"]
    status, error = post({"photo": "no-such-id", "key": key})
    assert status == 404 and error["kind"] == "expired"
    status, error = post({"photo": photo["id"]})
    assert status == 400 and error["kind"] == "bad-key" and "no key" in error["message"]
    status, error = post({"photo": photo["id"], "key": {"passphrase": ""}})
    assert error["kind"] == "bad-key" and "empty" in error["message"]
    secret_text = "faceveil-key-v1\n" + "ab" * 31 + "\n"  # one byte short
    status, error = post({"photo": photo["id"], "key": key_file_spec(secret_text.encode())})
    assert status == 400 and error["kind"] == "bad-key"
    assert "ab" * 31 not in error["message"]  # never echo what a key file holds
    status, error = post({"photo": photo["id"], "key": {"key_file": "%%% not base64"}})
    assert error["kind"] == "bad-key"
    status, error = post({"photo": photo["id"], "key": key, "exclude": [7]})
    assert status == 400 and "face 7" in error["message"]
    status, error = post({"photo": photo["id"], "key": key, "exclude": "0"})
    assert status == 400
    for boxes in ([[1, 2, 3]], [[0, 0, 0, 10]], [[5000, 5, 10, 10]], [["1", 2, 3, 4]], "no"):
        status, error = post({"photo": photo["id"], "key": key, "boxes": boxes})
        assert status == 400, boxes
    r = client.post("/api/recover", json={"key": key}, headers=H)
    assert r.status_code == 400 and "'file'" in r.json()["error"]["message"]


def test_concurrent_jobs_do_not_mix(client, obama):
    """Two people's photos and keys, submitted together: each output is its own photo
    under its own key."""
    photo_a, pixels_a = obama
    data_b = (DATA / "obama2.jpg").read_bytes()
    photo_b = upload(client, "/api/photos", data_b, "obama2.jpg").json()
    pixels_b = images.load_image(data_b).pixels
    key_a, key_b = keys.new_key_file(), keys.new_key_file()
    jobs = []
    for photo, key in ((photo_a, key_a), (photo_b, key_b)):
        r = client.post("/api/anonymize", json={"photo": photo["id"],
                                                "key": key_file_spec(key)}, headers=H)
        jobs.append(r.json()["job"])
    queued = client.get(f"/api/jobs/{jobs[1]}", headers=H).json()
    assert queued["state"] in ("queued", "running", "done")
    outputs = []
    for job in jobs:
        assert wait(client, job)["state"] == "done"
        outputs.append(client.get(f"/api/jobs/{job}/output", headers=H).content)
    for png, pixels, mine, other in ((outputs[0], pixels_a, key_a, key_b),
                                     (outputs[1], pixels_b, key_b, key_a)):
        anon = images.load_image(png).pixels
        assert anon.shape == pixels.shape
        assert (anon == pixels).mean() > 0.8  # its own photo, but for the face
        assert recover_job(client, png, key_file_spec(mine))[0]["state"] == "done"
        assert recover_job(client, png, key_file_spec(other))[0]["error"]["code"] == 3


def test_forgetting_a_photo(client):
    data = images.encode_image(np.full((40, 40, 3), 200, np.uint8), "PNG")
    photo = upload(client, "/api/photos", data, "x.png").json()
    assert client.get(f"/api/photos/{photo['id']}/image", headers=H).status_code == 200
    assert client.delete(f"/api/photos/{photo['id']}", headers=H).status_code == 204
    r = client.get(f"/api/photos/{photo['id']}/image", headers=H)
    assert r.status_code == 404 and "add it again" in r.json()["error"]["message"]


# ---------------------------------------------------------------------------
# The store, the log, the command
# ---------------------------------------------------------------------------


def test_store_expires_bounds_memory_and_keeps_running_jobs():
    now = [0.0]
    store = web.Store(max_bytes=100, keep_seconds=60, clock=lambda: now[0])
    a = store.add("a", 40)
    b = store.add("b", 40)
    assert store.get(a, str, "photo") == "a"  # a is now the most recently used
    c = store.add("c", 40)  # over the bound: b, the least recently used, goes
    assert store.get(c, str, "photo") == "c"
    with pytest.raises(web.HttpProblem) as e:
        store.get(b, str, "photo")
    assert e.value.status == 404
    job = store.add("job", 90, pinned=True)
    with pytest.raises(web.HttpProblem) as e:  # a running job is never dropped
        store.add("d", 20)
    assert e.value.status == 503
    assert store.get(job, str, "job") == "job"
    store.update(job, size=10, pinned=False)
    now[0] += 61
    with pytest.raises(web.HttpProblem):
        store.get(job, str, "job")
    assert store.total == 0
    ids = {store.add("x", 1) for _ in range(50)}
    assert len(ids) == 50 and all(len(i) >= 32 for i in ids)  # random, unguessable
    with pytest.raises(web.HttpProblem):
        store.get(next(iter(ids)), int, "job")  # ids are typed: a photo is not a job


def test_access_log_hides_ids():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/jobs/AbC_123-x/output", "1.1", 200),
                               None)
    assert protocol.RedactIds().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /api/jobs/<id>/output HTTP/1.1" 200'


def test_hosts():
    assert command.is_loopback("127.0.0.1") and command.is_loopback("::1")
    assert command.is_loopback("localhost") and command.is_loopback("127.0.0.2")
    assert not command.is_loopback("0.0.0.0") and not command.is_loopback("192.168.1.2")
    assert "127.0.0.1" in command.allowed_hosts("127.0.0.1")
    assert "[::1]" in command.allowed_hosts("::1")
    assert "*" not in command.allowed_hosts("0.0.0.0")
    assert "10.0.0.5" in command.allowed_hosts("10.0.0.5")


def test_serve_warns_off_loopback_and_reports_a_busy_port():
    import socket

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(command.serve_command,
                                    ["--host", "0.0.0.0", "--port", str(port)])
    assert result.exit_code == 1
    assert "WARNING: --host 0.0.0.0" in result.output
    assert f"cannot listen on 0.0.0.0:{port}" in result.output and "--port" in result.output


def test_serve_without_the_web_extra_says_what_to_install():
    code = ("import sys; sys.modules['uvicorn'] = None\n"
            "from faceveil.cli import main\n"
            "main(['serve'], prog_name='faceveil')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1
    assert "pip install 'faceveil[web]'" in p.stderr
    assert "Traceback" not in p.stderr
