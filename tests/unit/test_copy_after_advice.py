"""--blobs external without --copy-after: a first run into a destination without blob data, and blobs that
never arrived, make the command say what to do (stderr, the summary, a finding in --json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.sync.replication import copy_after_advice
from syncagent.sync.report import Problem
from syncagent.testing.synthetic import TreeWriter

ROOT = Path(__file__).resolve().parents[2]


def syncagent(*args):
    return subprocess.run([sys.executable, "-m", "syncagent", *map(str, args)], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture
def source(tmp_path) -> Path:
    TreeWriter(FilesystemBackend(tmp_path / "src")).image("app", [b"written before the replication rule"], tag="v1")
    return tmp_path / "src"


def test_a_first_run_whose_blobs_never_arrive_suggests_copy_after(source, tmp_path):
    done = syncagent("sync", source, tmp_path / "dst", "--blobs", "external", "--external-timeout", "0.5s", "--json")

    assert done.returncode == 1
    assert "holds no blob data yet" in done.stderr and "--copy-after" in done.stderr
    report = json.loads(done.stdout)
    assert {p["kind"] for p in report["problems"]} >= {"blob-not-replicated", "tag-not-published"}
    advice = [f for f in report["findings"] if f["kind"] == "copy-after-suggested"]
    assert len(advice) == 1 and "never arrived" in advice[0]["reason"] and "--copy-after" in advice[0]["reason"]

    text = syncagent("sync", source, tmp_path / "dst", "--blobs", "external", "--external-timeout", "0.5s")
    assert text.returncode == 1
    hints = [line for line in text.stdout.splitlines() if line.startswith("hint: ")]
    assert len(hints) == 1 and "never arrived" in hints[0] and "--copy-after" in hints[0], text.stdout


def test_copy_after_copies_what_never_arrives_and_nothing_is_suggested(source, tmp_path):
    done = syncagent("sync", source, tmp_path / "dst", "--blobs", "external", "--copy-after", "0.2s", "--json")

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["blobs_copied_after_wait"] == 3 and report["tags_published"] == 1
    assert "findings" not in report and "--copy-after" not in done.stderr


def test_advice_only_when_blobs_did_not_arrive_or_on_a_first_run():
    stuck = Problem("blob-not-replicated", "waited 900 s for the storage's replication", digest="sha256:" + "a" * 64)
    other = Problem("tag-not-published", "blob sha256:...: missing")
    assert copy_after_advice([other], first_run=False) is None
    assert "1 blob(s) never arrived" in copy_after_advice([stuck, other], first_run=False).reason
    assert "holds no blob data yet" in copy_after_advice([], first_run=True).reason
    assert "never arrived" in copy_after_advice([stuck], first_run=True).reason, "what happened beats what may"


def test_no_first_run_advice_when_the_source_holds_no_blobs_either(tmp_path):
    empty = tmp_path / "src"
    (empty / "docker" / "registry" / "v2").mkdir(parents=True)
    done = syncagent("sync", empty, tmp_path / "dst", "--blobs", "external", "--json")
    assert done.returncode == 0 and "--copy-after" not in done.stderr
