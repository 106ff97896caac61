"""A destination with no room: a filesystem that fills up (a tmpfs mounted by the test), a full RGW.

Whatever fills up, the run ends with exit status 1 and ``write-failed``
problems naming what could not be written, in the text report and in
``--json``; no traceback; what was published before keeps the invariant; and
once there is room again, the same command completes. A destination that is
full from the start fails on the replica marker, the first write of a pass:
nothing is published.
"""

from __future__ import annotations

import errno
import os
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest

from tests.faults.conftest import own_ceph_cluster
from tests.faults.harness import InvariantSampler, SyncagentProcess, assert_in_sync, run_syncagent
from tests.faults.destinations import FilesystemDestination
from tests.support.fixtures_backend_s3 import rgw_url

pytestmark = pytest.mark.faults

MARKER = ".syncagent/replica.json"


def fill(directory) -> None:
    """Write zeros into ``directory/filler`` until the filesystem is full."""
    block = bytes(64 * 1024)
    with open(directory / "filler", "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def assert_marker_refused(outcome) -> None:
    """Exit 1 and one problem: the replica marker could not be written."""
    outcome.assert_no_traceback()
    assert outcome.returncode == 1, outcome.describe()
    problems = outcome.summary()["problems"]
    assert [(p["kind"], p["key"]) for p in problems] == [("write-failed", MARKER)], outcome.describe()
    assert problems[0]["reason"].startswith("cannot write the replica marker"), outcome.describe()
    summary = outcome.summary()
    assert (summary["blobs_copied"], summary["links_written"], summary["tags_published"]) == (0, 0, 0), outcome.describe()


def test_a_fresh_destination_on_a_full_filesystem_fails_on_the_marker_and_publishes_nothing(tmpfs, source_tree):
    mount = tmpfs("1m")
    fill(mount.path)
    dest = mount.path / "replica"

    assert_marker_refused(run_syncagent("sync", source_tree.root, dest, "--json"))
    text = run_syncagent("sync", source_tree.root, dest)
    text.assert_no_traceback()
    assert text.returncode == 1, text.describe()
    assert f"write-failed       {MARKER}  cannot write the replica marker" in text.stdout, text.describe()
    assert not (dest / "docker").exists() and not (dest / MARKER).exists()

    (mount.path / "filler").unlink()
    mount.resize("64m")
    completed = run_syncagent("sync", source_tree.root, dest, "--json")
    assert completed.returncode == 0, completed.describe()
    assert (dest / MARKER).is_file()
    assert_in_sync(str(source_tree.root), str(dest))


def test_a_destination_filling_up_mid_sync_fails_cleanly_and_completes_once_enlarged(tmpfs, source_tree):
    mount = tmpfs("12m")  # the tree holds 31 MiB: its 16 MiB blob cannot fit
    dest = FilesystemDestination(mount.path / "replica")
    with InvariantSampler(dest.open) as sampler:
        # One write at a time, so that what fits does not depend on which writes overlap: with more, the
        # 16 MiB and 9 MiB blobs (the first two repositories) can be in flight together, take the space
        # every other write needs, and leave nothing published (1 run in 10 failed so, at 64ef77a too).
        full = SyncagentProcess(["sync", str(source_tree.root), dest.url, "--json", "--jobs", "1"]).finish()
        sampler.check("after the destination filled up")
        full.assert_no_traceback()
        assert full.returncode == 1, full.describe()
        summary = full.summary()
        failed = [p for p in summary["problems"] if p["kind"] == "write-failed"]
        assert failed and all("No space left on device" in p["reason"] for p in failed), full.describe()
        assert summary["tags_published"] > 0, "nothing fit: the tree should partly fit in the tmpfs\n" + full.describe()
        assert {p["kind"] for p in summary["problems"]} <= {"write-failed", "tag-not-published", "revision-not-published",
                                                            "pass-record-failed"}, full.describe()
        text = run_syncagent("sync", source_tree.root, dest.url)
        text.assert_no_traceback()
        assert text.returncode == 1 and "write-failed" in text.stdout, text.describe()

        mount.resize("128m")
        completed = run_syncagent("sync", source_tree.root, dest.url, "--json")
        assert completed.returncode == 0 and completed.summary()["problems"] == [], completed.describe()
        sampler.check("after completion")
    assert sampler.violations == [] and sampler.unanswered == [], "\n".join(sampler.violations + sampler.unanswered)
    assert dest.leftovers() == []
    assert_in_sync(str(source_tree.root), dest.url)


@pytest.mark.ceph
def test_a_fresh_destination_bucket_over_its_quota_fails_on_the_marker(ceph_cluster, s3_destinations, source_tree):
    """RGW answers a bucket over its quota at once (403 QuotaExceeded); the full cluster of the long
    variant below answers nothing until the client gives up."""
    dest = s3_destinations()
    ceph_cluster.radosgw_admin("quota", "set", "--quota-scope=bucket", f"--bucket={dest.bucket}", "--max-size=1")
    ceph_cluster.radosgw_admin("quota", "enable", "--quota-scope=bucket", f"--bucket={dest.bucket}")
    assert_marker_refused(run_syncagent("sync", source_tree.root, dest.url, "--json"))
    assert dest.objects() == 0 and dest.blob_copies() == {} and dest.leftovers() == []

    ceph_cluster.radosgw_admin("quota", "disable", "--quota-scope=bucket", f"--bucket={dest.bucket}")
    completed = run_syncagent("sync", source_tree.root, dest.url, "--json")
    assert completed.returncode == 0, completed.describe()
    assert_in_sync(str(source_tree.root), dest.url)


def fill_cluster(cluster, bucket: str) -> int:
    """PUT 4 MiB objects until radosgw stops answering writes (the OSD is full: RADOS pauses them); how many fit."""
    client = boto3.client(
        "s3", endpoint_url=cluster.rgw_endpoint, region_name="us-east-1",
        aws_access_key_id=cluster.access_key, aws_secret_access_key=cluster.secret_key,
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1},
                                      read_timeout=5),
    )
    client.create_bucket(Bucket=bucket)
    block = os.urandom(4 << 20)
    for count in range(10_000):
        try:
            client.put_object(Bucket=bucket, Key=f"filler-{count}", Body=block)
        except botocore.exceptions.ReadTimeoutError:
            return count
    raise AssertionError("the cluster never filled up")


@pytest.mark.ceph
def test_long_a_fresh_destination_on_a_full_ceph_cluster_is_reported_within_the_retry_budget(tmp_path, fault_settings, source_tree, monkeypatch):
    """The campaign's case: RGW in front of a full cluster accepts a PUT and never answers it.

    With the default ``max_attempts=5`` the CRT makes five attempts of about
    30 s each (its throughput monitor ends each one) before the marker's
    write fails: 2 min 45 s. With ``max_attempts=2`` the run must end,
    reported, in about a minute.
    """
    if not fault_settings.long:
        pytest.skip("a long variant (a cluster filled up, a minute of retries): SYNCAGENT_FAULT_LONG=1")
    with own_ceph_cluster(tmp_path, "--memstore-bytes", "256M") as cluster:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", cluster.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", cluster.secret_key)
        boto3.client("s3", endpoint_url=cluster.rgw_endpoint, region_name="us-east-1", aws_access_key_id=cluster.access_key,
                     aws_secret_access_key=cluster.secret_key).create_bucket(Bucket="replica")  # a full cluster creates none
        print(f"{fill_cluster(cluster, 'filler')} objects of 4 MiB filled the cluster")
        url = rgw_url(cluster, "replica", "mirror", max_attempts=2)
        began = time.monotonic()
        outcome = run_syncagent("sync", source_tree.root, url, "--json")
        elapsed = time.monotonic() - began
        print(f"the marker's write failed after {elapsed:.0f} s")
        assert_marker_refused(outcome)
        assert elapsed < 120, outcome.describe()
