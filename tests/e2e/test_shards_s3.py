"""Three sharded agents at once against real Ceph RGW equal one unsharded sync (issue 12, point 5).

A generated registry tree (repositories sharing base layers, indexes, untagged
revisions) on a filesystem is synced into one bucket by three ``syncagent sync
--shard I/3`` processes running at the same time, and into another bucket by
one unsharded ``syncagent sync``. Then: every process exited 0; the shards
surveyed disjoint sets of repositories that together are all of them;
``verify SRC --against`` the sharded bucket finds it in sync and its invariant
whole; both buckets hold the same objects (keys, sizes and ETags under
``docker/``, the blobs the shards shared included); no pass record and no
incomplete multipart upload is left behind.
"""

from __future__ import annotations

import uuid

import pytest

from backends import open_backend
from syncagent.sync.shard import Shard
from syncagent.testing.synthetic import TreeShape, write_tree
from tests.support.fixtures_backend_s3 import ROOT, rgw_admin_client, rgw_url

pytestmark = [pytest.mark.e2e, pytest.mark.ceph]

SHARDS = 3


@pytest.fixture
def buckets(s3_credentials):
    client = rgw_admin_client(s3_credentials)
    made = []

    def make() -> str:
        name = f"e2e-shards-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=name)
        made.append(name)
        return name

    yield make
    for bucket in made:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    client.close()


def listing(client, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix):]] = (item["Size"], item["ETag"])
    return found


def test_three_concurrent_shards_equal_one_unsharded_sync(tmp_path, s3_credentials, buckets, syncagent):
    source = tmp_path / "source"
    tree = write_tree(open_backend(f"file://{source}"),
                      TreeShape(repositories=12, tags_per_repository=3, shared_layers=3, layer_bytes=(200, 40_000),
                                index_every=3, untagged_per_repository=1))
    sharded, whole = buckets(), buckets()
    sharded_url, whole_url = rgw_url(s3_credentials, sharded), rgw_url(s3_credentials, whole)

    running = [syncagent.start("sync", source, sharded_url, "--shard", f"{index}/{SHARDS}", "--json") for index in range(SHARDS)]
    results = [process.finish() for process in running]
    for result in results:
        assert result.returncode == 0, result.describe()
    unsharded = syncagent("sync", source, whole_url, "--json")
    assert unsharded.returncode == 0, unsharded.describe()

    surveyed = [result.json()["repositories"] for result in results]
    owned = [sorted(name for name in tree.repositories if Shard(index, SHARDS).owns(name)) for index in range(SHARDS)]
    assert surveyed == [len(names) for names in owned] and all(surveyed)
    assert sum(surveyed) == len(tree.repositories) == unsharded.json()["repositories"]

    check = syncagent("verify", source, "--against", sharded_url, "--json")
    assert check.returncode == 0, check.describe()
    assert check.json()["comparison"]["differs"] is False and check.json()["destination"]["ok"] is True

    client = rgw_admin_client(s3_credentials)
    try:
        objects = listing(client, sharded, f"{ROOT}/docker/")
        assert objects == listing(client, whole, f"{ROOT}/docker/") and len(objects) > 100
        assert listing(client, sharded, f"{ROOT}/.syncagent/passes/") == {}
        assert client.list_multipart_uploads(Bucket=sharded).get("Uploads", []) == []
    finally:
        client.close()
