"""verify: every kind of damage is found and classified; --against compares; --repair heals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.sync.engine import Engine
from syncagent.sync.layout import BlobData, Digest, LayerLink, TagCurrentLink, key_of
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree

ROOT = Path(__file__).resolve().parents[2]


def syncagent(*args):
    return subprocess.run([sys.executable, "-m", "syncagent", *args], cwd=ROOT, capture_output=True, text=True)


def verify_json(*args):
    result = syncagent("verify", *args, "--json")
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def pair(tmp_path):
    primary, replica = tmp_path / "primary", tmp_path / "replica"
    tree = write_tree(FilesystemBackend(primary), TreeShape(repositories=3, tags_per_repository=2, index_every=2, layer_bytes=(200, 2000)))
    assert Engine(FilesystemBackend(primary), FilesystemBackend(replica)).run().ok
    return primary, replica, tree


def manifest_layers(root: Path, digest: str) -> list[Digest]:
    doc = json.loads((root / key_of(BlobData(Digest.parse(digest)))).read_bytes())
    return [Digest.parse(layer["digest"]) for layer in doc.get("layers", [])]


def test_a_clean_replica_verifies_and_matches(pair):
    primary, replica, _ = pair
    status, report = verify_json(str(replica))
    assert status == 0 and report["ok"] and report["problems"] == []
    assert report["tags_whole"] == 6 and report["unlinked_blobs"] == 0
    status, result = verify_json(str(primary), "--against", str(replica))
    assert status == 0
    assert result["comparison"]["differs"] is False


def plant_damage(primary: Path, replica: Path, tree) -> dict:
    """One of each kind of damage, each in its own place; returns what was planted."""
    app0 = tree.tags["app0"]["v0"]
    missing_blob = manifest_layers(replica, app0)[-1]
    (replica / key_of(BlobData(missing_blob))).unlink()
    one = tree.tags["team1/app1"]["v0"]
    missing_link = manifest_layers(replica, one)[-1]
    (replica / key_of(LayerLink("team1/app1", missing_link))).unlink()
    two = tree.tags["app2"]["v0"]
    corrupt = manifest_layers(replica, two)[-1]
    path = replica / key_of(BlobData(corrupt))
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    empty_link = replica / key_of(TagCurrentLink("app2", "v1"))
    empty_link.write_bytes(b"")
    writer = TreeWriter(FilesystemBackend(primary))
    moved, _ = writer.image("app0", [b"new content for a moved tag"], tag="v1")
    leftover = replica / "docker/registry/v2/repositories/app0/_manifests/tags/v0/current/link.4242.tmp"
    leftover.write_bytes(b"sha256:")
    upload = replica / "docker/registry/v2/repositories/app0/_uploads/0f0f/data"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x" * 1000)
    orphan = TreeWriter(FilesystemBackend(replica)).blob(b"a blob nothing links")
    return {"missing_blob": missing_blob, "missing_link": missing_link, "corrupt": corrupt, "moved": moved, "orphan": orphan}


def test_each_kind_of_damage_is_found_and_repair_fixes_it(pair):
    primary, replica, tree = pair
    planted = plant_damage(primary, replica, tree)

    status, report = verify_json(str(replica))
    assert status == 1
    problems = report["problems"]
    assert any(p["kind"] == "broken-tag" and p["repository"] == "app0" and f"blob {planted['missing_blob']}" in p["reason"] for p in problems)
    assert any(p["kind"] == "broken-tag" and p["repository"] == "team1/app1" and f"layer link {planted['missing_link']}" in p["reason"] for p in problems)
    assert any(p["kind"] == "invalid-link" and p["repository"] == "app2" and p.get("tag") == "v1" for p in problems)
    assert not any(p["kind"] == "digest-mismatch" for p in problems)
    findings = {f["kind"] for f in report["findings"]}
    assert findings == {"temporary-file", "abandoned-upload", "unlinked-blob"}
    unlinked = {f["digest"] for f in report["findings"] if f["kind"] == "unlinked-blob"}
    assert unlinked == {str(planted["orphan"]), str(planted["missing_link"])}
    assert report["unlinked_blobs"] == 2
    assert report["abandoned_uploads"] == 1 and report["upload_bytes"] == 1000 and report["temporary_files"] == 1

    status, deep = verify_json(str(replica), "--deep")
    assert status == 1
    assert [p["digest"] for p in deep["problems"] if p["kind"] == "digest-mismatch"] == [str(planted["corrupt"])]
    assert deep["blobs_hashed"] == deep["blobs"]

    status, against = verify_json(str(primary), "--against", str(replica), "--deep")
    assert status == 1
    repos = against["comparison"]["repositories"]
    assert repos["app0"]["stale_tags"] == [{"tag": "v1", "source": str(planted["moved"]), "destination": tree.tags["app0"]["v1"]}]
    assert repos["app2"]["missing_tags"] == ["v1"]
    assert str(planted["moved"]) in repos["app0"]["missing_revisions"]

    status, repaired = verify_json(str(primary), "--against", str(replica), "--deep", "--repair")
    assert status == 0, json.dumps(repaired, indent=1)
    after = repaired["after_repair"]
    assert after["comparison"]["differs"] is False
    assert after["destination"]["ok"] is True
    assert after["destination"]["problems"] == []
    status, final = verify_json(str(primary), "--against", str(replica), "--deep")
    assert status == 0


def test_against_reports_extra_tags_without_failing_repair(pair):
    primary, replica, tree = pair
    for path in sorted((primary / "docker/registry/v2/repositories/app0/_manifests/tags/v0").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (primary / "docker/registry/v2/repositories/app0/_manifests/tags/v0").rmdir()
    status, result = verify_json(str(primary), "--against", str(replica))
    assert status == 1
    assert result["comparison"]["repositories"]["app0"]["extra_tags"] == ["v0"]
    human = syncagent("verify", str(primary), "--against", str(replica))
    assert "app0" in human.stdout and "TOTAL" in human.stdout


def test_repair_needs_against(pair):
    _, replica, _ = pair
    assert syncagent("verify", str(replica), "--repair").returncode == 2


def test_a_directory_that_is_not_a_registry_root_is_an_error_not_a_healthy_replica(pair, tmp_path):
    primary, replica, _ = pair
    for not_a_root in (tmp_path, primary / "docker", tmp_path / "no-such-directory"):
        for args in (("verify", str(not_a_root)), ("verify", str(not_a_root), "--json"),
                     ("verify", str(not_a_root), "--against", str(replica)),
                     ("sync", str(not_a_root), str(tmp_path / "fresh"))):
            result = syncagent(*args)
            assert result.returncode == 2, (args, result.stdout, result.stderr)
            assert "docker/registry/v2" in result.stderr or "does not exist" in result.stderr
            assert "Traceback" not in result.stderr and "invariant holds" not in result.stdout
    assert not (tmp_path / "fresh").exists()  # nothing written for a source that is not a registry
    empty = tmp_path / "empty"
    (empty / "docker/registry/v2").mkdir(parents=True)
    status, report = verify_json(str(empty))
    assert status == 0 and report["ok"] and report["repositories"] == 0
    assert syncagent("sync", str(primary), str(tmp_path / "fresh")).returncode == 0  # a fresh destination may be empty


def test_a_store_without_registry_objects_is_not_a_registry():
    from backends.memory import MemoryBackend
    from syncagent.sync.discovery import NotARegistry, require_registry
    from syncagent.check.verify import verify_backend

    store = MemoryBackend()
    store.put_bytes("docker/registry/v3/elsewhere", b"x")
    store.put_bytes("unrelated/object", b"x")
    with pytest.raises(NotARegistry, match="docker/registry/v2"):
        verify_backend(store, require_registry=True)
    assert verify_backend(store).ok  # unless asked, an empty tree verifies (an empty destination, say)
    store.put_bytes("docker/registry/v2/blobs/sha256/aa/" + "a" * 64 + "/data", b"x")
    require_registry(store)
    assert verify_backend(store, require_registry=True).counters["repositories"] == 0


def test_repositories_checked_at_once_report_what_one_at_a_time_reports(pair):
    """verify checks repositories --jobs at a time; the report is the same, in the same order."""
    from syncagent.check.verify import verify_backend

    primary, replica, tree = pair
    plant_damage(primary, replica, tree)
    one = verify_backend(FilesystemBackend(replica), jobs=1)
    many = verify_backend(FilesystemBackend(replica), jobs=4)
    assert len({p.repository for p in one.problems if p.repository}) == 3
    assert [p.as_dict() for p in many.problems] == [p.as_dict() for p in one.problems]
    assert [f.as_dict() for f in many.findings] == [f.as_dict() for f in one.findings]
    assert many.counters == one.counters
