"""The sidecar's HTTP listener: ``POST /events``, ``GET /healthz``, ``GET /livez``, ``GET /metrics``.

``POST /events`` (registry notifications), in this order:

1. not serving notifications -> 404; shutting down -> 503 (the registry retries later);
2. ``Authorization`` refused -> 401, the body is not read, nothing is recorded;
3. no ``Content-Length`` -> 411; more than the size limit -> 413 (body not read);
4. the body is parsed; every change it brings is written to the journal
   (committed, on disk) and queued, and only then is 200 sent. A journal that
   cannot be written -> 503: not acknowledged, so the registry retries;
5. an authenticated body that is not an event envelope (counted as
   ``malformed``, or ``too-deep`` for JSON nested deeper than any envelope),
   or events that are malformed or name an invalid repository: logged,
   counted, answered **200**.
   Distribution's notification sink retries anything outside 200-399 for ever,
   one event at a time, so a 4xx here would wedge the registry's queue behind
   an event that can never succeed.

``/healthz`` answers 200 when ready (backends reachable, last complete
reconcile recent enough) and 503 otherwise, with the details as JSON;
``/livez`` answers 200 while the process serves and its workers are alive.
``/metrics`` is the Prometheus text format. Health and metrics need no
credentials and reveal no secret.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence

from .journal import Change, JournalError
from .metrics import Metrics
from .auth import Authenticator
from .notifications import ACCEPTED_CONTENT_TYPES, MalformedEnvelope, parse_envelope

log = logging.getLogger("syncagent.http")

REQUEST_TIMEOUT = 15.0
LISTEN_BACKLOG = 1024
"""Connections the kernel queues before the server accepts them (socketserver's default is 5:
a burst of a few hundred connections would see resets). The kernel caps it at net.core.somaxconn."""
DRAIN_LIMIT = 8 * 1024 * 1024
DRAIN_TIMEOUT = 2.0


@dataclass
class EndpointContext:
    """What the request handler needs from the service."""

    metrics: Metrics
    authenticator: Authenticator | None
    accept_changes: Callable[[Sequence[Change]], None]
    health: Callable[[], tuple[bool, dict]]
    liveness: Callable[[], tuple[bool, dict]]
    is_stopping: Callable[[], bool]
    max_body: int = 1024 * 1024
    notifications_enabled: bool = True


class ServiceHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], context: EndpointContext) -> None:
        self.context = context
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        """A client that drops its connection is routine (the registry closes idle ones); anything else is logged."""
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, socket.timeout)):
            log.debug("connection from %s ended: %s", client_address[0], error)
            return
        log.error("error while serving %s", client_address[0], exc_info=True)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    value = int(port)
    if not 0 <= value <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, value


def make_server(listen: str, context: EndpointContext) -> ServiceHTTPServer:
    host, port = parse_listen(listen)
    if ":" in host:
        class _Server6(ServiceHTTPServer):
            address_family = socket.AF_INET6

        return _Server6((host, port), context)
    return ServiceHTTPServer((host, port), context)


class _Handler(BaseHTTPRequestHandler):
    server: ServiceHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    server_version = "syncagent"
    sys_version = ""

    @property
    def context(self) -> EndpointContext:
        return self.server.context

    def version_string(self) -> str:
        return "syncagent"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    # --- routes ---------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.context.metrics.exposition(), self.context.metrics.content_type)
        elif path == "/healthz":
            ready, details = self.context.health()
            self._send_json(200 if ready else 503, details)
        elif path == "/livez":
            alive, details = self.context.liveness()
            self._send_json(200 if alive else 503, details)
        else:
            self._send_json(404, {"error": "not found"})

    def do_HEAD(self) -> None:  # noqa: N802
        self._send_json(405, {"error": "method not allowed"})

    def do_PUT(self) -> None:  # noqa: N802
        self._refuse_body(405, {"error": "method not allowed"})

    do_DELETE = do_PATCH = do_PUT

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        context = self.context
        if path != "/events" or not context.notifications_enabled:
            self._refuse_body(404, {"error": "not found"})
            return
        if context.is_stopping():
            context.metrics.events_rejected.labels("shutting-down").inc()
            self._refuse_body(503, {"error": "shutting down"}, headers={"Retry-After": "5"})
            return
        verdict = context.authenticator.check(self.headers.get("Authorization")) if context.authenticator else None
        if verdict is None or not verdict.ok:
            reason = verdict.reason if verdict is not None else "missing"
            context.metrics.events_rejected.labels(reason).inc()
            log.warning("refused events from %s: %s", self.client_address[0], reason,
                        extra={"client": self.client_address[0], "reason": reason})
            self._refuse_body(401, {"error": "unauthorized"}, headers={"WWW-Authenticate": 'Bearer realm="syncagent"'})
            return
        length = self._content_length()
        if length is None:
            context.metrics.events_rejected.labels("length-required").inc()
            self._refuse_body(411, {"error": "Content-Length required"})
            return
        if length > context.max_body:
            context.metrics.events_rejected.labels("too-large").inc()
            log.warning("refused %d-byte events body from %s (limit %d)", length, self.client_address[0], context.max_body,
                        extra={"client": self.client_address[0], "reason": "too-large"})
            self._refuse_body(413, {"error": f"body larger than {context.max_body} bytes"})
            return
        try:
            body = self.rfile.read(length)
        except (OSError, socket.timeout):
            self.close_connection = True
            return
        if len(body) != length:
            self.close_connection = True
            return
        self._accept(body)

    def _accept(self, body: bytes) -> None:
        context = self.context
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        try:
            if content_type not in ACCEPTED_CONTENT_TYPES:
                raise MalformedEnvelope(f"content type {content_type[:100]!r} is not {ACCEPTED_CONTENT_TYPES[0]}")
            outcome = parse_envelope(body)
        except MalformedEnvelope as exc:
            context.metrics.events_rejected.labels(exc.reason).inc()
            log.warning("authenticated request with a malformed body from %s: %s", self.client_address[0], exc,
                        extra={"client": self.client_address[0], "reason": exc.reason})
            self._send_json(200, {"queued": 0, "ignored": 0, "rejected": 1, "error": str(exc)[:300]})
            return
        for reason, detail in outcome.rejected:
            context.metrics.events_rejected.labels(reason).inc()
            log.warning("rejected an event: %s: %s", reason, detail, extra={"reason": reason})
        for kind in outcome.ignored:
            context.metrics.events_ignored.labels(kind).inc()
        try:
            context.accept_changes(outcome.changes)
        except JournalError as exc:
            context.metrics.events_rejected.labels("journal-unavailable").inc()
            context.metrics.errors.labels("journal").inc()
            log.error("cannot journal events, not acknowledging them: %s", exc)
            self._send_json(503, {"error": "journal unavailable"}, headers={"Retry-After": "5"})
            return
        self._send_json(
            200, {"queued": len(outcome.changes), "ignored": len(outcome.ignored), "rejected": len(outcome.rejected)}
        )

    # --- helpers ----------------------------------------------------------------

    def _content_length(self) -> int | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return None
        value = self.headers.get("Content-Length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)

    def _refuse_body(self, status: int, payload: dict, headers: dict | None = None) -> None:
        """Answer without using the body, then close the connection.

        The body is drained (up to ``DRAIN_LIMIT`` bytes, briefly) after the
        answer is sent and the write side shut: closing a socket with unread
        data makes the kernel reset the connection, and the client could lose
        the answer.
        """
        self.close_connection = True
        self._send_json(status, payload, headers={**(headers or {}), "Connection": "close"})
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_TIMEOUT)
            remaining = DRAIN_LIMIT
            while remaining > 0:
                chunk = self.rfile.read1(min(65536, remaining)) if hasattr(self.rfile, "read1") else self.rfile.read(min(65536, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode() + b"\n", "application/json", headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        try:
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True
