"""The web page against idle clients and foreign host names (issue 27): a real uvicorn
on loopback, bounded in time, stopping by itself."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed")
pytest.importorskip("uvicorn", reason="the web extra is not installed")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the dev extra)")

from starlette.testclient import TestClient  # noqa: E402

from faceveil.options import Options  # noqa: E402
from faceveil.web import app as web  # noqa: E402
from faceveil.web import command, server  # noqa: E402

from .tinymodels import make_pixel_model  # noqa: E402

TOKEN = "test-token"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_pixel_model(tmp_path_factory.mktemp("web-limits") / "tiny")


@pytest.fixture
def live(model, monkeypatch):
    """A real server on a free loopback port, with a 1 s read timeout; stopped after."""
    monkeypatch.setattr(server.TimedH11, "read_timeout", 1.0)
    settings = web.Settings(model=str(model), options=Options.of(steps=2))
    app = web.create_app(settings, token=TOKEN)
    sock = command.bind("127.0.0.1", 0)
    uv = server.uvicorn.Server(server.config(app, access_log=False))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not uv.started and time.monotonic() < end:
        time.sleep(0.02)
    assert uv.started
    yield sock.getsockname()[1]
    uv.should_exit = True
    thread.join(10)
    app.state.web.shutdown()
    sock.close()


def test_64_idle_connections_do_not_deny_the_page(live):
    idle = []
    try:
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", live), timeout=5)
            idle.append(s)
        s = idle[0]
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a request head never finished
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", live, timeout=5)
        conn.request("POST", "/api/keygen", headers={"X-Faceveil-Token": TOKEN})
        response = conn.getresponse()
        assert response.status == 200 and response.read().startswith(b"faceveil-key-v1")
        assert time.monotonic() - t0 < 5
        conn.close()
        # Idle connections, and one that never finishes its request head, are closed by
        # the server after its read timeout (1 s here, 5 s by default).
        for s in idle[:8]:
            s.settimeout(5)
            assert s.recv(1) == b""
    finally:
        for s in idle:
            s.close()


def test_a_stalled_upload_is_dropped(live, monkeypatch):
    """A body that stops half-way is answered 408 after the body timeout, not held."""
    from faceveil.web import protocol

    monkeypatch.setattr(protocol, "BODY_TIMEOUT", 1.0)
    with socket.create_connection(("127.0.0.1", live), timeout=10) as s:
        s.sendall(b"POST /api/photos HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"X-Faceveil-Token: " + TOKEN.encode() + b"\r\n"
                  b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
        t0 = time.monotonic()
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert time.monotonic() - t0 < 8


def test_requests_in_progress_are_limited_not_connections(model):
    """The limit counts requests: past it, 503 at once, with the page's JSON error."""
    settings = web.Settings(model=str(model), options=Options.of(steps=2), max_requests=0)
    with TestClient(web.create_app(settings, token=TOKEN),
                    base_url="http://127.0.0.1:8765") as client:
        r = client.get("/")
        assert r.status_code == 503 and r.json()["error"]["kind"] == "busy"


def test_every_interface_keeps_a_host_check(model):
    """Bound to 0.0.0.0, the page answers to the address it was called at, this
    machine's names and --allow-host names; any other name is refused (DNS rebinding)."""
    hosts = command.allowed_hosts("0.0.0.0", ("faces.lan",))
    assert socket.gethostname().lower() in hosts and "faces.lan" in hosts
    settings = web.Settings(model=str(model), options=Options.of(steps=2),
                            allowed_hosts=hosts)
    with TestClient(web.create_app(settings, token=TOKEN),
                    base_url="http://192.168.7.9:8765") as client:
        assert client.get("/").status_code == 200  # the address it was reached at
        for name in ("faces.lan", "localhost", socket.gethostname()):
            assert client.get("/", headers={"Host": f"{name}:8765"}).status_code == 200
        for name in ("evil.example", "192.168.7.10", "faces.lan.evil.example"):
            r = client.get("/", headers={"Host": f"{name}:8765"})
            assert r.status_code == 421, name


@pytest.mark.parametrize("lossless", [False, True])
def test_the_progress_bar_keeps_step_with_the_engine(model, monkeypatch, lossless):
    """The page's progress (what GET /api/jobs/ID says) at each real model call, wrapped
    around the denoiser: it rises with the work and is near its end at the last call,
    for anonymization and for recovery by diffusion (--no-lossless made the page count 3
    passes where the engine makes 2, so its bar stopped near two thirds)."""
    from faceveil.diffusion import models, onnx
    from faceveil.web.store import Job

    options = Options.of(steps=3, lossless=lossless)
    settings = web.Settings(model=str(model), options=options)
    headers = {"X-Faceveil-Token": TOKEN}
    seen: list[float] = []
    state = {"job": None}

    def watch(cls, name):
        real = getattr(cls, name)

        def wrapped(self, *args, **kwargs):
            job = state["job"]
            if job is not None:
                seen.append(job.fraction)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapped)

    for cls in (models.Backbone, onnx.OnnxBackbone):
        for name in ("predict", "predict_steps"):
            if hasattr(cls, name):
                watch(cls, name)

    def run_job(client, path, body):
        r = client.post(path, json=body, headers=headers)
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]
        state["job"] = client.app.state.web.store.get(job_id, Job, "job")
        end = time.monotonic() + 120
        while time.monotonic() < end:
            status = client.get(f"/api/jobs/{job_id}", headers=headers).json()
            if status["state"] in ("done", "error"):
                break
            time.sleep(0.02)
        assert status["state"] == "done", status
        assert status["fraction"] == 1.0
        state["job"] = None
        return job_id

    data = (Path(__file__).parent / "data" / "obama.jpg").read_bytes()
    key = {"passphrase": "correct horse battery staple"}
    with TestClient(web.create_app(settings, token=TOKEN),
                    base_url="http://127.0.0.1:8765") as client:
        r = client.post("/api/photos", content=data,
                        headers={**headers, "X-Faceveil-Name": "obama.jpg"})
        assert r.status_code == 200, r.text
        job_id = run_job(client, "/api/anonymize", {"photo": r.json()["id"], "key": key})
        checks = [("anonymize", list(seen))]
        seen.clear()
        anon = client.get(f"/api/jobs/{job_id}/output", headers=headers).content
        r = client.post("/api/files", content=anon,
                        headers={**headers, "X-Faceveil-Name": "anon.png"})
        assert r.status_code == 200, r.text
        run_job(client, "/api/recover", {"file": r.json()["id"], "key": key})
        checks.append(("recover", list(seen)))
    for what, fractions in checks:
        if what == "recover" and lossless:
            assert fractions == []  # sealed originals: no model call, nothing to count
            continue
        assert len(fractions) >= 2 * 3, (what, fractions)
        assert fractions == sorted(fractions), (what, fractions)
        # Each engine step (one or more model calls) moves the bar by one equal share: at
        # the last call, all but that last step's share is done. A miscount of the
        # engine's passes stops short (too many) or stalls at 99% early (too few).
        steps = len(set(fractions))
        assert fractions[-1] == pytest.approx(1 - 1 / steps), (what, fractions)


def test_pixels_are_checked_against_the_memory_bound_before_decoding(model, monkeypatch):
    """A photo whose header says it would not fit --max-memory-mb is refused with a
    clear message, and never decoded; one that fits is."""
    import io

    from PIL import Image

    from faceveil import images

    decoded = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda *a: decoded.append(1) or real(*a))
    buf = io.BytesIO()
    Image.new("RGB", (1000, 1000), (200, 180, 160)).save(buf, "PNG")  # 1 MP: about 12 MB
    settings = web.Settings(model=str(model), options=Options.of(steps=2),
                            max_memory=8 * 1024 * 1024)
    headers = {"X-Faceveil-Token": TOKEN, "X-Faceveil-Name": "big.png"}
    with TestClient(web.create_app(settings, token=TOKEN),
                    base_url="http://127.0.0.1:8765") as client:
        for path in ("/api/photos", "/api/files"):
            r = client.post(path, content=buf.getvalue(), headers=headers)
            assert r.status_code == 413, r.text
            message = r.json()["error"]["message"]
            assert "1000x1000 pixels" in message and "--max-memory-mb of 8 MB" in message
        assert decoded == []
        small = io.BytesIO()
        Image.new("RGB", (300, 300), (200, 180, 160)).save(small, "PNG")
        r = client.post("/api/files", content=small.getvalue(), headers=headers)
        assert r.status_code == 200 and decoded == [1]
