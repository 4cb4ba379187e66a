"""Anonymize or recover an image dataset on Ray (``pip install 'faceveil[ray]'``).

On a laptop a local Ray runs every CPU core (or GPU) in parallel; on a cluster
(``address="ray://head:10001"`` or ``"auto"``) every node takes a share. Data flow::

    driver: list DIR, plan one output per image (refusing inputs and, without force,
            existing outputs) -> a Ray Dataset of (name, path) rows
    Ray:    map_batches -> one model actor per worker (model loaded once, on its CPU
            or GPU) reads each file, runs the faceveil API, returns the output bytes
    driver: publishes each output as results stream in (pipeline.results.publish)

The driver writes every output, so the rules of the plain folder run hold unchanged:
atomic writes (never half a file, even on Ctrl-C), no input ever overwritten, existing
outputs refused without ``force`` (and a name another run takes meanwhile never
overwritten), ``skip_existing`` to resume. Workers must see DIR at the same path (a shared
file system on a cluster); outputs only need to be reachable from the driver.

Keys never travel in clear. The driver starts a key-broker actor, which makes an
ephemeral X25519 key pair; the driver seals the key material to the broker's public key
(X25519 + HKDF-SHA256 + ChaCha20-Poly1305, from ``cryptography``). Each model actor
makes its own ephemeral pair and asks the broker, which seals the material to that
actor's public key. So task arguments, results, the object store, spilled objects and
logs only ever hold public keys and ciphertext; the plaintext exists only in the memory
of the driver, the broker and the model actors, and the broker is killed when the run
ends. Ray itself is not a security boundary: anyone who can run code on the cluster's
nodes can read those processes' memory, so run on nodes you trust.

A file that fails (unreadable, no face with ``no_face="error"``, wrong key, an output
that cannot be written) is reported and the others go on. If a worker process dies (a
crash, the OOM killer), the files it held are tried once more, each on its own; a file
that kills its worker twice is reported as failed and the others are written.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import batch, images, media
from .errors import FaceveilError, InputError, NoFaceError
from .keys import KeySource
from .options import DEFAULTS, Options
from .pipeline.results import publish, resume_check

_TRANSPORT_INFO = b"faceveil/v1/ray-key-transport"
_WRITE_FAILED = "cannot write the output"
PASSPHRASE_VARIABLE = "FACEVEIL_PASSPHRASE"

Progress = Callable[[str, bool], None]
"""Called on the driver after each file with (name, ok); may raise to stop the run."""


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(
            "--ray needs Ray Data, which is not installed: pip install 'faceveil[ray]'"
        ) from None
    return ray


# ---------------------------------------------------------------------------
# Sealing key material to an ephemeral X25519 public key
# ---------------------------------------------------------------------------


def _transport_key(shared: bytes, sender: bytes, recipient: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=sender + recipient,
                info=_TRANSPORT_INFO).derive(shared)


def seal_to(recipient_public: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of the X25519 private key matching
    ``recipient_public`` can read it: ``sender_public || ciphertext || tag``."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    ephemeral = X25519PrivateKey.generate()
    sender = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = _transport_key(shared, sender, recipient_public)
    # A fresh key per message, so a fixed AEAD nonce is safe.
    return sender + ChaCha20Poly1305(key).encrypt(bytes(12), plaintext, _TRANSPORT_INFO)


def open_sealed(private_key, sealed: bytes) -> bytes:
    """Decrypt what :func:`seal_to` sealed to ``private_key``'s public key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    sender, body = sealed[:32], sealed[32:]
    recipient = private_key.public_key().public_bytes_raw()
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(sender))
    key = _transport_key(shared, sender, recipient)
    return ChaCha20Poly1305(key).decrypt(bytes(12), body, _TRANSPORT_INFO)


def _key_payload(key: KeySource) -> bytes:
    return key.kind.encode() + b"\0" + key.secret


def _key_from_payload(payload: bytes) -> KeySource:
    kind, _, secret = payload.partition(b"\0")
    return KeySource(kind.decode(), secret)


class _Receiver:
    """An ephemeral X25519 key pair whose public half is all that leaves the process."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        self._private = X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes_raw()

    def open(self, sealed: bytes) -> bytes:
        return open_sealed(self._private, sealed)


class KeyBroker:
    """Holds the key material, received sealed, and hands it out sealed (a Ray actor)."""

    def __init__(self) -> None:
        self._receiver = _Receiver()
        self._payload: bytes | None = None

    def public_key(self) -> bytes:
        return self._receiver.public

    def deposit(self, sealed: bytes) -> bool:
        self._payload = self._receiver.open(sealed)
        return True

    def request(self, recipient_public: bytes) -> bytes:
        if self._payload is None:
            raise RuntimeError("the key broker holds no key yet")
        return seal_to(recipient_public, self._payload)

    def __repr__(self) -> str:  # Ray may print actors: never the payload
        return "KeyBroker(<sealed>)"


# ---------------------------------------------------------------------------
# The model actor (one per worker)
# ---------------------------------------------------------------------------


class Worker:
    """Runs the faceveil API on the files of each batch; loads the model once.

    Constructed by Ray Data on a worker with the broker's handle (never the key) and
    the job's options; returns, per file, the output bytes or the reason it failed.
    """

    def __init__(self, broker, job: dict) -> None:
        import ray

        receiver = _Receiver()
        self._key = _key_from_payload(receiver.open(ray.get(broker.request.remote(
            receiver.public))))
        self.job = job
        self.model, self.error = job["model"], None
        import torch

        from . import api

        if job.get("threads"):
            torch.set_num_threads(int(job["threads"]))
        # A worker that cannot start fails each of its files with the reason (an actor
        # that raised here would make Ray stop the whole run with a traceback).
        if job["device"] == "cuda" and not torch.cuda.is_available():
            self.error = "this Ray worker has no CUDA device (--device cuda)"
        elif job["op"] == "anonymize":  # recovery loads the model each file names
            try:
                self.model = api.get_model(job["model"], job["device"])
            except FaceveilError as e:
                self.error = str(e)
        self.options = job["options"].replace(device=job["device"])

    def __repr__(self) -> str:
        return "faceveil.scale.Worker(<key hidden>)"

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out: dict[str, list] = {"name": [], "ok": [], "outputs": [], "error": []}
        for name, path, target in zip(batch["name"], batch["path"], batch["target"]):
            row = {"name": str(name), "ok": True, "outputs": b"", "error": ""}
            try:
                if self.error:
                    raise InputError(self.error)
                if self.job["op"] == "anonymize":
                    outputs = self._anonymize(str(path), Path(str(target)))
                else:
                    outputs = self._recover(str(path), Path(str(target)))
                # What the driver publishes: the files' bytes and what to say of them.
                row.update(outputs=pickle.dumps(outputs))
            except FaceveilError as e:
                row.update(ok=False, error=str(e))
            except Exception as e:  # a bug on one file must not stop the others
                last = traceback.extract_tb(e.__traceback__)[-1]
                row.update(ok=False, error=f"unexpected {type(e).__name__}: {e} "
                           f"({Path(last.filename).name}:{last.lineno})")
            for k, v in row.items():
                out[k].append(v)
        return {k: np.array(v, dtype=object) for k, v in out.items()}

    def _anonymize(self, path: str, target: Path):
        from . import api

        loaded = images.load_image(path)
        try:
            result = api.anonymize(loaded, self._key, options=self.options, model=self.model)
        except NoFaceError as e:
            result = e
        return api.anonymized_outputs(result, target, self.options.output, loaded)

    def _recover(self, path: str, target: Path):
        from . import api

        result = api.recover(path, self._key, options=self.options, model=self.model,
                             method=self.job["method"], deniable=self.job["deniable"])
        return api.recovered_outputs(result, target)


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


@dataclass
class Report:
    """What a dataset run did: files written (with face counts and notes) and failures."""

    done: list[tuple[str, int, list[str]]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the planner said (renamed outputs)
    seconds: float = 0.0
    workers: int = 0
    device: str = "cpu"

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def faces(self) -> int:
        return sum(n for _, n, _ in self.done)


def _plan(src: Path, dst: Path, op: str, name, protected: Sequence, options: Options,
          report: Report) -> list[tuple[str, Path, Path]]:
    """The folder's images and their outputs, by the planner of every folder run
    (:func:`faceveil.batch.plan`); an output that would overwrite a protected file fails
    that file alone."""
    if not src.is_dir():
        raise InputError(f"{str(src)!r} is not a folder: --ray processes a folder of images")
    if any(media.is_video(p) for p in batch.media_files(src)):
        raise InputError(f"{str(src)!r} holds videos, which --ray does not process; run "
                         "without --ray")
    out = options.output
    planned = batch.plan(src, dst, name, sidecar=out.sidecar, force=out.force, videos=False,
                         resume=resume_check(out, anonymized=op == "anonymize"))
    report.notes += planned.notes()
    dst.mkdir(parents=True, exist_ok=True)
    plan = []
    for item in planned.items:
        try:
            for target in item.outputs:
                media.check_output(target, [item.src, *protected], out.force)
            media.output_format(item.dst)
        except FaceveilError as e:
            report.failed.append((item.src.name, str(e)))
            continue
        plan.append((item.src.name, item.src, item.dst))
    return plan


def _connect(address: str | None, num_cpus: int | None):
    """Attach to ``address`` (a cluster), to an already running Ray, or start a local
    one; returns (ray, whether this call started it)."""
    ray = _require_ray()
    import logging

    # Ray Data logs each task a dead worker took with it as an error with a full
    # traceback; those files are retried and, if lost again, reported as failed, so its
    # log says nothing more (FACEVEIL_DEBUG=1 shows it).
    logging.getLogger("ray.data").setLevel(
        logging.WARNING if os.environ.get("FACEVEIL_DEBUG") else logging.CRITICAL)
    if ray.is_initialized():
        return ray, False

    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    kwargs: dict = dict(logging_level=logging.WARNING, log_to_driver=False,
                        runtime_env={"env_vars": env})
    try:
        with _without_passphrase():
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise InputError(f"cannot start or reach {where}: {str(e).splitlines()[0]}") from None
    return ray, True


@contextlib.contextmanager
def _without_passphrase():
    """``FACEVEIL_PASSPHRASE`` out of this process's environment while Ray starts: the
    processes of a local Ray (gcs_server, raylet, its workers) inherit it, and the key
    reaches the workers only sealed (:class:`KeyBroker`)."""
    saved = os.environ.pop(PASSPHRASE_VARIABLE, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[PASSPHRASE_VARIABLE] = saved


def _resources(ray, device: str, workers: int | None) -> tuple[str, int, dict]:
    """The device the actors use, how many actors, and each actor's Ray resources."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device == "cuda":
        if not gpus:
            raise InputError("--device cuda was asked for, but the Ray cluster has no GPU "
                             "(use --device cpu, or a cluster with GPU nodes)")
        return device, min(workers or gpus, gpus), {"num_gpus": 1, "num_cpus": 1}
    if device != "cpu":
        raise InputError(f"--device must be cpu, cuda or auto, not {device!r}")
    if not cpus:
        raise InputError("the Ray cluster has no CPU to run on")
    count = max(1, min(workers or cpus, cpus))
    return device, count, {"num_cpus": max(1, cpus // count)}


def _run(op: str, src, dst, key: KeySource, *, options: Options, name,
         protected: Sequence = (), address: str | None = None, workers: int | None = None,
         num_cpus: int | None = None, model=None, progress: Progress | None = None,
         method: str | None = None, deniable: bool = False) -> Report:
    import time

    t0 = time.perf_counter()
    _require_ray()
    from .diffusion.hub import default_model, parse_reference

    if model is None and op == "anonymize":
        model = default_model().name  # this machine's default, not each worker's
    if model is not None:
        parse_reference(model)  # fail early on a --model that names nothing
    report = Report()
    plan = _plan(Path(src), Path(dst), op, name, protected, options, report)
    if not plan:
        return report
    ray, started = _connect(address, num_cpus)
    broker = None
    try:
        device, count, per_actor = _resources(ray, options.runtime.device, workers)
        report.device, report.workers = device, count
        broker = ray.remote(num_cpus=0)(KeyBroker).remote()
        ray.get(broker.deposit.remote(seal_to(ray.get(broker.public_key.remote()),
                                              _key_payload(key))))
        job = {"op": op, "device": device, "model": model, "options": options,
               "method": method, "deniable": deniable,
               "threads": per_actor["num_cpus"] if device == "cpu" else None}
        context = ray.data.DataContext.get_current()
        context.max_errored_blocks = -1  # a lost task fails its files, not the run
        context.enable_progress_bars = False
        rows = [{"name": name, "path": str(path.resolve()), "target": str(target)}
                for name, path, target in plan]

        def run(rows: list[dict], actors: int) -> set[str]:
            """Process ``rows``, writing outputs as they come; the names Ray lost."""
            lost = {r["name"] for r in rows}
            try:
                for row in _stream(ray, rows, broker, job, actors, per_actor):
                    lost.discard(str(row["name"]))
                    ok = _write(row, report, options.output.force)
                    if progress is not None:
                        progress(str(row["name"]), ok)
            except ray.exceptions.RayError:
                pass  # what did not come back is retried or reported by the caller
            return lost

        lost = run(rows, count)
        # A worker that dies (a crash, the OOM killer) takes its files with it; each is
        # tried once more on its own, so one bad file cannot take others down twice.
        for row in [r for r in rows if r["name"] in lost]:
            if run([row], 1):
                report.failed.append((row["name"], "its Ray worker died twice on this file "
                                      "(a crash or out of memory)"))
                if progress is not None:
                    progress(row["name"], False)
    finally:
        if broker is not None:
            ray.kill(broker)
        if started:
            ray.shutdown()
    report.seconds = time.perf_counter() - t0
    return report


def _stream(ray, rows: list[dict], broker, job: dict, actors: int, per_actor: dict):
    """Run the model actors over ``rows``; yield result rows as they finish."""
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 32 * actors))
    with warnings.catch_warnings():  # Ray deprecates passing actor options this way
        warnings.simplefilter("ignore", DeprecationWarning)
        # Ray Data restarts dead actors and retries their tasks forever by default: a
        # file that kills its worker would then stop the run. Here a dead actor stays
        # dead, its files are lost (and retried by the caller), fresh actors go on.
        results = ds.map_batches(
            Worker, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
            fn_constructor_args=(broker, job), max_restarts=0, **per_actor,
        )
    stream = iter(results.iter_rows())
    try:
        yield from stream
    finally:
        stream.close()  # an interrupted run stops its Ray tasks and actors here


def _write(row: dict, report: Report, force: bool) -> bool:
    """Publish one file's outputs as the plain folder run does
    (:func:`faceveil.pipeline.results.publish`); a file that cannot be written (a full
    disk, a name another run took meanwhile) is reported and the run goes on."""
    name = str(row["name"])
    if not row["ok"]:
        report.failed.append((name, str(row["error"])))
        return False
    outputs = pickle.loads(bytes(row["outputs"]))  # noqa: S301 - our own workers' rows
    try:
        publish(outputs, replace=force)
    except FaceveilError as e:
        report.failed.append((name, str(e)))
        return False
    except OSError as e:
        report.failed.append((name, f"{_WRITE_FAILED}: {e.strerror or e}"))
        return False
    report.done.append((name, outputs.faces, outputs.notes))
    return True


def anonymize_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key: KeySource,
    *,
    options: Options | None = None,
    model: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    num_cpus: int | None = None,
    protected: Sequence[str | os.PathLike | None] = (),
    progress: Progress | None = None,
) -> Report:
    """Anonymize every image in the folder ``src`` into ``dst`` (``NAME.png``) on Ray.

    Args:
        options: the run's :class:`~faceveil.options.Options` (sampling, detection,
            protection; ``runtime.device``: "cpu", "cuda" (one GPU per worker) or
            "auto"; ``output``: sidecar, no-face policy, force).
        model: a preset, folder or hub id (each worker loads it; default: the default model).
        address: a Ray cluster (``"auto"``, ``"ray://head:10001"``); default: the Ray
            already initialized in this process, else a new local one.
        workers: model actors (default: one per GPU, or one per CPU).
        num_cpus: CPUs of a local Ray started here (default: all).
        protected: more paths no output may overwrite (a key file).
        progress: called after each file with (name, ok).

    Returns:
        a :class:`Report`; files that failed are listed in ``report.failed``.
    """
    return _run("anonymize", src, dst, key, options=options or DEFAULTS,
                name=batch.anonymized_name, protected=protected, address=address,
                workers=workers, num_cpus=num_cpus, model=model, progress=progress)


def recover_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key: KeySource,
    *,
    options: Options | None = None,
    method: str | None = None,
    deniable: bool = False,
    model: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    num_cpus: int | None = None,
    protected: Sequence[str | os.PathLike | None] = (),
    progress: Progress | None = None,
) -> Report:
    """Recover every anonymized image in ``src`` into ``dst`` under the same names, on
    Ray; the settings are those of :func:`anonymize_folder`, with the recovery
    ``method`` and ``deniable`` of :func:`faceveil.api.recover`."""
    return _run("recover", src, dst, key, options=options or DEFAULTS,
                name=batch.recovered_name, protected=protected, address=address,
                workers=workers, num_cpus=num_cpus, model=model, progress=progress,
                method=method, deniable=deniable)
