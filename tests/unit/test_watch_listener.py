"""The sidecar's HTTP listener over real sockets: hostile bodies.

The listener runs on a loopback port in a thread of the test, as the sidecar runs it; the
clients are real HTTP clients.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests

from syncagent.http_service import EndpointContext, make_server
from syncagent.metrics import Metrics
from syncagent.notification_auth import Authenticator, AuthSettings

TOKEN = "listener-test-token-0123456789"
EVENTS = "application/vnd.docker.distribution.events.v1+json"


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
