"""sync --delete: reverse order, the invariant throughout, and the safety checks."""

from __future__ import annotations

import pytest

from backends.filesystem import FilesystemBackend
from backends.memory import MemoryBackend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import BlobData, LayerLink, RevisionLink, TagCurrentLink, key_of, repository_prefix, tags_prefix
from syncagent.sync.replica import MARKER_KEY
from syncagent.testing.synthetic import TreeWriter
from syncagent.check.verify import verify_backend
from tests.support.engine_checks import InvariantCheckingBackend, dest_tags, sync




def delete_source_tag(source, repository, tag):
    for info in list(source.iter_objects(f"{tags_prefix(repository)}{tag}/")):
        source.delete(info.key)


def delete_source_revision(source, repository, digest):
    source.delete(key_of(RevisionLink(repository, digest)))


@pytest.fixture
def world():
    source = MemoryBackend()
    writer = TreeWriter(source)
    shared = b"shared base layer" * 50
    images = {}
    for repo in ("app", "tools"):
        for n in range(4):
            images[(repo, f"v{n}")] = writer.image(repo, [shared, f"{repo} {n}".encode()], tag=f"v{n}")[0]
    dest = InvariantCheckingBackend()
    assert sync(source, dest).ok
    return source, dest, writer, images


def test_deleted_tag_and_manifest_disappear_and_everything_else_stays(world):
    source, dest, writer, images = world
    gone = images[("app", "v1")]
    delete_source_tag(source, "app", "v1")
    delete_source_revision(source, "app", gone)
    report = sync(source, dest, delete=True)
    assert report.ok, report.problems
    assert dest.violations == []
    assert set(dest_tags(dest, "app")) == {"v0", "v2", "v3"}
    assert not dest.exists(key_of(RevisionLink("app", gone)))
    assert report.counters["tags_deleted"] == 1 and report.counters["revisions_deleted"] == 1
    shared = next(d for d in writer.blobs if dest.read_bytes(key_of(BlobData(d))).startswith(b"shared base"))
    assert dest.exists(key_of(LayerLink("app", shared)))
    assert dest.exists(key_of(BlobData(gone)))
    assert verify_backend(dest).ok


def test_tag_deleted_but_manifest_kept_at_source_keeps_the_revision(world):
    source, dest, _, images = world
    delete_source_tag(source, "tools", "v2")
    report = sync(source, dest, delete=True)
    assert report.ok
    assert "v2" not in dest_tags(dest, "tools")
    assert dest.exists(key_of(RevisionLink("tools", images[("tools", "v2")])))
    assert report.counters["revisions_deleted"] == 0


def test_whole_repository_gone_at_source(world):
    source, dest, _, _ = world
    for info in list(source.iter_objects(repository_prefix("tools"))):
        source.delete(info.key)
    report = sync(source, dest, delete=True)
    assert report.ok, report.problems
    assert list(dest.iter_objects(repository_prefix("tools"))) == []
    assert len(dest_tags(dest, "app")) == 4
    assert dest.violations == []


def test_prune_blobs_removes_only_unlinked_blobs_the_source_lacks(world):
    source, dest, writer, images = world
    gone = images[("app", "v3")]
    manifest_blob = key_of(BlobData(gone))
    delete_source_tag(source, "app", "v3")
    delete_source_revision(source, "app", gone)
    source.delete(manifest_blob)
    report = sync(source, dest, delete=True, prune_blobs=True)
    assert report.ok, report.problems
    assert not dest.exists(manifest_blob)
    assert report.counters["blobs_deleted"] >= 1
    still_at_source = [info.key for info in source.iter_objects("docker/registry/v2/blobs/")]
    assert all(dest.exists(k) for k in still_at_source)
    assert verify_backend(dest).ok


def test_index_children_stay_while_their_index_is_tagged():
    source = MemoryBackend()
    writer = TreeWriter(source)
    children = [(writer.image("multi", [f"layer {a}".encode()], platform=a), a) for a in ("amd64", "arm64")]
    writer.index("multi", children, tag="latest")
    dest = MemoryBackend()
    assert sync(source, dest).ok
    for (digest, _), _ in children:
        delete_source_revision(source, "multi", digest)
    report = sync(source, dest, delete=True)
    assert report.ok
    for (digest, _), _ in children:
        assert dest.exists(key_of(RevisionLink("multi", digest)))
    assert verify_backend(dest).ok


def test_dry_run_lists_deletes_and_deletes_nothing(world):
    source, dest, _, _ = world
    delete_source_tag(source, "app", "v0")
    before = {i.key for i in dest.iter_objects("")}
    report = sync(source, dest, delete=True, dry_run=True)
    assert report.ok
    assert any(line.startswith("delete ") and "/tags/v0/" in line for line in report.planned)
    assert {i.key for i in dest.iter_objects("")} == before


def test_empty_source_is_refused(world):
    _, dest, _, _ = world
    before = {i.key for i in dest.iter_objects("")}
    report = sync(MemoryBackend(), dest, delete=True, max_delete_share=1.0)
    assert [p.kind for p in report.problems] == ["delete-refused"]
    assert "holds no repositories" in report.problems[0].reason
    assert {i.key for i in dest.iter_objects("")} == before


def test_unreadable_source_is_refused(world, tmp_path):
    _, dest, _, _ = world
    before = {i.key for i in dest.iter_objects("")}
    report = sync(FilesystemBackend(tmp_path / "no-such-registry"), dest, delete=True, force=True)
    assert "delete-refused" in [p.kind for p in report.problems]
    assert {i.key for i in dest.iter_objects("")} == before


def test_swapped_source_and_destination_are_refused(world):
    primary, secondary, writer, _ = world
    writer.image("app", [b"pushed after the last sync"], tag="fresh")
    before = {i.key for i in primary.iter_objects("")}
    report = sync(secondary, primary, delete=True)
    assert "delete-refused" in [p.kind for p in report.problems]
    assert {i.key for i in primary.iter_objects("")} == before
    assert not primary.exists(MARKER_KEY)


def test_share_limit_refuses_a_mass_delete_unless_forced(world):
    source, dest, _, _ = world
    for n in range(3):
        delete_source_tag(source, "app", f"v{n}")
        delete_source_tag(source, "tools", f"v{n}")
    refused = sync(source, dest, delete=True, max_delete_share=0.25)
    assert [p.kind for p in refused.problems] == ["delete-refused"]
    assert "6 of the destination's 16 tags and revisions (38%)" in refused.problems[0].reason
    assert len(dest_tags(dest, "app")) == 4
    forced = sync(source, dest, delete=True, max_delete_share=0.25, force=True)
    assert forced.ok
    assert set(dest_tags(dest, "app")) == {"v3"}


def test_a_tag_present_at_the_source_is_never_deleted(world):
    source, dest, _, _ = world
    source.put_bytes(key_of(TagCurrentLink("app", "v0")), b"")
    report = sync(source, dest, delete=True)
    assert "v0" in dest_tags(dest, "app")
    assert [p.kind for p in report.problems] == ["invalid-link"]


def test_a_manifest_that_cannot_be_read_for_a_moment_protects_its_children(world):
    """An index whose manifest cannot be read for a moment must not let its children go: the
    repository's deletes wait for the next pass (delete-failed), they are not planned without it."""
    from backends import TransientError

    source, _, writer, images = world
    dest = MemoryBackend()
    one, _ = writer.image("multi", [b"amd64 layer"], platform="amd64")
    two, _ = writer.image("multi", [b"arm64 layer"], platform="arm64")
    index = writer.index("multi", [((one, 0), "amd64"), ((two, 0), "arm64")], tag="v1")
    assert sync(source, dest).ok
    delete_source_revision(source, "multi", one)  # untagged at the source now; still the index's child
    manifest_key = key_of(BlobData(index))
    failing = {"on": True}
    original = dest.open_read

    def open_read(key):
        if key == manifest_key and failing["on"]:
            raise TransientError(f"{key}: connection reset", key=key)
        return original(key)

    dest.open_read = open_read
    report = sync(source, dest, delete=True)
    assert [p.kind for p in report.problems] == ["delete-failed"]
    assert dest.exists(key_of(RevisionLink("multi", one)))
    failing["on"] = False
    assert sync(source, dest, delete=True).ok
    assert dest.exists(key_of(RevisionLink("multi", one)))  # the index still references it


def test_a_remaining_manifest_that_is_missing_keeps_every_revision_and_layer_link(world):
    source, dest, _, images = world
    delete_source_revision(source, "app", images[("app", "v0")])
    delete_source_tag(source, "app", "v0")
    dest.delete(key_of(BlobData(images[("app", "v1")])))  # a remaining revision's manifest is gone
    report = sync(source, dest, delete=True)
    assert "delete-skipped" in [p.kind for p in report.problems]
    assert "v0" not in dest_tags(dest, "app")  # the tag still goes: nothing references a tag
    assert dest.exists(key_of(RevisionLink("app", images[("app", "v0")])))


# --- one delete policy: the sidecar's allowance ------------------------------------------------------


def test_the_sidecar_draws_every_delete_from_one_allowance_and_defers_until_measured(world):
    from syncagent.sync.policy import DEFERRED, DeleteAllowance, DeletePolicy

    source, dest, _, images = world
    allowance = DeleteAllowance(DeletePolicy(source, dest, max_share=0.25))
    for n in range(3):
        delete_source_tag(source, "app", f"v{n}")
        delete_source_revision(source, "app", images[("app", f"v{n}")])
    engine = Engine(source, dest, SyncOptions(delete=True))
    assert engine.delete_in_repository("app", allowance) is DEFERRED  # 6 of app's 8: too much for what is known
    assert len(dest_tags(dest, "app")) == 4 and engine.report.problems == []
    assert engine.delete_in_repository("tools", allowance) is None  # measures tools (8), deletes nothing
    allowance.renew()  # a reconcile completed: 16 measured
    refused = Engine(source, dest, SyncOptions(delete=True))
    assert refused.delete_in_repository("app", allowance) is None
    assert [p.kind for p in refused.report.problems] == ["delete-refused"]
    assert "6 of the destination's 16 tags and revisions" in refused.report.problems[0].reason
    generous = DeleteAllowance(DeletePolicy(source, dest, max_share=0.5), established=True)
    generous.request([type("Plan", (), {"repository": "tools", "removing": 0, "holding": 8})()])
    granted = Engine(source, dest, SyncOptions(delete=True))
    assert granted.delete_in_repository("app", generous) is None
    assert granted.report.ok and set(dest_tags(dest, "app")) == {"v3"}
    assert generous.spent == 6
