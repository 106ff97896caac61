"""A loopback HTTP proxy in front of S3 (Ceph RGW) that injects faults, per request and reproducibly.

    with S3FaultProxy(cluster.rgw_endpoint, seed=7) as proxy:
        proxy.control.set_rate("truncate", 0.2, "get")        # 20% of object GETs end early
        proxy.control.set_rate("slowdown", 0.1)                # 10% of every request: 503 SlowDown
        url = rgw_url(cluster, bucket, endpoint_url=proxy.endpoint)
        ...                                                    # syncagent talks to the proxy
        proxy.control.injected[("get", "truncate")]            # how many it injected

Requests are forwarded to the upstream endpoint unchanged: the same method,
raw path and query, and headers -- ``Host`` included, so a SigV4 signature
made for the proxy's ``host:port`` still holds at RGW, which checks it against
the ``Host`` it receives (RGW accepts any host name signed consistently; the
fixture's tests check that a clean pass through the proxy succeeds). Only
path-style addressing is understood (``/BUCKET/KEY``).

Faults (one at most per request):

``slowdown``
    answer ``503 SlowDown`` with S3's XML error body; nothing is forwarded.
``error-after``
    forward the request, then answer ``500 InternalError``: the write
    happened upstream, the client sees a failure.
``reset-request``
    read the request head and part of its body, then reset the connection
    (TCP RST); nothing is forwarded.
``reset-body``
    forward, send the status, the headers and part of the body, then reset.
``truncate``
    forward, send the status, the headers (the full ``Content-Length``) and
    fewer bytes of the body than announced, then close the connection cleanly.

``reset-body`` and ``truncate`` apply only to answers that have a body; a
request drawn for them whose answer has none is passed on unchanged and not
counted.

Operations (what a rate applies to): ``get``, ``head``, ``list``, ``put``,
``upload-part``, ``create-upload``, ``complete-upload``, ``abort-upload``,
``list-uploads``, ``list-parts``, ``delete``, ``other``.

Reproducible: whether a request is hit, and where a body is cut, is drawn from
the seed, the request (method, path, query without upload ids) and how many
times that same request was seen before -- not from arrival order, so
concurrent clients meet the same faults on every run (given the same keys).
``max_faults_per_request`` bounds the faults one request meets, retries
included: with a client that retries more often than that, every request
succeeds in the end, whatever the rates. Standard library only.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

FAULTS = ("slowdown", "error-after", "reset-request", "reset-body", "truncate")
OPERATIONS = (
    "get", "head", "list", "put", "upload-part", "create-upload", "complete-upload", "abort-upload",
    "list-uploads", "list-parts", "delete", "other",
)
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
_BLOCK = 64 * 1024
_ERRORS = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "error-after": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}

Before = Callable[[str, str, dict], None]
After = Callable[[str, str, dict, int], None]


def operation_of(method: str, path: str, query: dict) -> str:
    """The S3 operation of a path-style request (``path`` unquoted, ``query`` parsed)."""
    has_key = "/" in path.strip("/")
    if method == "GET":
        if not has_key:
            return "list-uploads" if "uploads" in query else "list"
        return "list-parts" if "uploadId" in query else "get"
    if method == "HEAD":
        return "head"
    if method == "PUT" and has_key:
        return "upload-part" if "uploadId" in query else "put"
    if method == "POST" and has_key:
        if "uploads" in query:
            return "create-upload"
        if "uploadId" in query:
            return "complete-upload"
    if method == "DELETE" and has_key:
        return "abort-upload" if "uploadId" in query else "delete"
    return "other"


@dataclass(frozen=True)
class Injection:
    """One fault injected: the operation, the fault, the request's path."""

    operation: str
    fault: str
    path: str


@dataclass
class FaultControl:
    """Rates per (operation, fault), the seed, and counters of what was seen and injected.

    Thread-safe; rates may change while the proxy runs.
    """

    seed: int = 0
    rates: dict[tuple[str, str], float] = field(default_factory=dict)
    max_faults_per_request: int | None = None
    requests: Counter = field(default_factory=Counter)
    injected: Counter = field(default_factory=Counter)
    injections: list[Injection] = field(default_factory=list)
    _occurrences: Counter = field(default_factory=Counter, repr=False)
    _faulted: Counter = field(default_factory=Counter, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_rate(self, fault: str, rate: float, *operations: str) -> None:
        """Inject ``fault`` into ``rate`` (0..1) of the requests of ``operations`` (default: all)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
        unknown = set(operations) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}; expected some of {', '.join(OPERATIONS)}")
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be between 0 and 1, got {rate}")
        with self._lock:
            rates = {**self.rates, **{(operation, fault): rate for operation in operations or OPERATIONS}}
            for operation in operations or OPERATIONS:
                if sum(r for (o, _), r in rates.items() if o == operation) > 1:
                    raise ValueError(f"rates for {operation} add up to more than 1")
            self.rates = rates

    def clear(self) -> None:
        """No more faults (counters are kept)."""
        with self._lock:
            self.rates.clear()

    def total(self, fault: str | None = None) -> int:
        """Faults injected so far (of one kind, or all)."""
        with self._lock:
            return sum(n for (_, f), n in self.injected.items() if fault is None or f == fault)

    def draw(self, method: str, path: str, query: dict, operation: str) -> tuple[str | None, float]:
        """The fault for this request (or None) and where to cut its body (a fraction in [0, 1))."""
        request = (method, path, "&".join(f"{k}={v}" for k, v in sorted(query.items()) if k != "uploadId"))
        with self._lock:
            self.requests[operation] += 1
            occurrence = self._occurrences[request]
            self._occurrences[request] += 1
            spent = self.max_faults_per_request is not None and self._faulted[request] >= self.max_faults_per_request
            rates = [] if spent else [(fault, self.rates.get((operation, fault), 0.0)) for fault in FAULTS]
        chance = random.Random(f"{self.seed}|{'|'.join(request)}|{occurrence}")
        point, cut = chance.random(), chance.random()
        for fault, rate in rates:
            if point < rate:
                with self._lock:
                    self._faulted[request] += 1
                return fault, cut
            point -= rate
        return None, cut

    def record(self, operation: str, fault: str, path: str) -> None:
        with self._lock:
            self.injected[(operation, fault)] += 1
            self.injections.append(Injection(operation, fault, path))


class S3FaultProxy:
    """The proxy; ``endpoint`` is its URL, ``control`` its :class:`FaultControl`.

    ``before(method, path, query)`` runs before a request is forwarded and may
    block it; ``after(method, path, query, status)`` once the upstream answered,
    before the answer is passed on. ``path`` is unquoted (``/BUCKET/KEY``).
    """

    def __init__(self, upstream: str, *, seed: int = 0, before: Before | None = None, after: After | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.control = FaultControl(seed)
        self.before: Before = before or (lambda method, path, query: None)
        self.after: After = after or (lambda method, path, query, status: None)
        self.server = _Server(("127.0.0.1", 0), _ProxyHandler)
        self.server.proxy = self
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="s3-fault-proxy", daemon=True)

    def __enter__(self) -> "S3FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(10)
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of new connections from several clients
    proxy: S3FaultProxy


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue answered by the base class
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        self._drop_upstream()
        super().finish()

    def log_message(self, *args) -> None:
        pass

    def _drop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    # -- the request ------------------------------------------------------------------------

    def _handle(self) -> None:
        proxy = self.server.proxy
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query, keep_blank_values=True)
        operation = operation_of(self.command, path, query)
        fault, cut = proxy.control.draw(self.command, path, query, operation)
        if fault == "reset-request":
            proxy.control.record(operation, fault, path)
            self._read_part_of_body(cut)
            self._reset()
            return
        body = self._body()
        if fault == "slowdown":
            proxy.control.record(operation, fault, path)
            self._send_error(fault, path)
            return
        proxy.before(self.command, path, query)
        response = self._forward(body)
        if response is None:
            return
        proxy.after(self.command, path, query, response.status)
        if fault == "error-after":
            response.read()
            proxy.control.record(operation, fault, path)
            self._send_error(fault, path)
            return
        self._relay(response, fault, cut, operation, path)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            pieces = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(pieces)
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length is not None else None

    def _read_part_of_body(self, fraction: float) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(int(length * fraction))

    def _forward(self, body: bytes | None) -> http.client.HTTPResponse | None:
        """Send the request upstream as it came; None (after a 502 to the client) if that fails."""
        try:
            if self.upstream is None:
                self.upstream = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=60)
            self.upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.upstream.putheader(name, value)
            if body is not None:
                self.upstream.putheader("Content-Length", str(len(body)))
            self.upstream.endheaders(body)
            return self.upstream.getresponse()
        except (OSError, http.client.HTTPException):
            self._drop_upstream()
            self.send_error(502)
            return None

    # -- the answer -------------------------------------------------------------------------

    def _relay(self, response: http.client.HTTPResponse, fault: str | None, cut: float, operation: str, path: str) -> None:
        announced = response.getheader("Content-Length")
        has_body = self.command != "HEAD" and response.status not in (204, 304)
        buffered = None
        if has_body and announced is None:
            buffered = response.read()  # chunked upstream: pass on with a length
            announced = str(len(buffered))
        length = int(announced) if has_body and announced is not None else 0
        if fault in ("truncate", "reset-body") and length == 0:
            fault = None
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if announced is not None and (has_body or self.command == "HEAD"):
            self.send_header("Content-Length", announced)
        self.end_headers()
        if not has_body:
            return
        limit = length if fault is None else min(length - 1, int(length * cut))
        self._copy_body(response, buffered, limit)
        if fault is None:
            return
        self.server.proxy.control.record(operation, fault, path)
        self._drop_upstream()  # the rest of its answer is unread
        if fault == "reset-body":
            self._reset()
        else:
            self.wfile.flush()
            self.close_connection = True  # the server closes the socket cleanly (FIN)

    def _copy_body(self, response: http.client.HTTPResponse, buffered: bytes | None, limit: int) -> None:
        if buffered is not None:
            self.wfile.write(buffered[:limit])
            return
        sent = 0
        while sent < limit:
            block = response.read(min(_BLOCK, limit - sent))
            if not block:
                break
            self.wfile.write(block)
            sent += len(block)
        if sent == limit and limit == int(response.getheader("Content-Length") or 0):
            response.read()  # the end of the answer, so the upstream connection can be reused

    def _send_error(self, fault: str, path: str) -> None:
        status, reason, code, message = _ERRORS[fault]
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{path}</Resource>"
            "<RequestId>s3-fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Abort the client's connection with a TCP RST (SO_LINGER 0), not a clean close."""
        self._drop_upstream()
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rfile.close()  # its reference would keep the descriptor open
        self.connection.close()
