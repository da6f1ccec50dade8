"""What keeps the prediction service answering under hostile clients.

- A deadline for each request's headers (armed when a connection opens and after each
  response, not reset by bytes that trickle in) and one for its body: a client that sends a
  byte every few seconds is cut off with 408 instead of holding its connection forever.
- At most ``max_connections`` open connections, well below the process's file limit (raised
  to its hard limit at start): more are closed at once, so that accept() never meets "Too many
  open files" and /healthz keeps answering.
- The body counted as it arrives, whatever Content-Length says (a chunked upload has none):
  past the cap the request ends with 413 and no more of it is read.
- One log line per kind of refusal and interval, not one per event: 20,000 slow clients wrote
  93 MB of tracebacks in 50 s.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException  # FastAPI passes its own through body parsing (others: 400)
from uvicorn.protocols.http.h11_impl import H11Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass
class RefusalLog:
    """Refusals counted by kind: the first of a kind is logged at once, the rest as one line
    per kind and ``interval`` seconds (``flush``, called by a timer)."""

    log: logging.Logger
    interval: float = 10.0
    pending: Counter[str] = field(default_factory=Counter)
    last: dict[str, float] = field(default_factory=dict)

    def refused(self, kind: str) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -self.interval) >= self.interval:
            self.last[kind] = now
            self.log.warning("refused: %s", kind)
        else:
            self.pending[kind] += 1

    def flush(self) -> None:
        for kind, count in self.pending.items():
            self.log.warning("refused %d more in %.0f s: %s", count, self.interval, kind)
            self.last[kind] = time.monotonic()
        self.pending.clear()


@dataclass(frozen=True)
class Limits:
    header_seconds: float = 10.0  # to send a request's line and headers, once connected
    body_seconds: float = 60.0  # to send the whole body, once the headers are in
    max_connections: int = 4096  # open at once (fewer where the file limit is lower)
    max_body: int = 33 * 2**20  # bytes of one request's body


def raise_file_limit(wanted: int) -> int:
    """The soft limit on open files raised to the hard one; the connections that leaves room
    for (``wanted`` at most, 64 files kept for the model, logs and the loop)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        soft = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + 64)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return max(1, min(wanted, soft - 64))


def guarded_protocol(limits: Limits, refusals: RefusalLog) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with ``limits``' header deadline and connection cap."""

    class GuardedH11Protocol(H11Protocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                refusals.refused(f"connections over the limit of {limits.max_connections}")
                transport.abort()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # the headers are in: the body has its own deadline

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(limits.header_seconds, self._too_slow)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _too_slow(self) -> None:
            self.deadline = None
            if not self.transport.is_closing():
                refusals.refused(
                    f"slow clients (no whole request headers within {limits.header_seconds:g} s)"
                )
                self.transport.write(TIMED_OUT)
                self.transport.close()

    return GuardedH11Protocol


def _closing_delimiter(scope: Scope) -> bytes:
    """``--<boundary>--``, what a whole multipart body ends with, or b"" for other bodies."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type" and value.lower().startswith(b"multipart/"):
            for part in value.split(b";")[1:]:
                key, _, boundary = part.strip().partition(b"=")
                if key.lower() == b"boundary" and boundary:
                    return b"--" + boundary.strip(b'"') + b"--"
    return b""


class BodyGuard:
    """ASGI middleware: a request's body counted as it arrives and timed against its
    deadline. Past either, reading it raises HTTPException 413 or 408, which FastAPI passes
    through its body parsing to the app's handler (any other exception there becomes a 400),
    and no more of the body is read: uvicorn closes the connection."""

    def __init__(self, app: ASGIApp, limits: Limits, refusals: RefusalLog) -> None:
        self.app, self.limits, self.refusals = app, limits, refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits, refusals = self.limits, self.refusals
        received = 0
        deadline = time.monotonic() + limits.body_seconds
        closing = _closing_delimiter(scope)
        tail = b""

        async def counted_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                refusals.refused(f"slow bodies (not whole within {limits.body_seconds:g} s)")
                raise HTTPException(
                    408, f"request body not sent within {limits.body_seconds:g} s"
                ) from None
            nonlocal tail
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limits.max_body:
                refusals.refused(f"bodies over {limits.max_body} bytes")
                raise HTTPException(413, f"request body over {limits.max_body} bytes")
            if closing and message["type"] == "http.request":
                tail = (tail + chunk)[-(len(closing) + 4) :]
                if not message.get("more_body") and received and closing not in tail:
                    raise HTTPException(
                        400, "multipart body ends without its closing boundary: cut short?"
                    )
            return message

        await self.app(scope, counted_receive, send)
