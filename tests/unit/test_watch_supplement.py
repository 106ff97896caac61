"""The sidecar with blobs = external, in process on filesystem backends: what its metrics and /healthz say
while tags wait for blobs the storage's replication brings, when the rule is too wide, and when the
primary's garbage collection broke a tag (it is taken back and counted).

The storage's replication and the primary's garbage collection are played by
tests/support/replication_doubles.py.
Real registries on a real two-zone Ceph RGW are in tests/e2e/test_supplement.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.sync.layout import BlobData, Digest, key_of
from syncagent.sync.manifest import parse_manifest
from syncagent.sync.replication import CANARY_KEY
from syncagent.testing.synthetic import TreeWriter
from tests.support.fixtures_sidecar import health, metric, poll_until as poll, post_events as post, push_event
from tests.support.replication_doubles import collect_garbage, delete_manifest, replicate_blobs, tags_on


def replicate(tmp_path: Path, *, hold: set[Digest] = frozenset()) -> None:
    replicate_blobs(FilesystemBackend(tmp_path / "src"), FilesystemBackend(tmp_path / "dst"), hold=hold)


def dest_tags(tmp_path: Path, repository: str) -> dict[str, str]:
    return tags_on(FilesystemBackend(tmp_path / "dst"), repository)


@pytest.fixture
def app(tmp_path):
    """app:v0 with a layer of its own ("held" in tests that hold it back), app:v1 with another."""
    writer = TreeWriter(FilesystemBackend(tmp_path / "src"))
    v0, _ = writer.image("app", [b"the layer the replication is slow with"], tag="v0")
    v1, _ = writer.image("app", [b"a small layer"], tag="v1")
    layer = parse_manifest((tmp_path / "src" / key_of(BlobData(v0))).read_bytes()).blobs[-1].digest
    return {"v0": v0, "v1": v1, "held": layer}


def external(sidecar, **overrides):
    return sidecar(**{"blobs": "external", "external_timeout": 60.0, **overrides})


def test_a_tag_waits_for_its_blob_the_others_do_not_and_the_metrics_show_the_wait(tmp_path, app, sidecar):
    replicate(tmp_path, hold={app["held"]})
    service = external(sidecar)
    assert post(service, push_event("app")).status_code == 200

    assert poll(lambda: dest_tags(tmp_path, "app") == {"v1": str(app["v1"])}), "v1 is not held back by v0's blob"
    assert poll(lambda: metric(service, "syncagent_blobs_awaiting") == 1 and metric(service, "syncagent_tags_held_back") == 1)
    status, body = health(service)
    assert status == 200 and body["checks"]["replication"]["ok"] and body["checks"]["replication"]["blobs_awaiting"] == 1

    replicate(tmp_path)

    assert poll(lambda: dest_tags(tmp_path, "app") == {"v0": str(app["v0"]), "v1": str(app["v1"])})
    assert poll(lambda: metric(service, "syncagent_blobs_awaiting") == 0 and metric(service, "syncagent_tags_held_back") == 0)
    assert metric(service, "syncagent_blob_wait_seconds_count") >= 3
    assert metric(service, "syncagent_blobs_copied_total") == 0


def test_healthz_turns_unhealthy_once_the_oldest_wait_passes_the_deadline(tmp_path, app, sidecar):
    replicate(tmp_path, hold={app["held"]})
    service = external(sidecar, external_timeout=0.5, retry_base=0.2, retry_cap=0.5)
    assert post(service, push_event("app")).status_code == 200

    assert poll(lambda: health(service)[0] == 503)
    check = health(service)[1]["checks"]["replication"]
    assert not check["ok"] and check["oldest_wait_seconds"] >= 0.5 and check["blobs_awaiting"] == 1
    assert poll(lambda: metric(service, "syncagent_errors_total", 'kind="blob-not-replicated"') >= 1)

    replicate(tmp_path)
    assert poll(lambda: dest_tags(tmp_path, "app").get("v0") == str(app["v0"]))
    assert poll(lambda: health(service)[0] == 200), "healthy again once the blob has arrived"


def test_a_rule_that_carries_more_than_blobs_shows_in_the_metric_and_healthz(tmp_path, app, sidecar):
    replicate(tmp_path)
    FilesystemBackend(tmp_path / "dst").put_bytes(CANARY_KEY, b"{}")  # what a full mirror brings over
    service = external(sidecar)

    assert poll(lambda: metric(service, "syncagent_replication_too_wide") == 1)
    status, body = health(service)
    assert status == 503 and body["checks"]["replication"]["rule_too_wide"] is True
    assert FilesystemBackend(tmp_path / "src").exists(CANARY_KEY), "the canary is placed at the source"


def test_a_tag_broken_by_the_primarys_garbage_collection_is_taken_back_and_counted(tmp_path, app, sidecar):
    replicate(tmp_path)
    service = external(sidecar)
    assert post(service, push_event("app")).status_code == 200
    assert poll(lambda: set(dest_tags(tmp_path, "app")) == {"v0", "v1"})
    source = FilesystemBackend(tmp_path / "src")
    delete_manifest(source, "app", "v0", app["v0"])
    collect_garbage(source)
    replicate(tmp_path)

    assert post(service, push_event("app", action="delete")).status_code == 200

    assert poll(lambda: dest_tags(tmp_path, "app") == {"v1": str(app["v1"])})
    assert poll(lambda: metric(service, "syncagent_tags_unpublished_total") == 1)
    assert metric(service, "syncagent_revisions_unpublished_total") == 1
    assert metric(service, "syncagent_tags_published_total") == 2
