"""The sidecar's HTTP listener over real sockets: hostile bodies and bursts of connections.

The listener runs on a loopback port in a thread of the test, as the sidecar runs it; the
clients are real HTTP clients (requests, and raw asyncio connections for the burst).
"""

from __future__ import annotations

import asyncio
import json
import resource
import threading
from collections import Counter

import pytest
import requests

from syncagent.sidecar.listener import EndpointContext, make_server
from syncagent.sidecar.metrics import Metrics
from syncagent.sidecar.auth import Authenticator, AuthSettings

TOKEN = "listener-test-token-0123456789"
EVENTS = "application/vnd.docker.distribution.events.v1+json"
BURST = 1000


@pytest.fixture
def listener():
    accepted: list = []
    context = EndpointContext(
        metrics=Metrics(),
        authenticator=Authenticator(AuthSettings(tokens=(TOKEN,))),
        accept_changes=accepted.extend,
        health=lambda: (True, {}),
        liveness=lambda: (True, {}),
        is_stopping=lambda: False,
    )
    server = make_server("127.0.0.1:0", context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.accepted = accepted
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def post_events(server, body: bytes) -> requests.Response:
    return requests.post(
        f"http://127.0.0.1:{server.port}/events",
        data=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": EVENTS},
        timeout=10,
    )


def rejected(server, reason: str) -> float:
    text = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    prefix = f'syncagent_events_rejected_total{{reason="{reason}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_a_deeply_nested_body_is_answered_200_counted_and_the_listener_goes_on(listener):
    depth = 100_000
    response = post_events(listener, b"[" * depth + b"]" * depth)
    assert response.status_code == 200, "answered, so that the registry does not retry it for ever"
    assert response.json()["rejected"] == 1 and response.json()["queued"] == 0
    assert rejected(listener, "too-deep") == 1
    assert listener.accepted == []
    push = {"action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                         "repository": "group/app", "tag": "v1", "digest": "sha256:" + "0" * 64}}
    assert post_events(listener, json.dumps({"events": [push]}).encode()).json()["queued"] == 1
    assert [change.repository for change in listener.accepted] == ["group/app"]


def test_a_nested_event_envelope_is_malformed_too_deep_not_an_error(listener):
    depth = 5_000
    body = b'{"events": [{"action": "push", "target": ' + b'{"x": ' * depth + b"1" + b"}" * depth + b"}]}"
    assert post_events(listener, body).status_code == 200
    assert rejected(listener, "too-deep") == 1 and listener.accepted == []


@pytest.fixture
def enough_descriptors():
    """A burst needs two descriptors per connection in this process (client and server side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * BURST + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {wanted} descriptors this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_burst_of_concurrent_connections_gets_no_reset(listener, enough_descriptors):
    """All connections are opened at once; socketserver's default backlog of 5 resets some of them."""
    async def livez() -> str:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(b"GET /livez HTTP/1.1\r\nHost: syncagent\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer.split(b"\r\n", 1)[0].decode()
        except OSError as exc:
            return type(exc).__name__

    async def burst() -> Counter:
        tasks = [asyncio.ensure_future(livez()) for _ in range(BURST)]
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        return Counter([task.result() for task in done] + ["unanswered in 30 s"] * len(pending))

    outcomes = asyncio.run(burst())
    assert outcomes == Counter({"HTTP/1.1 200 OK": BURST})
