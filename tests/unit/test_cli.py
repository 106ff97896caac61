"""The command line's contract: exit codes, JSON summary, dry run."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.sync.layout import BlobData, Digest, key_of
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree

ROOT = Path(__file__).resolve().parents[2]


def syncagent(*args):
    return subprocess.run([sys.executable, "-m", "syncagent", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture
def primary(tmp_path):
    write_tree(FilesystemBackend(tmp_path / "primary"), TreeShape(repositories=2, tags_per_repository=2, layer_bytes=(10, 100)))
    return tmp_path / "primary"


def test_sync_json_summary_and_exit_0(primary, tmp_path):
    result = syncagent("sync", str(primary), str(tmp_path / "copy"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tags_published"] == 4
    assert summary["problems"] == []
    assert summary["blobs_copied"] > 0 and summary["bytes_copied"] > 0
    assert syncagent("verify", str(tmp_path / "copy")).returncode == 0


def test_problems_give_exit_1_and_are_named(primary, tmp_path):
    writer = TreeWriter(FilesystemBackend(primary))
    writer.image("app0", [b"payload"], tag="corrupt")
    layer = Digest("sha256", hashlib.sha256(b"payload").hexdigest())
    (primary / key_of(BlobData(layer))).write_bytes(b"paylaod")
    result = syncagent("sync", str(primary), str(tmp_path / "copy"), "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert any(p["kind"] == "digest-mismatch" and p["digest"] == str(layer) for p in problems)
    assert any(p["kind"] == "tag-not-published" and p["tag"] == "corrupt" and p["repository"] == "app0" for p in problems)
    human = syncagent("sync", str(primary), str(tmp_path / "copy"))
    assert human.returncode == 1
    assert "app0:corrupt" in human.stdout and str(layer) in human.stdout


def test_usage_and_configuration_errors_exit_2(primary, tmp_path):
    assert syncagent("sync", str(primary)).returncode == 2
    bad_option = syncagent("sync", str(primary), f"file://{tmp_path}/x?nope=1")
    assert bad_option.returncode == 2 and "nope" in bad_option.stderr
    assert syncagent("sync", str(primary), "gopher://x").returncode == 2
    assert syncagent("sync", str(primary), str(tmp_path / "c"), "--jobs", "0").returncode == 2


def test_dry_run_writes_nothing(primary, tmp_path):
    result = syncagent("sync", str(primary), str(tmp_path / "copy"), "--dry-run")
    assert result.returncode == 0
    assert "copy blob sha256:" in result.stdout and "current/link" in result.stdout
    assert not (tmp_path / "copy").exists()


def test_verify_reports_a_broken_destination(primary, tmp_path):
    copy = tmp_path / "copy"
    assert syncagent("sync", str(primary), str(copy)).returncode == 0
    links = sorted(copy.glob("docker/registry/v2/repositories/app0/_layers/sha256/*/link"))
    links[0].unlink()
    result = syncagent("verify", str(copy), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert not report["ok"]
    assert any(p["kind"] == "broken-tag" and "layer link" in p["reason"] for p in report["problems"])


def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(tmp_path):
    import signal
    import time

    source = tmp_path / "big"
    tree = write_tree(FilesystemBackend(source), TreeShape(repositories=4, tags_per_repository=4, layer_bytes=(1 << 20, 2 << 20)))
    copy = tmp_path / "copy"
    process = subprocess.Popen(
        [sys.executable, "-m", "syncagent", "sync", str(source), str(copy), "--jobs", "1", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    blobs = copy / "docker/registry/v2/blobs/sha256"
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if blobs.is_dir() and sum(1 for _ in blobs.glob("*/*/data")) >= 3:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the sync finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert summary["tags_published"] < 16
    assert syncagent("verify", str(copy)).returncode == 0
    again = syncagent("sync", str(source), str(copy), "--json")
    assert again.returncode == 0
    resumed = json.loads(again.stdout)
    assert resumed["tags_published"] + summary["tags_published"] == 16
    assert summary["blobs_copied"] + resumed["blobs_copied"] == tree.blobs


@pytest.mark.parametrize("command", ["sync", "verify", "watch"])
def test_help_renders(command):
    result = syncagent(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "--repo" in result.stdout
    assert "watch" in syncagent("--help").stdout


def test_a_request_ceiling_is_a_positive_number(primary, tmp_path):
    ok = syncagent("sync", str(primary), str(tmp_path / "copy"), "--max-requests-per-second", "500")
    assert ok.returncode == 0, ok.stderr
    for bad in ("0", "-1", "fast"):
        refused = syncagent("sync", str(primary), str(tmp_path / "other"), "--max-requests-per-second", bad)
        assert refused.returncode == 2 and "max-requests-per-second" in refused.stderr
