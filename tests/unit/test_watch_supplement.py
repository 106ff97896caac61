"""The sidecar with blobs = external, in process on filesystem backends: what its metrics and /healthz say
while tags wait for blobs the storage's replication brings, when the rule is too wide, and when the
primary's garbage collection broke a tag (it is taken back and counted).

The storage's replication is played by copying blob files from the source tree to the destination's.
Real registries on a real two-zone Ceph RGW are in tests/e2e/test_supplement.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from backends.filesystem import FilesystemBackend
from syncagent.sync.layout import BlobData, Digest, key_of
from syncagent.sync.manifest import parse_manifest
from syncagent.sync.replication import CANARY_KEY
from syncagent.testing.synthetic import TreeWriter
from tests.unit.test_unpublish import collect_garbage, delete_manifest
from tests.unit.test_watch_service import dest_tags, metric, poll, post, push_event, start_service, url  # noqa: F401

BLOBS = Path("docker/registry/v2/blobs")


def replicate(tmp_path: Path, *, hold: set[Digest] = frozenset()) -> None:
    """Bring the destination's blob files in line with the source's, but for ``hold`` (deletes included)."""
    held = {key_of(BlobData(digest)) for digest in hold}
    source, dest = tmp_path / "src" / BLOBS, tmp_path / "dst" / BLOBS
    present = set()
    for path in source.rglob("data"):
        key = str(path.relative_to(tmp_path / "src"))
        present.add(key)
        target = tmp_path / "dst" / key
        if key not in held and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    for path in list(dest.rglob("data")) if dest.exists() else []:
        if str(path.relative_to(tmp_path / "dst")) not in present:
            path.unlink()


def health(service) -> tuple[int, dict]:
    response = requests.get(url(service, "/healthz"), timeout=5)
    return response.status_code, response.json()


@pytest.fixture
def app(tmp_path):
    """app:v0 with a layer of its own ("held" in tests that hold it back), app:v1 with another."""
    writer = TreeWriter(FilesystemBackend(tmp_path / "src"))
    v0, _ = writer.image("app", [b"the layer the replication is slow with"], tag="v0")
    v1, _ = writer.image("app", [b"a small layer"], tag="v1")
    layer = parse_manifest((tmp_path / "src" / key_of(BlobData(v0))).read_bytes()).blobs[-1].digest
    return {"v0": v0, "v1": v1, "held": layer}


def external(start_service, **overrides):
    return start_service(**{"blobs": "external", "external_timeout": 60.0, **overrides})


def test_a_tag_waits_for_its_blob_the_others_do_not_and_the_metrics_show_the_wait(tmp_path, app, start_service):
    replicate(tmp_path, hold={app["held"]})
    service = external(start_service)
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


def test_healthz_turns_unhealthy_once_the_oldest_wait_passes_the_deadline(tmp_path, app, start_service):
    replicate(tmp_path, hold={app["held"]})
    service = external(start_service, external_timeout=0.5, retry_base=0.2, retry_cap=0.5)
    assert post(service, push_event("app")).status_code == 200

    assert poll(lambda: health(service)[0] == 503)
    check = health(service)[1]["checks"]["replication"]
    assert not check["ok"] and check["oldest_wait_seconds"] >= 0.5 and check["blobs_awaiting"] == 1
    assert poll(lambda: metric(service, "syncagent_errors_total", 'kind="blob-not-replicated"') >= 1)

    replicate(tmp_path)
    assert poll(lambda: dest_tags(tmp_path, "app").get("v0") == str(app["v0"]))
    assert poll(lambda: health(service)[0] == 200), "healthy again once the blob has arrived"


def test_a_rule_that_carries_more_than_blobs_shows_in_the_metric_and_healthz(tmp_path, app, start_service):
    replicate(tmp_path)
    FilesystemBackend(tmp_path / "dst").put_bytes(CANARY_KEY, b"{}")  # what a full mirror brings over
    service = external(start_service)

    assert poll(lambda: metric(service, "syncagent_replication_too_wide") == 1)
    status, body = health(service)
    assert status == 503 and body["checks"]["replication"]["rule_too_wide"] is True
    assert FilesystemBackend(tmp_path / "src").exists(CANARY_KEY), "the canary is placed at the source"


def test_a_tag_broken_by_the_primarys_garbage_collection_is_taken_back_and_counted(tmp_path, app, start_service):
    replicate(tmp_path)
    service = external(start_service)
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
