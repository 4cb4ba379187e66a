"""Where a run's time went: wall seconds per phase, and the model calls.

Pass a :class:`Timings` to :func:`faceveil.api.anonymize` or :func:`faceveil.api.recover`
(``timings=``) and read it afterwards; ``faceveil anonymize --timings`` prints one on
stderr. Phases add up over a run (a folder: over its files). Imports nothing heavy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

START_UP = ("imports", "model load")  # what a run pays before its first face


class Timings:
    """Wall seconds per phase, added up (imports, model load, reading, detection, key,
    model, harmonize/paste, record, writing: whichever a run has), the model's network
    calls (``calls``) and the faces they made (``faces``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls = 0
        self.faces = 0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as (part of) phase ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def summary(self) -> str:
        """One line: start-up (imports, model load), then each phase, the calls, the total."""
        s = self.seconds
        parts = []
        if "imports" in s or "model load" in s:
            parts.append(f"start-up {s.get('imports', 0.0) + s.get('model load', 0.0):.2f} s "
                         f"(imports {s.get('imports', 0.0):.2f}, model load "
                         f"{s.get('model load', 0.0):.2f})")
        for p in s:  # in the order the run met them
            if p in START_UP:
                continue
            extra = ""
            if p == "model" and self.calls:
                extra = f" ({self.calls} network calls for {self.faces} face(s))"
            parts.append(f"{p} {s[p]:.2f} s{extra}")
        return ", ".join(parts) + f"; total {self.total:.2f} s"
