"""Symbolic links planted in a registry tree, through the real command line: each is reported as
``symlink-refused`` naming its key, nothing is read, published or written through it, and nothing
outside the tree shows up in any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.sync.layout import REPOSITORIES_PREFIX, BlobData, TagCurrentLink, key_of
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree

ROOT = Path(__file__).resolve().parents[2]
SECRET = "aws_access_key_id = AKIAPLANTEDSECRET7"


def syncagent(*args):
    result = subprocess.run([sys.executable, "-m", "syncagent", *args], cwd=ROOT, capture_output=True, text=True)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture
def planted(tmp_path):
    """A source with one of each link the fault campaign planted; returns (source, outside, keys)."""
    source, outside = tmp_path / "source", tmp_path / "outside"
    write_tree(FilesystemBackend(source), TreeShape(repositories=2, tags_per_repository=1, layer_bytes=(10, 100)))
    write_tree(FilesystemBackend(outside / "other"), TreeShape(repositories=1, tags_per_repository=1, layer_bytes=(10, 100)))
    (outside / "credentials").write_text(f"[default]\n{SECRET}\n")
    writer = TreeWriter(FilesystemBackend(source))
    writer.image("app0", [b"a layer that will point at /etc/passwd"], tag="leaky")
    leaky_layer = writer.blob(b"a layer that will point at /etc/passwd")
    writer.image("app1", [b"tagged by a link to a credentials file"], tag="creds")
    repositories = source / REPOSITORIES_PREFIX
    (repositories / "evil").symlink_to(outside / "other" / REPOSITORIES_PREFIX / "app0")
    (repositories / "etc").symlink_to("/etc")
    blob = source / key_of(BlobData(leaky_layer))
    blob.unlink()
    blob.symlink_to("/etc/passwd")
    current = source / key_of(TagCurrentLink("app1", "creds"))
    current.unlink()
    current.symlink_to(outside / "credentials")
    keys = {
        REPOSITORIES_PREFIX + "evil",
        REPOSITORIES_PREFIX + "etc",
        key_of(BlobData(leaky_layer)),
        key_of(TagCurrentLink("app1", "creds")),
    }
    return source, outside, keys


def refused(problems: list[dict]) -> list[str]:
    return sorted(p["key"] for p in problems if p["kind"] == "symlink-refused")


def assert_nothing_from_outside(*outputs: str) -> None:
    etc_names = [name for name in os.listdir("/etc") if len(name) > 4]
    for output in outputs:
        assert SECRET not in output and "AKIA" not in output
        assert "root:x:0:0" not in output
        assert "repositories/etc/" not in output
        assert not [name for name in etc_names if f"/{name}" in output]


def test_sync_refuses_every_planted_link_and_publishes_the_rest(planted, tmp_path):
    source, outside, keys = planted
    dest = tmp_path / "dest"
    result = syncagent("sync", str(source), str(dest), "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert set(refused(summary["problems"])) == keys
    blob_problem = next(p for p in summary["problems"] if p["kind"] == "symlink-refused" and "/blobs/" in p["key"])
    assert blob_problem["digest"]
    assert any(p["kind"] == "tag-not-published" and p["tag"] == "leaky" for p in summary["problems"])
    assert summary["tags_published"] == 2  # app0:v0 and app1:v0; not leaky, not creds, nothing of evil
    assert not (dest / REPOSITORIES_PREFIX / "evil").exists() and not (dest / REPOSITORIES_PREFIX / "etc").exists()
    assert not (dest / key_of(TagCurrentLink("app1", "creds"))).exists()
    human = syncagent("sync", str(source), str(dest))
    assert human.returncode == 1 and "symlink-refused" in human.stdout
    assert_nothing_from_outside(result.stdout, result.stderr, human.stdout, human.stderr)


def test_verify_and_verify_against_report_each_link_once(planted, tmp_path):
    source, _, keys = planted
    dest = tmp_path / "dest"
    syncagent("sync", str(source), str(dest))
    outputs = []
    result = syncagent("verify", str(source), "--json")
    outputs += [result.stdout, result.stderr]
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert refused(report["problems"]) == sorted(keys)  # once each, though listings and reads both meet them
    assert any(p["kind"] == "broken-tag" and p["tag"] == "leaky" for p in report["problems"])
    deep = syncagent("verify", str(source), "--deep", "--json")
    outputs += [deep.stdout, deep.stderr]
    assert refused(json.loads(deep.stdout)["problems"]) == sorted(keys)
    against = syncagent("verify", str(source), "--against", str(dest), "--json")
    outputs += [against.stdout, against.stderr]
    assert against.returncode == 1
    assert set(refused(json.loads(against.stdout)["source_problems"])) == {k for k in keys if "/blobs/" not in k}
    for args in (("verify", str(source)), ("verify", str(source), "--against", str(dest))):
        human = syncagent(*args)
        assert human.returncode == 1 and "symlink-refused" in human.stdout
        outputs += [human.stdout, human.stderr]
    assert_nothing_from_outside(*outputs)


def test_a_destination_with_a_symlinked_repository_is_never_written_through(tmp_path):
    source, dest, outside = tmp_path / "source", tmp_path / "dest", tmp_path / "outside"
    write_tree(FilesystemBackend(source), TreeShape(repositories=2, tags_per_repository=2, layer_bytes=(10, 100)))
    (dest / REPOSITORIES_PREFIX).mkdir(parents=True)
    outside.mkdir()
    (dest / REPOSITORIES_PREFIX / "app0").symlink_to(outside)
    result = syncagent("sync", str(source), str(dest), "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert list(outside.iterdir()) == []
    failed = [p for p in summary["problems"] if p["repository"] == "app0"]
    assert failed and all(p["kind"] in ("write-failed", "tag-not-published", "revision-not-published") for p in failed)
    assert any(f"{REPOSITORIES_PREFIX}app0 is a symbolic link" in p["reason"] for p in failed)
    assert summary["tags_published"] == 2  # app1's tags
    verify = syncagent("verify", str(dest), "--json")
    assert refused(json.loads(verify.stdout)["problems"]) == [REPOSITORIES_PREFIX + "app0"]


def test_verify_against_a_destination_with_a_symlinked_history_link_reports_and_repairs_it(tmp_path):
    source, dest, outside = tmp_path / "source", tmp_path / "dest", tmp_path / "outside"
    tree = write_tree(FilesystemBackend(source), TreeShape(repositories=1, tags_per_repository=1, layer_bytes=(10, 100)))
    assert syncagent("sync", str(source), str(dest)).returncode == 0
    (repository, tags), = tree.tags.items()
    (tag, digest), = tags.items()
    from syncagent.sync.layout import Digest, TagIndexLink

    history = dest / key_of(TagIndexLink(repository, tag, Digest.parse(digest)))
    outside.write_text(digest)
    history.unlink()
    history.symlink_to(outside)
    result = syncagent("verify", str(source), "--against", str(dest), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["comparison"]["repositories"][repository]["missing_history"] == [tag]
    assert refused(report["destination"]["problems"]) == [str(history.relative_to(dest))]
    repaired = syncagent("verify", str(source), "--against", str(dest), "--repair", "--json")
    assert repaired.returncode == 0, repaired.stdout
    assert not history.is_symlink() and history.read_text() == digest and outside.read_text() == digest


def test_links_planted_at_a_destinations_keys_are_replaced_by_the_next_sync(tmp_path):
    """A link *at* a key the sync writes is replaced (the rename never follows it); nothing it points to changes."""
    source, dest, outside = tmp_path / "source", tmp_path / "dest", tmp_path / "outside"
    tree = write_tree(FilesystemBackend(source), TreeShape(repositories=1, tags_per_repository=1, layer_bytes=(10, 100)))
    assert syncagent("sync", str(source), str(dest)).returncode == 0
    outside.mkdir()
    planted = []
    for key in sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and "/.syncagent" not in f"/{p.relative_to(dest)}"):
        if key.endswith("/link") or key.endswith("/data"):
            target = outside / f"{len(planted)}"
            target.write_bytes(b"outside, untouched")
            (dest / key).unlink()
            (dest / key).symlink_to(target)
            planted.append(key)
    assert len(planted) > 5
    verify = syncagent("verify", str(dest), "--json")
    assert verify.returncode == 1 and set(refused(json.loads(verify.stdout)["problems"])) == set(planted)
    result = syncagent("sync", str(source), str(dest), "--json")
    assert result.returncode == 0, result.stdout
    assert not any((dest / key).is_symlink() for key in planted)
    assert all(p.read_bytes() == b"outside, untouched" for p in outside.iterdir())
    assert syncagent("verify", str(source), "--against", str(dest)).returncode == 0


def test_no_blob_is_pruned_while_a_symlink_hides_what_the_destination_links(tmp_path):
    source, dest, elsewhere = tmp_path / "source", tmp_path / "dest", tmp_path / "elsewhere"
    tree = write_tree(FilesystemBackend(source), TreeShape(repositories=2, tags_per_repository=1, layer_bytes=(10, 100)))
    assert syncagent("sync", str(source), str(dest)).returncode == 0
    # A repository moved out of the tree and linked back: a registry still serves it from dest's blobs.
    moved = dest / REPOSITORIES_PREFIX / tree.repositories[-1]
    moved.rename(elsewhere)
    moved.symlink_to(elsewhere)
    blobs_before = sorted(p.name for p in (dest / "docker/registry/v2/blobs").rglob("data"))
    result = syncagent("sync", str(source), str(dest), "--delete", "--prune-blobs", "--force", "--json")
    summary = json.loads(result.stdout)
    assert result.returncode == 1
    assert any(p["kind"] == "delete-skipped" and "no blob pruned" in p["reason"] for p in summary["problems"])
    assert summary["blobs_deleted"] == 0
    assert sorted(p.name for p in (dest / "docker/registry/v2/blobs").rglob("data")) == blobs_before
