"""Incomplete uploads (the optional Leftovers ability): reported by verify, aborted by repair when old enough.

A memory backend with the ability stands in for S3 here; on real RGW (multipart
uploads left by boto3, the CLI's ``--abort-uploads-older-than``): tests/e2e/test_s3_faults.py.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from backends import IncompleteUpload, leftovers_of
from backends.memory import MemoryBackend
from syncagent.cli import _duration, main
from syncagent.sync.report import Report
from syncagent.testing.synthetic import TreeWriter
from syncagent.check.verify import abort_incomplete_uploads, verify_backend

V2 = "docker/registry/v2"


class UploadsMemory(MemoryBackend):
    """A memory backend that declares and implements Leftovers over a list of uploads."""

    def __init__(self, *uploads: IncompleteUpload, declared: bool = True) -> None:
        super().__init__()
        self.capabilities = replace(self.capabilities, incomplete_uploads=declared)
        self.uploads = list(uploads)

    def iter_incomplete_uploads(self, prefix):
        return iter([u for u in self.uploads if u.key.startswith(prefix)])

    def abort_incomplete_upload(self, upload):
        self.uploads.remove(upload)


def upload(key: str, age: timedelta, size: int = 5 * 1024 * 1024) -> IncompleteUpload:
    """An upload started ``age`` before now (now: when the test runs, not when the module loaded)."""
    return IncompleteUpload(key, f"id-{key.rsplit('/', 2)[-2][:8]}-{int(age.total_seconds())}", datetime.now(timezone.utc) - age, size)


@pytest.fixture
def uploads():
    """An old blob upload, a young one, and an old upload session of a registry's own."""
    return (
        upload(f"{V2}/blobs/sha256/ab/{'ab' * 32}/data", timedelta(days=3)),
        upload(f"{V2}/blobs/sha256/cd/{'cd' * 32}/data", timedelta(minutes=5), size=0),
        upload(f"{V2}/repositories/app/_uploads/0f0f/data", timedelta(days=9)),
    )


def test_verify_reports_incomplete_uploads_as_findings_with_bytes_and_age(uploads):
    old_blob, young_blob, session = uploads
    target = UploadsMemory(*uploads)
    TreeWriter(target).image("app", [b"layer"], tag="v1")
    report = verify_backend(target)
    assert report.ok
    assert report.counters["incomplete_uploads"] == 3
    assert report.counters["incomplete_upload_bytes"] == 2 * 5 * 1024 * 1024
    found = {f.key: f for f in report.findings if f.kind == "incomplete-upload"}
    assert set(found) == {old_blob.key, young_blob.key, session.key}
    assert found[old_blob.key].reason == f"upload {old_blob.upload_id} holds 5242880 bytes, started 3.0 d ago"
    assert found[young_blob.key].reason.endswith("started 5.0 min ago")
    assert found[session.key].repository == "app"

    only_other = verify_backend(target, repositories=lambda name: name != "app")
    assert {f.key for f in only_other.findings if f.kind == "incomplete-upload"} == {old_blob.key, young_blob.key}


def test_the_ability_is_taken_from_the_declaration_only(uploads):
    old_blob = uploads[0]
    assert leftovers_of(UploadsMemory(old_blob)) is not None
    assert leftovers_of(UploadsMemory(old_blob, declared=False)) is None
    assert leftovers_of(MemoryBackend()) is None
    assert verify_backend(UploadsMemory(old_blob, declared=False)).counters.get("incomplete_uploads", 0) == 0


def test_repair_aborts_only_uploads_older_than_the_threshold_and_never_a_registry_session(uploads):
    old_blob, young_blob, session = uploads
    target = UploadsMemory(*uploads)
    report = Report()
    abort_incomplete_uploads(target, 24 * 3600, report)
    assert target.uploads == [young_blob, session]
    assert (report.counters["uploads_aborted"], report.counters["upload_bytes_freed"], report.counters["uploads_kept"]) == (1, 5242880, 2)

    report = Report()
    abort_incomplete_uploads(target, 0, report)
    assert target.uploads == [session]
    assert report.counters["uploads_aborted"] == 1 and report.ok


@pytest.mark.parametrize("text, seconds", [("0", 0), ("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("1.5h", 5400), ("2d", 172800)])
def test_durations(text, seconds):
    assert _duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "1w", "soon"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _duration(text)


def test_the_age_option_needs_repair(capsys):
    assert main(["verify", "memory://x", "--abort-uploads-older-than", "1h"]) == 2
    assert "--abort-uploads-older-than needs --repair" in capsys.readouterr().err
