"""S3 requests through the fault proxy (tests/support/fault_proxy.py), without an S3 service.

- ``max_attempts`` counts every attempt a request makes, the first included
  (botocore's own ``max_attempts`` setting counts the retries only): counted at
  a proxy answering 503 SlowDown to everything, which forwards nothing.
- an error answer whose body is reset (a 404's XML) is a TransientError:
  botocore reads that body outside its error handling and let urllib3's
  ProtocolError through, which ended a sync with a traceback. The upstream is
  a stand-in answering 404 NoSuchKey to every GET.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backends import NotFound, TransientError, open_backend
from backends.retry import RetryingBackend, RetryPolicy
from syncagent.sync.discovery import read_small
from tests.support.fault_proxy import S3FaultProxy

NO_SUCH_KEY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>'
               b"<Message>The specified key does not exist.</Message></Error>")


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-checked-here")


def backend_through(proxy: S3FaultProxy, attempts: int):
    return open_backend(f"s3://bucket/root?endpoint_url={proxy.endpoint}&addressing_style=path&region=us-east-1"
                        f"&max_attempts={attempts}&put_client=boto3")


@pytest.mark.parametrize("attempts", [1, 3])
def test_max_attempts_is_the_number_of_requests_sent(attempts):
    with S3FaultProxy("http://127.0.0.1:9") as proxy:
        proxy.control.set_rate("slowdown", 1.0)
        backend = backend_through(proxy, attempts)
        with pytest.raises(TransientError) as raised:
            backend.stat("key")
        backend.close()
    assert "SlowDown" in str(raised.value) or "503" in str(raised.value)
    assert proxy.control.requests["head"] == attempts


def test_the_backend_counts_every_request_it_sends_retries_included():
    """The count benchmarks read from ``syncagent -v`` (the backend logs it when it closes)."""
    with S3FaultProxy("http://127.0.0.1:9") as proxy:
        proxy.control.set_rate("slowdown", 1.0)
        backend = backend_through(proxy, 3)
        with pytest.raises(TransientError):
            backend.stat("key")
        with pytest.raises(TransientError):
            list(backend.iter_objects(""))
        backend.close()
    assert backend.requests.counts() == {"HeadObject": 3, "ListObjectsV2": 3}
    assert proxy.control.requests["head"] == 3
    assert backend.requests.describe() == "6 requests (HeadObject 3, ListObjectsV2 3)"


class NoSuchKey(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(NO_SUCH_KEY)))
        self.end_headers()
        self.wfile.write(NO_SUCH_KEY)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def missing_everything():
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoSuchKey)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_an_error_answer_reset_mid_body_is_transient(missing_everything, monkeypatch):
    with S3FaultProxy(missing_everything) as proxy:
        backend = backend_through(proxy, 1)
        with pytest.raises(NotFound):
            backend.read_bytes("key")
        proxy.control.set_rate("reset-body", 1.0, "get")
        with pytest.raises(TransientError):
            backend.read_bytes("key")
        proxy.control.max_faults_per_request = 2
        with pytest.raises(NotFound):
            read_small(RetryingBackend(backend, RetryPolicy(sleep=lambda seconds: None)), "other", 100)  # two resets, then the answer
        backend.close()
    assert proxy.control.injected[("get", "reset-body")] == 3
