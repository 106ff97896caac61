"""A source that cannot be read: the run exits 2 naming it, and writes nothing at all to the destination.

Nothing -- not the replica marker, not the filesystem backend's staging
directory, not a pass record: a mistyped source must not turn an empty
directory or bucket into something that looks like a replica.
"""

from __future__ import annotations

import uuid

import pytest

from tests.faults.harness import run_syncagent

pytestmark = pytest.mark.faults


def assert_source_unreadable(outcome) -> None:
    """A source that does not exist is a configuration error, found before anything else runs."""
    outcome.assert_no_traceback()
    assert outcome.returncode == 2, outcome.describe()
    assert "does not exist" in outcome.stderr, outcome.describe()


def test_a_missing_source_directory_creates_nothing_at_the_destination(tmp_path):
    dest = tmp_path / "replica"
    assert_source_unreadable(run_syncagent("sync", tmp_path / "no-such-registry", dest, "--json"))
    assert not dest.exists()

    dest.mkdir()
    assert_source_unreadable(run_syncagent("sync", tmp_path / "no-such-registry", dest, "--json"))
    assert list(dest.iterdir()) == []


@pytest.mark.ceph
def test_a_missing_source_bucket_leaves_the_destination_bucket_empty(tmp_path, s3_credentials, s3_destinations):
    from tests.support.fixtures_backend_s3 import rgw_url

    missing = rgw_url(s3_credentials, f"syncagent-faults-absent-{uuid.uuid4().hex[:8]}", "registry")
    dest = tmp_path / "replica"
    assert_source_unreadable(run_syncagent("sync", missing, dest, "--json"))
    assert not dest.exists()

    bucket = s3_destinations()
    assert_source_unreadable(run_syncagent("sync", tmp_path / "no-such-registry", bucket.url, "--json"))
    listed = bucket.client.list_object_versions(Bucket=bucket.bucket)
    assert listed.get("Versions", []) == [] and listed.get("DeleteMarkers", []) == []
