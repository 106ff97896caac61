"""Keys that are no valid keys (``a//b``, ``a/../b``), as another client can write them on S3:
listed as stored, reported as ``invalid-name`` by sync and verify, never read, written or deleted.

The memory backend stands in for S3 here (``plant`` writes past its key check);
on real RGW: tests/e2e/test_s3_faults.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from backends import check_key
from backends.memory import MemoryBackend
from syncagent.sync.deletes import list_layer_links
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import TagCurrentLink, key_of
from syncagent.testing.synthetic import TreeWriter
from syncagent.check.verify import verify_backend

V2 = "docker/registry/v2"
LINK = b"sha256:" + b"a" * 64

# found by the repository walk of sync and verify, each reported once with the key of the bad name
PLANTED = [
    f"{V2}/repositories/library/../evil/_manifests/tags/v1/current/link",
    f"{V2}/repositories/library//app/_manifests/tags/v1/current/link",
    f"{V2}/repositories/ok/_manifests/tags//current/link",
    f"{V2}/repositories/ok/_manifests/tags/../current/link",
    f"{V2}/repositories/ok/_manifests/revisions/../sha256/link",
]
# not under a name the repository walk reads: only verify's scan of every object sees these
SCANNED = [
    f"{V2}/repositories/ok/_manifests/tags/v1/index/sha256//link",
    f"{V2}/blobs/sha256/ab/../data",
]


class Hinted(MemoryBackend):
    """Listings flagged as carrying MD5 hints (none given): the listing-based reads of discovery."""

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = replace(self.capabilities, listing_md5=True)


@pytest.fixture(params=["plain", "hinted"])
def source(request):
    backend = MemoryBackend() if request.param == "plain" else Hinted()
    TreeWriter(backend).image("ok", [b"a layer"], tag="v1")
    for key in [*PLANTED, *SCANNED]:
        backend.plant(key, LINK)
    return backend


def named(problems, planted: list[str]) -> None:
    """Every problem is an invalid-name, and each planted key has exactly one naming it or its bad part."""
    assert {p.kind for p in problems} == {"invalid-name"}
    assert len(problems) == len(planted), [p.key for p in problems]
    for key in planted:
        assert len([p for p in problems if key == p.key or key.startswith(p.key + "/")]) == 1, key


def test_sync_reports_each_malformed_name_and_writes_nothing_for_it(source):
    dest = MemoryBackend()
    report = Engine(source, dest, SyncOptions(jobs=2)).run()
    named(report.problems, PLANTED)
    assert report.counters["tags_published"] == 1
    assert dest.read_bytes(key_of(TagCurrentLink("ok", "v1"))) == source.read_bytes(key_of(TagCurrentLink("ok", "v1")))
    for info in dest.iter_objects(""):
        check_key(info.key)
        assert "evil" not in info.key


def test_verify_reports_each_malformed_name_once(source):
    report = verify_backend(source)
    named(report.problems, PLANTED + SCANNED)
    assert {p.key for p in report.problems} >= set(SCANNED)
    assert report.counters["tags_whole"] == 1


def test_delete_planning_skips_a_malformed_layers_directory():
    dest = MemoryBackend()
    TreeWriter(dest).image("ok", [b"a layer"], tag="v1")
    dest.plant(f"{V2}/repositories/ok/_layers/../sha256/link", LINK)
    dest.plant(f"{V2}/repositories/ok/_layers//sha256/link", LINK)
    assert len(list_layer_links(dest, "ok")) == 2  # the config and the layer
