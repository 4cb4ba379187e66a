"""What the page holds, in memory only: uploaded photos, anonymized files and jobs,
under random ids that expire and fit a memory bound."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .. import images
from ..format.records import Record
from .protocol import MB, HttpProblem

DEFAULT_MAX_MEMORY = 1024 * MB


DEFAULT_KEEP_SECONDS = 30 * 60


@dataclass
class _Entry:
    value: object
    size: int
    used: float
    pinned: bool


class Store:
    """Uploaded photos, anonymized files and jobs, under random ids, in memory only.

    An entry unused for ``keep_seconds`` is forgotten; when a new entry would take the
    total over ``max_bytes``, the least recently used entries are forgotten first, and
    if that is not enough (running jobs are never forgotten) the new one is refused.
    Thread-safe: the event loop and the worker threads share it.
    """

    def __init__(self, max_bytes: int, keep_seconds: float, clock=time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, value: object, size: int, *, pinned: bool = False) -> str:
        with self._lock:
            self._expire()
            self._make_room(size)
            key = secrets.token_urlsafe(24)
            self._items[key] = _Entry(value, size, self._clock(), pinned)
            return key

    def get(self, key: str, kind: type, what: str):
        """The entry ``key`` if it is a ``kind``, else 404 (expired, forgotten, unknown)."""
        with self._lock:
            self._expire()
            entry = self._items.get(key)
            if entry is None or not isinstance(entry.value, kind):
                raise HttpProblem(404, "expired",
                                  f"this {what} is no longer on the server (forgotten after "
                                  f"{self.keep_seconds / 60:g} minutes unused, or to make "
                                  "room): add it again")
            entry.used = self._clock()
            self._items.move_to_end(key)
            return entry.value

    def update(self, key: str, *, size: int, pinned: bool) -> None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                entry.size, entry.pinned, entry.used = size, pinned, self._clock()

    def remove(self, key: str) -> object | None:
        with self._lock:
            entry = self._items.pop(key, None)
            return None if entry is None else entry.value

    def values(self) -> list:
        with self._lock:
            return [e.value for e in self._items.values()]

    @property
    def total(self) -> int:
        with self._lock:
            return sum(e.size for e in self._items.values())

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._items.items()
                    if not e.pinned and now - e.used > self.keep_seconds]:
            del self._items[key]

    def _make_room(self, size: int) -> None:
        total = sum(e.size for e in self._items.values())
        for key in [k for k, e in self._items.items() if not e.pinned]:
            if total + size <= self.max_bytes:
                break
            total -= self._items.pop(key).size
        if total + size > self.max_bytes:
            raise HttpProblem(503, "busy",
                              f"the server holds as much as its memory limit allows "
                              f"({self.max_bytes // MB} MB, serve --max-memory-mb): wait for "
                              "running work to finish, or remove photos from the page")


@dataclass
class Photo:
    """A photo to anonymize, decoded, with what detection found in it."""

    name: str
    loaded: images.LoadedImage
    regions: list
    skipped: list[dict]
    detections: int  # detected faces, numbered 0..n-1 (boxes are numbered after them)


@dataclass
class AnonymizedFile:
    """An anonymized file to recover, decoded, with its record (None: it has none)."""

    name: str
    loaded: images.LoadedImage
    record: Record | None


class JobCancelled(Exception):
    """Raised inside a job's progress callback once the job was cancelled."""


@dataclass
class Job:
    """One model run (anonymize or recover) and its progress, result or error."""

    kind: str
    name: str
    phases: int  # engine phases expected (each ``steps`` long), for the progress fraction
    created: float = field(default_factory=time.monotonic)
    state: str = "queued"  # queued, running, done, error
    phase: str | None = None
    step: int = 0
    steps: int = 0
    phases_done: int = 0
    started: float | None = None
    finished: float | None = None
    summary: dict = field(default_factory=dict)
    output: bytes | None = None
    sidecar: bytes | None = None
    error: dict | None = None
    cancelled: bool = False

    def progress(self, phase: str, done: int, total: int) -> None:
        """The engine's progress callback (called from the worker thread)."""
        if self.cancelled:
            raise JobCancelled()
        self.phase, self.step, self.steps = phase, done, total
        if done == total:
            self.phases_done += 1

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        if not self.steps:
            return 0.0
        current = 0.0 if self.step == self.steps else self.step / self.steps
        return min(0.99, (self.phases_done + current) / max(1, self.phases))

    @property
    def size(self) -> int:
        return len(self.output or b"") + len(self.sidecar or b"")
