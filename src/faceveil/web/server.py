"""How ``faceveil serve`` runs its application: uvicorn over h11, with a read timeout.

uvicorn's own timeout only starts after a response, and any byte received stops it, so
a client that opens a connection and never sends a whole request head (or trickles one
out) would hold it forever; with a connection limit, 64 of them denied the page to
everyone (issue 27). Here a connection must send a complete request head within
:data:`READ_TIMEOUT` seconds of opening or of its last response, or it is closed; the
number of requests in progress is limited by the application (``protocol.Limit``), not
the number of open connections. Imported only when the command runs (uvicorn is the
web extra's).
"""

from __future__ import annotations

import asyncio
import socket

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

READ_TIMEOUT = 5.0
"""Seconds a connection may take to send a request head (idle ones are closed then)."""


class TimedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head."""

    read_timeout = READ_TIMEOUT

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a whole request head came in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request head (keep-alive) has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def config(app, access_log: bool) -> uvicorn.Config:
    """uvicorn's settings for the page: h11 with the read timeout, no connection limit
    (the application limits requests), a short keep-alive."""
    return uvicorn.Config(app, http=TimedH11, log_level="warning", access_log=access_log,
                          server_header=False, date_header=False, lifespan="off",
                          ws="none", timeout_keep_alive=int(READ_TIMEOUT))


def run(settings: uvicorn.Config, sock: socket.socket) -> None:
    """Serve with ``settings`` (:func:`config`) on the listening socket until Ctrl-C."""
    uvicorn.Server(settings).run(sockets=[sock])
