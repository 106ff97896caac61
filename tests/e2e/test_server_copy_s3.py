"""Server-side copies between two buckets of one RGW (issue 12, point 4), checked before they are visible.

The store copies each blob (UploadPartCopy), syncagent reads and hashes the
source meanwhile, and the upload is completed only when the digest matched and
every copied part's ETag is the MD5 of the same bytes (backends/s3/copies.py).
Here: a sync that copies server-side leaves a destination ``verify --deep``
finds whole; a corrupt source blob is never made visible; a copy whose bytes
differ from what was read (the source replaced meanwhile) is refused; a large
object goes in several parts, each checked; a source reached otherwise (another
endpoint) is streamed.
"""

from __future__ import annotations

import hashlib
import io

import pytest

from backends import TransientError, open_backend
from syncagent.check.compare import compare
from syncagent.check.verify import verify_backend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import BlobData, Digest, key_of
from syncagent.sync.report import Report
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree
from tests.support.fixtures_backend_s3 import backend_factory, rgw_url

pytestmark = [pytest.mark.ceph]


@pytest.fixture
def stores(s3_credentials):
    """Fresh source and destination backends on the session's RGW, copying server-side from 1 byte up."""
    factory = backend_factory(s3_credentials, put_client="crt", server_copy_threshold=1)
    make = next(factory)
    yield make
    next(factory, None)


def layer_keys(tree_backend) -> list[str]:
    return sorted(info.key for info in tree_backend.iter_objects("docker/registry/v2/blobs/") if info.size > 3000)


def test_a_sync_between_buckets_copies_blobs_server_side_and_the_copy_verifies_deep(stores):
    source, dest = stores(), stores()
    write_tree(source.backend, TreeShape(repositories=3, tags_per_repository=2, index_every=2, layer_bytes=(4000, 60_000)))
    report = Engine(source.backend, dest.backend, SyncOptions()).run()
    assert report.ok, report.problems
    copied_server_side = report.counters["blobs_copied_server_side"]
    assert copied_server_side >= len(layer_keys(source.backend)) > 0
    assert dest.backend.requests.counts()["UploadPartCopy"] == copied_server_side
    deep = verify_backend(dest.backend, deep=True)
    assert deep.ok and deep.counters["blobs_hashed"] == report.counters["blobs_copied"]
    assert not compare(source.backend, dest.backend, Report()).differs
    assert dest.leftovers() == []


def test_a_corrupt_source_blob_is_never_made_visible_by_a_server_side_copy(stores):
    source, dest = stores(), stores()
    writer = TreeWriter(source.backend)
    good = b"g" * 9000
    writer.image("app", [good], tag="v1")
    key = key_of(BlobData(Digest("sha256", hashlib.sha256(good).hexdigest())))
    source.backend.put_bytes(key, b"b" * len(good))  # rotten at rest, the same size
    report = Engine(source.backend, dest.backend, SyncOptions()).run()
    assert [p.kind for p in report.problems if p.key == key] == ["digest-mismatch"]
    assert report.counters["tags_published"] == 0
    assert not dest.backend.exists(key)
    assert dest.leftovers() == []


def test_a_copy_whose_bytes_differ_from_what_was_read_is_refused_and_leaves_nothing(stores):
    source, dest = stores(), stores()
    source.backend.put_bytes("objects/a", b"x" * 5000)
    with pytest.raises(TransientError, match="changed meanwhile"):
        dest.backend.copy_from(source.backend, "objects/a", io.BytesIO(b"y" * 5000), size=5000)
    assert not dest.backend.exists("objects/a")
    assert dest.leftovers() == []
    dest.backend.copy_from(source.backend, "objects/a", io.BytesIO(b"x" * 5000), size=5000)
    assert dest.backend.read_bytes("objects/a") == b"x" * 5000


def test_a_large_copy_goes_in_parts_each_checked(stores, monkeypatch):
    from backends.s3 import copies

    monkeypatch.setattr(copies, "COPY_PART_SIZE", 5 * 1024 * 1024)
    source, dest = stores(), stores()
    data = hashlib.sha256(b"seed").digest() * (12 * 1024 * 1024 // 32 + 7)
    source.backend.put_bytes("objects/big", data)
    calls = []
    dest.backend.copy_from(source.backend, "objects/big", io.BytesIO(data), size=len(data),
                           before_commit=lambda: calls.append(dest.backend.exists("objects/big")))
    assert calls == [False]  # not visible when the caller's check ran
    assert dest.backend.requests.counts()["UploadPartCopy"] == 3
    assert hashlib.sha256(dest.backend.read_bytes("objects/big")).digest() == hashlib.sha256(data).digest()
    assert dest.leftovers() == []


def test_only_a_source_on_the_same_endpoint_is_copied_server_side(stores, s3_credentials, s3_fault_proxy):
    source, dest = stores(), stores()
    assert dest.backend.can_copy_from(source.backend, 10)
    bucket = source.backend.bucket
    elsewhere = open_backend(rgw_url(s3_credentials, bucket, endpoint_url=s3_fault_proxy.endpoint))
    try:
        assert not dest.backend.can_copy_from(elsewhere, 10)
    finally:
        elsewhere.close()
    assert not dest.backend.can_copy_from(source.backend, 0)
    streamed = open_backend(rgw_url(s3_credentials, dest.backend.bucket, server_copy="false"))
    try:
        assert not streamed.can_copy_from(source.backend, 10) and not streamed.capabilities.server_copy
    finally:
        streamed.close()
