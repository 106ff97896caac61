"""syncagent migrate, end to end against real RGW: a registry tree on disk moved into a bucket, with the plan,
passes, progress, the comparison, GO or NO-GO, and the report file."""

from __future__ import annotations

import uuid

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree
from tests.support.fixtures_backend_s3 import rgw_admin_client, rgw_url

pytestmark = [pytest.mark.e2e, pytest.mark.ceph]


@pytest.fixture
def bucket(s3_credentials):
    client = rgw_admin_client(s3_credentials)
    name = f"syncagent-migrate-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    yield rgw_url(s3_credentials, name, "registry")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def test_a_disk_registry_moves_into_a_bucket_with_a_report_and_a_go(tmp_path, bucket, syncagent):
    old = tmp_path / "old"
    tree = write_tree(FilesystemBackend(old), TreeShape(repositories=3, tags_per_repository=3, index_every=3,
                                                        layer_bytes=(100, 300_000)))
    bulk_report = tmp_path / "bulk.md"
    bulk = syncagent("migrate", old, bucket, "--report", bulk_report, "--jobs", "4")
    assert bulk.returncode == 0, bulk.describe()
    assert "3 repositories: 9 tags and" in bulk.stdout, bulk.describe()
    assert "== pass 1" in bulk.stdout and "== pass 2" in bulk.stdout and "in sync" in bulk.stdout, bulk.describe()
    report = bulk_report.read_text()
    assert "# Registry migration: bulk phase" in report and "| pass 1 | 9 |" in report and f"| {tree.blobs} |" in report

    writer = TreeWriter(FilesystemBackend(old))
    writer.image("app0", [b"pushed during the bulk phase"], tag="late")
    final_report = tmp_path / "final.md"
    final = syncagent("migrate", old, bucket, "--final", "--report", final_report)
    assert final.returncode == 0, final.describe()
    assert "GO:" in final.stdout and "NO-GO" not in final.stdout, final.describe()
    text = final_report.read_text()
    assert "verdict: **GO**" in text and "| final pass (with deletes) | 1 |" in text
    assert "Nothing: every tag and revision of the source is on the destination, whole." in text


def test_damage_at_the_source_is_a_no_go_naming_the_tag(tmp_path, bucket, syncagent):
    import hashlib

    from syncagent.sync.layout import BlobData, Digest, key_of

    old = tmp_path / "old"
    write_tree(FilesystemBackend(old), TreeShape(repositories=1, tags_per_repository=1, layer_bytes=(100, 500)))
    TreeWriter(FilesystemBackend(old)).image("app0", [b"rotten layer"], tag="rotten")
    (old / key_of(BlobData(Digest("sha256", hashlib.sha256(b"rotten layer").hexdigest())))).write_bytes(b"bit rot")
    final_report = tmp_path / "final.md"
    final = syncagent("migrate", old, bucket, "--final", "--report", final_report)
    assert final.returncode == 1, final.describe()
    assert "NO-GO" in final.stdout and "app0:rotten" in final.stdout, final.describe()
    text = final_report.read_text()
    assert "verdict: **NO-GO**" in text and "`digest-mismatch`" in text and "app0:rotten" in text
