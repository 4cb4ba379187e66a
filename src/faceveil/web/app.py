"""The web page's server: a Starlette application over :mod:`faceveil.api`.

Privacy. Photos, keys and results live in this process's memory only: uploads are
read into memory (never spooled to a temporary file), decoded by
:func:`faceveil.images.load_image` like the command line's inputs, and kept in a
:class:`Store` under random, unguessable ids that expire and fit a memory bound. A key
(a key file's contents or a passphrase) arrives in a JSON body, is parsed in memory
(:func:`faceveil.keys.parse_key_file`), lives as long as the one job it was sent for,
and is never stored, logged or sent back. Nothing is ever written to disk.

Who may call. Every ``/api/`` request must carry the page's token (a random value made
at start-up and written into the page) in the ``X-Faceveil-Token`` header: a page of
another site cannot read it, nor send a custom header without a CORS preflight, which
this server never allows (it sends no CORS headers). Requests whose ``Host`` is not this
server's name are refused (a DNS-rebinding site would otherwise be "same-origin"), as
are requests a browser marks ``Sec-Fetch-Site: cross-site`` or sends with an ``Origin``
other than this server. Responses forbid framing,
caching, sniffing and any resource not from this server (Content-Security-Policy).

Work. Detection runs in one worker thread and the model in another, off the event
loop: one model per process (:func:`faceveil.api.get_model` caches it), one model job
at a time (a 2-core machine gains nothing from two), the others queued. The page polls
``GET /api/jobs/ID`` for the progress of a job.

The HTTP API (what the page's script calls):

==============================  =====================================================
``POST /api/photos``            raw image bytes (header ``X-Faceveil-Name``: its
                                URL-encoded name) -> decoded, faces detected: ``id``,
                                ``faces``, ``candidates`` (low scores), ``skipped``
``GET /api/photos/ID/image``    the photo as the server decoded it (PNG)
``POST /api/anonymize``         JSON ``{photo, exclude, boxes, key, sidecar}`` -> 202
                                ``{job}``
``POST /api/files``             raw bytes of an anonymized file -> ``id`` and what its
                                public record says (``record``: null when it has none)
``POST /api/recover``           JSON ``{file, key, sidecar}`` -> 202 ``{job}``
``GET /api/jobs/ID``            state, progress, seconds, result summary or error
``GET /api/jobs/ID/output``     the anonymized or recovered PNG
``GET /api/jobs/ID/sidecar``    the anonymized file's metadata, when it was asked for
``POST /api/keygen``            the contents of a new key file
``DELETE /api/{photos,files,jobs}/ID``  forget it now (a running job is stopped)
==============================  =====================================================

``key`` is ``{"key_file": BASE64}`` (the file's bytes) or ``{"passphrase": TEXT}``.
Errors are JSON ``{"error": {"kind", "code", "message"}}`` where ``code`` is the exit
status the command line gives for the same problem (1 bad input or key, 3 wrong key, 4
missing/corrupt/modified metadata, 5 model, 6 no face, 70 a bug) and ``kind`` names it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import api, batch, images
from ..errors import (
    MetadataError,
    NoFaceError,
)
from ..format import png
from ..keys import short_passphrase
from ..options import Options, plan_recovery
from .protocol import (
    DEFAULT_MAX_UPLOAD,
    LOOPBACK_HOSTS,
    MAX_REQUESTS,
    Guard,
    HttpProblem,
    Limit,
    boxes_of,
    check_fits,
    endpoint,
    error_info,
    field_of,
    indices_of,
    key_from,
    png_response,
    read_body,
    read_json,
    record_summary,
    upload_name,
)
from .store import (
    DEFAULT_KEEP_SECONDS,
    DEFAULT_MAX_MEMORY,
    AnonymizedFile,
    Job,
    JobCancelled,
    Photo,
    Store,
)

DOWNLOAD = Path("faceveil.png")  # the name results are made under: a PNG, sent as bytes

log = logging.getLogger("faceveil.web")


@dataclass
class Settings:
    """What ``faceveil serve`` was started with."""

    model: str | None = None
    options: Options = field(default_factory=Options)  # sampling, detection, runtime
    max_upload: int = DEFAULT_MAX_UPLOAD  # bytes of one upload (and of one JSON body)
    max_memory: int = DEFAULT_MAX_MEMORY  # bytes the store may hold
    keep_seconds: float = DEFAULT_KEEP_SECONDS  # unused entries are forgotten after this
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # Host names (and the address called)
    max_requests: int = MAX_REQUESTS  # requests in progress at once (not connections)


class WebApp:
    """The handlers and the state they share (the store, the worker threads, the model)."""

    def __init__(self, settings: Settings, token: str | None = None) -> None:
        self.settings = settings
        self.token = token or secrets.token_urlsafe(32)
        self.backbone = api.get_model(settings.model, options=settings.options)
        self.store = Store(settings.max_memory, settings.keep_seconds)
        self.detect_pool = ThreadPoolExecutor(1, thread_name_prefix="faceveil-detect")
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="faceveil-model")
        page = resources.files(__package__).joinpath("static", "index.html").read_text("utf-8")
        self.page = (page.replace("__TOKEN__", self.token)
                     .replace("__MAX_UPLOAD__", str(settings.max_upload))
                     .replace("__STEPS__", str(settings.options.sampler.steps)))

    # -- plumbing --

    async def _in(self, pool: ThreadPoolExecutor, func, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    def _submit(self, job: Job, work) -> str:
        """Queue ``work`` (returns summary, output, sidecar) on the model thread."""
        job_id = self.store.add(job, 0, pinned=True)
        self.model_pool.submit(self._run, job_id, job, work)
        return job_id

    def _run(self, job_id: str, job: Job, work) -> None:
        t0 = time.monotonic()
        job.started, job.state = t0, "running"
        try:
            if job.cancelled:
                raise JobCancelled()
            job.summary, job.output, job.sidecar = work()
            job.state = "done"
            log.info("%s: %d face(s) in %.1f s", job.kind, job.summary.get("faces", 0),
                     time.monotonic() - t0)
        except JobCancelled:
            job.state, job.error = "error", {"kind": "cancelled", "code": 1,
                                             "message": "stopped"}
        except Exception as e:
            job.state, job.error = "error", error_info(e)[1]
        finally:
            job.finished = time.monotonic()
            self.store.update(job_id, size=job.size, pinned=False)

    def shutdown(self) -> None:
        """Stop queued and running jobs (at the end of ``faceveil serve``)."""
        for value in self.store.values():
            if isinstance(value, Job):
                value.cancelled = True
        self.model_pool.shutdown(wait=False, cancel_futures=True)
        self.detect_pool.shutdown(wait=False, cancel_futures=True)

    # -- pages --

    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.page)

    # -- anonymize --

    @endpoint
    async def add_photo(self, request: Request) -> Response:
        data = await read_body(request, self.settings.max_upload)
        check_fits(data, self.settings.max_memory)
        name = upload_name(request)
        options = self.settings.options

        def work():
            loaded = images.load_image(data)
            regions, skipped = api.find_regions(loaded.pixels, options=options,
                                                model=self.backbone)
            return loaded, regions, skipped

        loaded, regions, skipped = await self._in(self.detect_pool, work)
        detections = len(regions) + sum("index" in x for x in skipped)
        size = loaded.pixels.nbytes + sum(len(v) for v in loaded.metadata.values())
        photo_id = self.store.add(Photo(name, loaded, regions, skipped, detections), size)
        height, width = loaded.pixels.shape[:2]
        return JSONResponse({
            "id": photo_id, "name": name, "width": width, "height": height,
            "faces": [batch.face_json(r.index, r) for r in regions],
            "candidates": [{"box": x["box"], "score": x["score"], "reason": x["reason"]}
                           for x in skipped if x.get("kind") == "low-score"],
            "skipped": [x for x in skipped if x.get("kind") != "low-score"],
            "notes": loaded.notes + api.resolution_notes(regions, self.backbone),
            "metadata": sorted(loaded.metadata),
        })

    @endpoint
    async def photo_image(self, request: Request) -> Response:
        photo = self.store.get(request.path_params["id"], Photo, "photo")
        return png_response(await self._in(self.detect_pool, images.encode_image,
                                           photo.loaded.pixels, "PNG"))

    @endpoint
    async def anonymize(self, request: Request) -> Response:
        data = await read_json(request, self.settings.max_upload)
        photo = self.store.get(field_of(data, "photo", str, "the photo's id"), Photo, "photo")
        height, width = photo.loaded.pixels.shape[:2]
        excluded = indices_of(data.get("exclude", []), {r.index for r in photo.regions})
        boxes = boxes_of(data.get("boxes", []), width, height)
        key = key_from(data)
        kept = [r for r in photo.regions if r.index not in excluded]
        if not kept and not boxes:
            raise NoFaceError("no face to anonymize: every face is switched off; switch one "
                              "on, or draw a box around a face")
        sidecar = bool(data.get("sidecar"))
        options, backbone = self.settings.options, self.backbone
        job = Job("anonymize", photo.name, phases=options.sampler.passes)

        def work():
            # Boxes are numbered after the detections, as `anonymize --box` numbers them.
            regions = kept + [api.box_region(photo.loaded.pixels, b, model=backbone,
                                             index=photo.detections + k)
                              for k, b in enumerate(boxes)]
            job.phases = options.sampler.passes * -(-len(regions)
                                                    // options.runtime.batch_size)
            result = api.anonymize(photo.loaded, key, options=options, model=backbone,
                                   regions=regions, progress=job.progress)
            # What the command line would write, as bytes (the page's downloads).
            written = api.anonymized_outputs(result, DOWNLOAD,
                                             dataclasses.replace(options.output,
                                                                 sidecar=sidecar))
            weak = short_passphrase(key)
            summary = {"faces": written.faces,
                       "notes": ([weak] if weak else []) + written.notes,
                       "anonymized": [batch.face_json(r.index, r) for r in result.regions],
                       "excluded": sorted(excluded)}
            data = [blob for _, blob in written.files]
            return summary, data[0], data[1] if sidecar else None

        return JSONResponse({"job": self._submit(job, work)}, status_code=202)

    # -- recover --

    @endpoint
    async def add_file(self, request: Request) -> Response:
        data = await read_body(request, self.settings.max_upload)
        check_fits(data, self.settings.max_memory)
        name = upload_name(request)

        def work():
            loaded = images.load_image(data)
            return loaded, png.from_text_chunks(loaded.text)

        loaded, record = await self._in(self.detect_pool, work)
        size = loaded.pixels.nbytes + len(data)
        file_id = self.store.add(AnonymizedFile(name, loaded, record), size)
        height, width = loaded.pixels.shape[:2]
        return JSONResponse({"id": file_id, "name": name, "width": width, "height": height,
                             "record": None if record is None else record_summary(record)})

    @endpoint
    async def recover(self, request: Request) -> Response:
        data = await read_json(request, self.settings.max_upload)
        file = self.store.get(field_of(data, "file", str, "the file's id"), AnonymizedFile,
                              "file")
        meta = None
        if data.get("sidecar"):
            meta = png.loads(field_of(data, "sidecar", str, "the sidecar's JSON text"))
        elif file.record is None:
            raise MetadataError("this image has no faceveil metadata (was it re-encoded?): "
                                "add the sidecar JSON saved when it was anonymized")
        key = key_from(data)
        record = meta or file.record
        options = self.settings.options
        # The engine passes recovery will make, as the pipeline plans them (sealed
        # originals come back without the model).
        how = plan_recovery(record.sampler, [f.lossless is not None for f in record.faces])
        job = Job("recover", file.name,
                  phases=how.engine_passes(options.runtime.batch_size))

        def work():
            result = api.recover(file.loaded, key, meta=meta, options=options,
                                 progress=job.progress)
            written = api.recovered_outputs(result, DOWNLOAD)
            return {"faces": written.faces, "notes": written.notes}, written.files[0][1], None

        return JSONResponse({"job": self._submit(job, work)}, status_code=202)

    # -- jobs and keys --

    @endpoint
    async def job_status(self, request: Request) -> Response:
        job = self.store.get(request.path_params["id"], Job, "job")
        ahead = sum(1 for j in self.store.values() if isinstance(j, Job)
                    and j.state in ("queued", "running") and j.created < job.created)
        end = job.finished or time.monotonic()
        return JSONResponse({
            "kind": job.kind, "name": job.name, "state": job.state, "phase": job.phase,
            "step": job.step, "steps": job.steps, "fraction": round(job.fraction, 4),
            "ahead": ahead if job.state == "queued" else 0,
            "seconds": None if job.started is None else round(end - job.started, 2),
            "result": job.summary if job.state == "done" else None,
            "has_sidecar": job.sidecar is not None, "error": job.error,
        })

    @endpoint
    async def job_output(self, request: Request) -> Response:
        return png_response(self.store.get(request.path_params["id"], Job, "job").output)

    @endpoint
    async def job_sidecar(self, request: Request) -> Response:
        job = self.store.get(request.path_params["id"], Job, "job")
        if job.sidecar is None:
            raise HttpProblem(404, "expired", "no sidecar was asked for with this photo")
        return Response(job.sidecar, media_type="application/json")

    @endpoint
    async def forget(self, request: Request) -> Response:
        value = self.store.remove(request.path_params["id"])
        if isinstance(value, Job):
            value.cancelled = True
        return Response(status_code=204)

    @endpoint
    async def keygen(self, request: Request) -> Response:
        from ..keys import new_key_file

        return Response(new_key_file(), media_type="application/octet-stream")

    def routes(self) -> list:
        static = StaticFiles(packages=[("faceveil.web", "static")])
        return [
            Route("/", self.index, methods=["GET"]),
            Mount("/static", static, name="static"),
            Route("/api/photos", self.add_photo, methods=["POST"]),
            Route("/api/photos/{id}/image", self.photo_image, methods=["GET"]),
            Route("/api/anonymize", self.anonymize, methods=["POST"]),
            Route("/api/files", self.add_file, methods=["POST"]),
            Route("/api/recover", self.recover, methods=["POST"]),
            Route("/api/jobs/{id}", self.job_status, methods=["GET"]),
            Route("/api/jobs/{id}/output", self.job_output, methods=["GET"]),
            Route("/api/jobs/{id}/sidecar", self.job_sidecar, methods=["GET"]),
            Route("/api/keygen", self.keygen, methods=["POST"]),
            Route("/api/{what:str}/{id}", self.forget, methods=["DELETE"]),
        ]


def create_app(settings: Settings | None = None, *, token: str | None = None) -> Starlette:
    """The ASGI application for ``settings`` (loads the model now: a missing model is an
    error at start-up, not at the first photo). ``app.state.web`` is the :class:`WebApp`."""
    settings = settings or Settings()
    web = WebApp(settings, token)
    app = Starlette(routes=web.routes())
    app.state.web = web
    app.add_middleware(Guard, token=web.token, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(Limit, requests=settings.max_requests)  # outermost: counts all
    return app
