"""The local server's HTTP layer: uvicorn with a request-header deadline.

Why a subclass: uvicorn (0.54) arms no timer before a connection's first request, so a client
that connects and sends nothing (or trickles its headers) holds a connection for ever; its
``timeout_keep_alive`` only starts after a response. :class:`_HeaderDeadline` closes a
connection whose next request's headers are not complete ``header_timeout_s`` after it
connected or after its last response. Header size stays capped by h11
(``h11_max_incomplete_event_size``); slow bodies are the app's (``handlers.webbody``).
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Seconds a client has to send a request's headers (from connecting or from the last response).
HEADER_TIMEOUT_S = 10.0
#: Largest request head (request line + headers), bytes.
MAX_HEADER_BYTES = 64 * 1024
#: Seconds an idle keep-alive connection stays open after a response.
KEEP_ALIVE_S = 5


def header_deadline_protocol(header_timeout_s: float) -> type:
    """uvicorn's h11 protocol class with the header deadline (see the module docstring)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _HeaderDeadline(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _armed_for: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = self.cycle  # a new request replaces self.cycle
            self._timer = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            if self.cycle is self._armed_for and not self.transport.is_closing():
                self.transport.close()  # no request began in time

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return _HeaderDeadline


def serve_http(app: Any, host: str, port: int, *,
               header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
    """Run ``app`` with uvicorn until interrupted: h11 with the header deadline, keep-alive
    :data:`KEEP_ALIVE_S`, request heads up to :data:`MAX_HEADER_BYTES`, and no logging setup of
    its own (``log_config=None``: its records reach our JSON handler, one line each)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, http=header_deadline_protocol(
        header_timeout_s), log_config=None, log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEADER_BYTES)
    uvicorn.Server(config).run()
