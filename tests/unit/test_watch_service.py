"""The sidecar service in process, on filesystem backends with synthetic trees: HTTP intake, passes, health, stop.

Real registries and skopeo are in tests/e2e/test_watch.py; these run in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
import requests

from backends.filesystem import FilesystemBackend
from syncagent.sync.discovery import read_repository
from syncagent.sidecar.journal import Journal
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree
from syncagent.sidecar.service import WatchService
from syncagent.sidecar.config import WatchConfig
from tests.support.fixtures_sidecar import EVENTS, metric, push_event
from tests.support.fixtures_sidecar import service_url as url
from tests.support.fixtures_sidecar import poll_until as poll

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "unit-test-token-0123456789"
JWT_SECRET = "unit-test-jwt-secret-0123456789abcdef"


@pytest.fixture
def tree(tmp_path):
    summary = write_tree(FilesystemBackend(tmp_path / "src"), TreeShape(repositories=3, tags_per_repository=2, layer_bytes=(10, 200)))
    return summary


@pytest.fixture
def start_service(tmp_path):
    services: list[WatchService] = []

    def start(**overrides) -> WatchService:
        config = replace(
            WatchConfig(),
            source=str(tmp_path / "src"), destination=str(tmp_path / "dst"), listen="127.0.0.1:0",
            journal=str(tmp_path / "journal.sqlite3"), token=TOKEN, jwt_secret=JWT_SECRET.encode(),
            jwt_issuer="primary", jwt_audience="syncagent", fs_events="off", reconcile_at_start=False,
            reconcile_interval=0.0, settle=0.05, max_delay=0.5, health_interval=0.2, workers=2,
            shutdown_grace=5.0, max_body=4096,
        )
        config = replace(config, **overrides)
        if config.notifications or config.fs_events_enabled() or config.reconcile_interval > 0:
            config.validate()
        service = WatchService(config).start()
        services.append(service)
        return service

    yield start
    for service in services:
        if not service.stopped.is_set():
            service.request_stop(abandon=True)
            service.shutdown()


def post(service, body: bytes, *, token: str | None = TOKEN, content_type: str = EVENTS, headers=None):
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    return requests.post(url(service, "/events"), data=body, headers=all_headers, timeout=10)


def dest_tags(tmp_path, repository: str) -> dict:
    backend = FilesystemBackend(tmp_path / "dst")
    try:
        return {tag: str(digest) for tag, digest in read_repository(backend, repository).tags.items()}
    except Exception:
        return {}


def test_an_authenticated_push_event_syncs_its_repository(tmp_path, tree, start_service):
    service = start_service()
    repository = tree.repositories[0]
    response = post(service, push_event(repository))
    assert response.status_code == 200 and response.json()["queued"] == 1
    assert poll(lambda: dest_tags(tmp_path, repository) == tree.tags[repository])
    assert all(dest_tags(tmp_path, other) == {} for other in tree.repositories[1:]), "only the named repository"
    assert poll(lambda: metric(service, "syncagent_tags_published_total") == 2)
    assert metric(service, "syncagent_events_received_total", 'source="notification"') == 1
    assert metric(service, "syncagent_replication_lag_seconds_count") == 2


def test_refused_requests_change_nothing(tmp_path, tree, start_service):
    service = start_service()
    repository = tree.repositories[0]
    body = push_event(repository)
    expired = jwt.encode({"iss": "primary", "aud": "syncagent", "exp": int(time.time()) - 600}, JWT_SECRET, algorithm="HS256")
    forged = jwt.encode({"iss": "primary", "aud": "syncagent", "exp": int(time.time()) + 600}, "x" * 40, algorithm="HS256")
    assert post(service, body, token=None).status_code == 401
    assert post(service, body, token="wrong-token").status_code == 401
    assert post(service, body, token=forged).status_code == 401
    assert post(service, body, token=expired).status_code == 401
    assert post(service, push_event(repository) + b" " * 5000).status_code == 413
    assert post(service, body, token=None, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    for reason, count in (("missing", 1), ("wrong-token", 1), ("bad-signature", 1), ("expired", 1),
                          ("too-large", 1), ("malformed-header", 1)):
        assert metric(service, "syncagent_events_rejected_total", f'reason="{reason}"') == count, reason
    assert service.journal.event_count() == 0 and service.journal.pending() == []
    assert service.queue.depth() == 0 and service.journal.pass_count() == 0
    assert not (tmp_path / "dst" / "docker").exists()
    valid = jwt.encode({"iss": "primary", "aud": "syncagent", "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    assert post(service, body, token=valid).status_code == 200, "the same body with good credentials is accepted"
    assert poll(lambda: dest_tags(tmp_path, repository) == tree.tags[repository])


def test_authenticated_garbage_is_answered_2xx_so_the_registry_does_not_retry_it_forever(tmp_path, tree, start_service):
    service = start_service()
    assert post(service, b"{not json").status_code == 200
    assert post(service, push_event(tree.repositories[0]), content_type="text/plain").status_code == 200
    invalid = post(service, push_event("../../etc"))
    assert invalid.status_code == 200 and invalid.json()["rejected"] == 1
    assert metric(service, "syncagent_events_rejected_total", 'reason="malformed"') == 2
    assert metric(service, "syncagent_events_rejected_total", 'reason="invalid-name"') == 1
    assert service.journal.event_count() == 0 and not (tmp_path / "dst" / "docker").exists()


def test_event_is_journaled_before_it_is_acknowledged(tmp_path, tree, start_service):
    service = start_service()
    service.queue.close()  # no worker will take anything: the journal alone holds the work
    repository = tree.repositories[1]
    assert post(service, push_event(repository, "v1")).status_code == 200
    assert [row.repository for row in service.journal.pending()] == [repository]


def test_health_and_liveness(tmp_path, tree, start_service):
    service = start_service(reconcile_interval=3600.0, reconcile_at_start=True)
    assert requests.get(url(service, "/livez"), timeout=5).status_code == 200
    health = poll(lambda: (r := requests.get(url(service, "/healthz"), timeout=5)).status_code == 200 and r.json())
    assert health and health["checks"]["source"]["ok"] and health["checks"]["reconcile"]["ok"]
    assert all(dest_tags(tmp_path, r) == tree.tags[r] for r in tree.repositories), "the start-up reconcile synced everything"
    assert metric(service, "syncagent_last_reconcile_timestamp_seconds") > 0


def test_not_ready_when_the_source_is_unreachable(tmp_path, start_service):
    service = start_service(source=str(tmp_path / "missing"), reconcile_interval=0.0, notifications=True)
    health = poll(lambda: (r := requests.get(url(service, "/healthz"), timeout=5)).json()["checks"]["source"]["detail"]
                  != "not probed yet" and (r.status_code, r.json()))
    assert health[0] == 503 and not health[1]["checks"]["source"]["ok"] and not health[1]["ready"]


def test_a_burst_of_events_for_one_repository_makes_few_passes(tmp_path, tree, start_service):
    service = start_service(settle=0.3, max_delay=2.0)
    repository = tree.repositories[2]
    for i in range(10):
        assert post(service, push_event(repository, f"v{i % 2}")).status_code == 200
    assert poll(lambda: dest_tags(tmp_path, repository) == tree.tags[repository])
    assert poll(lambda: service.queue.depth() == 0 and service.queue.running() == 0)
    assert service.journal.pass_count(repository) <= 2


def test_fs_events_alone(tmp_path, tree, start_service):
    service = start_service(notifications=False, fs_events="on", reconcile_at_start=False)
    assert poll(lambda: service.watcher is not None and service.watcher.watching.is_set())
    writer = TreeWriter(FilesystemBackend(tmp_path / "src"))
    digest, _ = writer.image("fresh/app", [b"layer-one", b"layer-two"], tag="v9")
    assert poll(lambda: dest_tags(tmp_path, "fresh/app") == {"v9": str(digest)})
    assert all(poll(lambda r=r: dest_tags(tmp_path, r) == tree.tags[r]) for r in tree.repositories), (
        "without a reconcile, the watch queues what is already there when it starts"
    )


def test_reconcile_alone(tmp_path, tree, start_service):
    start_service(notifications=False, fs_events="off", reconcile_interval=0.3, reconcile_at_start=False)
    writer = TreeWriter(FilesystemBackend(tmp_path / "src"))
    digest, _ = writer.image("late/app", [b"layer"], tag="v1")
    assert poll(lambda: dest_tags(tmp_path, "late/app") == {"v1": str(digest)})
    assert all(poll(lambda r=r: dest_tags(tmp_path, r) == tree.tags[r]) for r in tree.repositories)


def run_cli(tmp_path, *extra, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, "SYNCAGENT_TOKEN": TOKEN, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "syncagent.cli.watch", str(tmp_path / "src"), str(tmp_path / "dst"),
         "--journal", str(tmp_path / "cli.sqlite3"), "--listen", f"127.0.0.1:{extra[0]}", *extra[1:]],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_stops_cleanly_with_exit_0(tmp_path, tree):
    port = free_port()
    process = run_cli(tmp_path, port, "--reconcile-interval", "1h", "--fs-events", "off")
    try:
        assert poll(lambda: _get(f"http://127.0.0.1:{port}/livez") == 200, timeout=20)
        assert poll(lambda: all(dest_tags(tmp_path, r) == tree.tags[r] for r in tree.repositories), timeout=20)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "stopped" in output and TOKEN not in output, "the token is never logged"


def test_configuration_errors_exit_2(tmp_path):
    no_auth = subprocess.run(
        [sys.executable, "-m", "syncagent.cli.watch", str(tmp_path / "src"), str(tmp_path / "dst"),
         "--journal", str(tmp_path / "j.sqlite3")],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("SYNCAGENT_")},
        capture_output=True, text=True, timeout=30,
    )
    assert no_auth.returncode == 2 and "credentials" in no_auth.stderr


def _get(address: str) -> int | None:
    try:
        return requests.get(address, timeout=2).status_code
    except requests.RequestException:
        return None


def test_journal_resumes_acknowledged_work_after_kill_9(tmp_path, tree):
    """Events acknowledged while the destination could not be written are done after kill -9 and a restart."""
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "docker").write_text("not a directory: every write fails")  # the destination is broken
    port = free_port()
    repository = tree.repositories[0]
    process = run_cli(tmp_path, port, "--reconcile-interval", "0", "--reconcile-at-start", "false", "--fs-events", "off",
                      "--retry-base", "30s")
    try:
        assert poll(lambda: _get(f"http://127.0.0.1:{port}/livez") == 200, timeout=20)
        response = requests.post(f"http://127.0.0.1:{port}/events", data=push_event(repository),
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": EVENTS}, timeout=10)
        assert response.status_code == 200
        def failed() -> bool:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return any(line.startswith(('syncagent_passes_total{result="problems"}', 'syncagent_passes_total{result="error"}'))
                       and float(line.split()[-1]) >= 1 for line in text.splitlines())

        assert poll(failed, timeout=30), "the pass must have failed (and been recorded) before the kill"
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    journal = Journal(tmp_path / "cli.sqlite3")
    try:
        assert [row.repository for row in journal.pending()] == [repository]
    finally:
        journal.close()
    (tmp_path / "dst" / "docker").unlink()  # repaired; restart with no event source but the journal
    process = run_cli(tmp_path, port, "--reconcile-interval", "0", "--reconcile-at-start", "false", "--fs-events", "off")
    try:
        assert poll(lambda: dest_tags(tmp_path, repository) == tree.tags[repository], timeout=20)
        assert dest_tags(tmp_path, tree.repositories[1]) == {}
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0


class BlockingEngine:
    """Stands in for the engine: a pass that runs until released or cancelled."""

    release = None
    started = None

    def __init__(self, source, dest, options, report) -> None:
        import threading

        self.cancelled = threading.Event()
        self.report = report

    def cancel(self) -> None:
        self.cancelled.set()

    def sync_repository(self, repository: str, **_) -> None:
        from syncagent.sync.transfer import Cancelled

        BlockingEngine.started.set()
        while not BlockingEngine.release.is_set():
            if self.cancelled.wait(0.01):
                raise Cancelled()


@pytest.fixture
def blocking_engine(monkeypatch):
    import threading

    BlockingEngine.release, BlockingEngine.started = threading.Event(), threading.Event()
    monkeypatch.setattr("syncagent.sidecar.service.Engine", BlockingEngine)
    yield BlockingEngine
    BlockingEngine.release.set()


def test_stop_lets_a_running_pass_finish(tmp_path, tree, start_service, blocking_engine):
    import threading

    service = start_service(shutdown_grace=30.0)
    assert post(service, push_event(tree.repositories[0])).status_code == 200
    assert blocking_engine.started.wait(10)
    service.request_stop()
    stopper = threading.Thread(target=service.shutdown)
    stopper.start()
    assert post(service, push_event(tree.repositories[1])).status_code == 503, "no new work while stopping"
    assert not service.stopped.wait(0.3), "shutdown waits for the running pass"
    blocking_engine.release.set()
    stopper.join(10)
    assert service.stopped.is_set()
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        assert journal.pending() == [] and journal.pass_count(tree.repositories[0]) == 1
    finally:
        journal.close()


def test_stop_abandons_a_pass_that_outlives_the_grace_period_and_keeps_its_work(tmp_path, tree, start_service,
                                                                                 blocking_engine):
    service = start_service(shutdown_grace=0.2)
    assert post(service, push_event(tree.repositories[0])).status_code == 200
    assert blocking_engine.started.wait(10)
    service.request_stop()
    service.shutdown()
    assert service.stopped.is_set()
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        assert [row.repository for row in journal.pending()] == [tree.repositories[0]], "resumed at the next start"
        assert journal.pass_count() == 0
    finally:
        journal.close()


def test_a_notification_that_outruns_the_tag_write_is_followed_up(tmp_path, tree, start_service):
    """Distribution sends the push event after storing the manifest and before writing the tag's links."""
    service = start_service()
    writer = TreeWriter(FilesystemBackend(tmp_path / "src"))
    digest, _ = writer.image("race/app", [b"layer-a", b"layer-b"])  # manifest stored, no tag yet
    body = json.dumps({"events": [{"action": "push", "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": "race/app", "tag": "v1",
        "digest": str(digest)}}]}).encode()
    assert post(service, body).status_code == 200
    assert poll(lambda: service.journal.pass_count("race/app") >= 1), "a first pass finds no tag"
    assert dest_tags(tmp_path, "race/app") == {}
    writer.tag("race/app", "v1", digest)  # the registry writes the tag now; no further event comes
    assert poll(lambda: dest_tags(tmp_path, "race/app") == {"v1": str(digest)})


def test_reconcile_with_delete_empties_repositories_gone_from_the_source(tmp_path, tree, start_service):
    import shutil

    service = start_service(notifications=False, reconcile_interval=0.0, delete=True)
    assert service.reconcile_once()
    assert all(dest_tags(tmp_path, r) == tree.tags[r] for r in tree.repositories)
    gone = tree.repositories[0]
    shutil.rmtree(tmp_path / "src" / "docker/registry/v2/repositories" / gone)
    assert service.reconcile_once()
    assert dest_tags(tmp_path, gone) == {}
    assert all(dest_tags(tmp_path, r) == tree.tags[r] for r in tree.repositories[1:])


def test_reconcile_refuses_to_empty_the_destination_when_the_source_is_empty(tmp_path, tree, start_service):
    import shutil

    service = start_service(notifications=False, reconcile_interval=0.0, delete=True)
    assert service.reconcile_once()
    shutil.rmtree(tmp_path / "src" / "docker/registry/v2/repositories")
    (tmp_path / "src" / "docker/registry/v2/repositories").mkdir()
    service.reconcile_once()
    assert all(dest_tags(tmp_path, r) == tree.tags[r] for r in tree.repositories)
    assert service.metrics.errors.labels("delete-refused")._value.get() >= 1


def test_a_clean_reconcile_writes_the_history_links_a_dead_sync_left_and_clears_its_record(tmp_path, tree, start_service):
    from syncagent.sync.engine import Engine, SyncOptions
    from syncagent.sync.layout import Digest, TagIndexLink, key_of
    from syncagent.sync.records import RECORDS_PREFIX

    source, dest = FilesystemBackend(tmp_path / "src"), FilesystemBackend(tmp_path / "dst")
    assert Engine(source, dest, SyncOptions()).run().ok
    lost = [key_of(TagIndexLink(r, t, Digest.parse(d))) for r in tree.repositories for t, d in tree.tags[r].items()][::2]
    for key in lost:
        dest.delete(key)
    plant_dead_record(dest)  # as a killed one-shot `syncagent sync` on another host leaves it

    service = start_service(notifications=False, reconcile_interval=0.0)
    assert service.reconcile_once()
    assert all(dest.exists(key) for key in lost)
    assert [info.key for info in dest.iter_objects(RECORDS_PREFIX)] == []


def test_a_reconcile_keeps_the_records_until_every_history_check_ended(tmp_path, tree, start_service):
    from syncagent.sync.engine import Engine, SyncOptions
    from syncagent.sync.layout import Digest, TagIndexLink, key_of
    from syncagent.sync.records import RECORDS_PREFIX

    source, dest = FilesystemBackend(tmp_path / "src"), FilesystemBackend(tmp_path / "dst")
    assert Engine(source, dest, SyncOptions()).run().ok
    planted = plant_dead_record(dest)
    # An unrelated problem (a tag whose layer is missing at the source) does not keep the record ...
    TreeWriter(source).image(tree.repositories[0], [b"a layer that goes missing"], tag="broken")
    source.delete(next(i.key for i in source.iter_objects("docker/registry/v2/blobs/")
                       if source.read_bytes(i.key) == b"a layer that goes missing"))
    # ... a history link that cannot be written does.
    repository, (tag, digest) = tree.repositories[1], next(iter(tree.tags[tree.repositories[1]].items()))
    blocked = key_of(TagIndexLink(repository, tag, Digest.parse(digest)))
    dest.delete(blocked)
    (tmp_path / "dst" / blocked / "in-the-way").mkdir(parents=True)
    service = start_service(notifications=False, reconcile_interval=0.0)
    assert not service.reconcile_once()
    assert planted in [info.key for info in dest.iter_objects(RECORDS_PREFIX)]  # with the failed pass's own
    import shutil

    shutil.rmtree(tmp_path / "dst" / blocked)
    service.reconcile_once()  # still not clean (the broken tag), but every history check ended
    assert dest.exists(blocked)
    assert [info.key for info in dest.iter_objects(RECORDS_PREFIX)] == []


def plant_dead_record(dest) -> str:
    from syncagent.sync.records import RECORDS_PREFIX

    key = f"{RECORDS_PREFIX}dead.json"
    gone = time.time() - 3600
    dest.put_bytes(key, json.dumps({"scope": ["*"], "host": "another-host", "boot": "b", "pidns": "1", "pid": 1, "start": "1",
                                    "started": gone, "renewed": gone}).encode())
    return key


def test_without_a_periodic_reconcile_the_sidecar_still_reads_new_records(tmp_path, tree, start_service, monkeypatch):
    from syncagent.sync.layout import Digest, TagIndexLink, key_of

    monkeypatch.setattr("syncagent.sidecar.service.UNFINISHED_TTL", 0.0)  # read again at every pass
    service = start_service()  # notifications only: no reconcile ever
    repository = tree.repositories[0]
    assert post(service, push_event(repository)).status_code == 200
    assert poll(lambda: dest_tags(tmp_path, repository) == tree.tags[repository])
    assert poll(lambda: service.journal.pass_count(repository) >= 1)
    dest = FilesystemBackend(tmp_path / "dst")
    tag, digest = next(iter(tree.tags[repository].items()))
    lost = key_of(TagIndexLink(repository, tag, Digest.parse(digest)))
    dest.delete(lost)
    plant_dead_record(dest)  # a one-shot sync died meanwhile
    assert post(service, push_event(repository)).status_code == 200
    assert poll(lambda: dest.exists(lost)), "the next pass over the repository wrote the history link"
    assert poll(lambda: metric(service, "syncagent_history_repaired_total") == 1)


def test_file_events_are_refused_for_a_source_not_on_a_local_filesystem(tmp_path):
    """An S3 source has a 'root' too (its prefix): it must not be taken for a directory to watch."""
    from backends.memory import MemoryBackend
    from syncagent.sidecar.config import ConfigError

    config = replace(WatchConfig(), source="memory://primary", destination=str(tmp_path / "dst"), listen="",
                     journal=str(tmp_path / "journal.sqlite3"), notifications=False, fs_events="on")
    with pytest.raises(ConfigError, match="not on a local filesystem"):
        WatchService(config, source=MemoryBackend("primary"))
    assert not (tmp_path / "journal.sqlite3").exists()
