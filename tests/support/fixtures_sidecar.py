"""The ``sidecar`` fixture: a :class:`WatchService` in process, between two filesystem trees under tmp_path
(``src``, ``dst``), with quick settings, stopped at the end; and helpers to talk to it over HTTP.

    service = sidecar(blobs="external")                # WatchConfig fields override the defaults
    post_events(service, push_event("app"))            # an authenticated registry notification
    metric(service, "syncagent_tags_published_total")

tests/unit/test_watch_service.py has the sidecar's own tests; this is for tests of features built on it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import requests

from syncagent.sidecar.config import WatchConfig
from syncagent.sidecar.service import WatchService

SIDECAR_TOKEN = "sidecar-fixture-token-0123456789"
EVENTS = "application/vnd.docker.distribution.events.v1+json"


def poll_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """``predicate``'s first true value, or its last value after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(interval)


def push_event(repository: str, tag: str | None = "v0", action: str = "push") -> bytes:
    """One registry notification for ``repository`` (the digest is not read: the pass reads the storage)."""
    target = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": repository,
              "digest": "sha256:" + "0" * 64, "url": f"http://primary/v2/{repository}/manifests/x"}
    if tag:
        target["tag"] = tag
    return json.dumps({"events": [{"id": "e1", "action": action, "target": target}]}).encode()


def service_url(service: WatchService, path: str) -> str:
    return f"http://127.0.0.1:{service.server.port}{path}"


def post_events(service: WatchService, body: bytes) -> requests.Response:
    headers = {"Content-Type": EVENTS, "Authorization": f"Bearer {SIDECAR_TOKEN}"}
    return requests.post(service_url(service, "/events"), data=body, headers=headers, timeout=10)


def metric(service: WatchService, name: str, labels: str = "") -> float:
    """A sample of /metrics (0 when absent)."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in requests.get(service_url(service, "/metrics"), timeout=5).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def health(service: WatchService) -> tuple[int, dict]:
    response = requests.get(service_url(service, "/healthz"), timeout=5)
    return response.status_code, response.json()


@pytest.fixture
def sidecar(tmp_path):
    services: list[WatchService] = []

    def start(**overrides) -> WatchService:
        config = replace(
            WatchConfig(),
            source=str(tmp_path / "src"), destination=str(tmp_path / "dst"), listen="127.0.0.1:0",
            journal=str(tmp_path / "journal.sqlite3"), token=SIDECAR_TOKEN, fs_events="off", reconcile_at_start=False,
            reconcile_interval=0.0, settle=0.05, max_delay=0.5, health_interval=0.2, workers=2, shutdown_grace=5.0,
        )
        config = replace(config, **overrides)
        config.validate()
        service = WatchService(config).start()
        services.append(service)
        return service

    yield start
    for service in services:
        if not service.stopped.is_set():
            service.request_stop(abandon=True)
            service.shutdown()
