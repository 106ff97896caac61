"""The engine on in-memory backends: order, invariant at every write, bad input, resumption."""

from __future__ import annotations

import hashlib
import io
import json
import threading

import pytest


from backends.memory import MemoryBackend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import (
    REPOSITORIES_PREFIX,
    BlobData,
    Digest,
    LayerLink,
    RevisionLink,
    TagCurrentLink,
    key_of,
    parse_key,
    parse_link,
    tags_prefix,
)
from syncagent.sync.records import RECORDS_PREFIX
from syncagent.sync.replica import MARKER_KEY
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree
from tests.support.engine_checks import FailingPuts, InvariantCheckingBackend, dest_tags, kinds, sync
from syncagent.check.verify import verify_backend


@pytest.fixture
def source():
    return MemoryBackend()


@pytest.fixture
def tree(source):
    return write_tree(source, TreeShape(repositories=4, tags_per_repository=3, index_every=3, untagged_per_repository=1, layer_bytes=(100, 3000)))


def test_full_sync_keeps_the_invariant_after_every_write(source, tree):
    dest = InvariantCheckingBackend()
    report = sync(source, dest, jobs=4)
    assert report.ok, report.problems
    assert dest.violations == []
    assert report.counters["tags_published"] == 12
    assert report.counters["blobs_copied"] == tree.blobs
    for repository, tags in tree.tags.items():
        assert dest_tags(dest, repository) == tags
    assert verify_backend(dest).ok


def test_write_order_per_tag(source, tree):
    dest = InvariantCheckingBackend()
    sync(source, dest, jobs=1)
    records = [i for i, key in enumerate(dest.writes) if key.startswith(RECORDS_PREFIX)]
    position = {key: i for i, key in enumerate(dest.writes) if key != MARKER_KEY and not key.startswith(RECORDS_PREFIX)}
    first_tag = min(i for key, i in position.items() if isinstance(parse_key(key), TagCurrentLink))
    assert len(records) == 1 and records[0] < first_tag  # the pass record comes before any tag write
    assert not dest.exists(dest.writes[records[0]])  # and is gone after a clean pass
    for key, i in position.items():
        spec = parse_key(key)
        if isinstance(spec, TagCurrentLink):
            digest = parse_link(dest.read_bytes(key))
            assert position[key_of(RevisionLink(spec.repository, digest))] < i
            assert position[key_of(BlobData(digest))] < i
        if isinstance(spec, RevisionLink):
            manifest = json.loads(dest.read_bytes(key_of(BlobData(spec.digest))))
            for ref in [manifest.get("config")] + manifest.get("layers", []):
                if ref:
                    d = Digest.parse(ref["digest"])
                    assert position[key_of(BlobData(d))] < i
                    assert position[key_of(LayerLink(spec.repository, d))] < i
            for child in manifest.get("manifests", []):
                assert position[key_of(RevisionLink(spec.repository, Digest.parse(child["digest"])))] < i


def test_every_destination_key_is_a_source_key_with_equal_bytes(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    src_keys = {i.key for i in source.iter_objects("")}
    dst_keys = {i.key for i in dest.iter_objects("")}
    assert dst_keys == src_keys | {MARKER_KEY}
    dst_keys.discard(MARKER_KEY)
    assert all(dest.read_bytes(k) == source.read_bytes(k) for k in dst_keys)


def test_resync_copies_nothing_and_shared_blobs_are_copied_once(source):
    writer = TreeWriter(source)
    shared = b"shared layer" * 100
    for n in range(5):
        writer.image(f"repo{n}", [shared, f"own {n}".encode()], tag="latest")
    dest = MemoryBackend()
    first = sync(source, dest, jobs=8)
    assert first.ok
    assert first.counters["blobs_copied"] == len(writer.blobs)
    second = sync(source, dest)
    assert second.ok
    assert second.counters["blobs_copied"] == 0
    assert second.counters["tags_up_to_date"] == 5
    assert second.counters["links_written"] == 0


class CountingReads(MemoryBackend):
    """A destination that records the keys it is asked to stat and the prefixes it is asked to list."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: list[str] = []
        self.listed: list[str] = []

    def stat(self, key):
        self.stats.append(key)
        return super().stat(key)

    def iter_children(self, prefix):
        self.listed.append(prefix)
        return super().iter_children(prefix)


def test_a_destination_without_blob_data_gets_no_blob_stats(source, tree):
    dest = CountingReads()
    report = sync(source, dest, jobs=4)
    assert report.ok, report.problems
    assert report.counters["blobs_copied"] == tree.blobs
    assert [key for key in dest.stats if key.startswith("docker/registry/v2/blobs/")] == []
    seeded = CountingReads()  # holds blob data already: every blob is looked at before it is copied
    first = next(iter(source.iter_objects("docker/registry/v2/blobs/")))
    seeded.put_bytes(first.key, source.read_bytes(first.key))
    report = sync(source, seeded, jobs=4)
    assert report.counters["blobs_skipped"] == 1
    assert len({key for key in seeded.stats if key.startswith("docker/registry/v2/blobs/")}) == tree.blobs


def test_a_fresh_destination_is_not_read_per_repository(source, tree):
    dest = CountingReads()
    assert sync(source, dest, jobs=4).ok
    per_repository = [p for p in dest.listed if p.startswith(REPOSITORIES_PREFIX) and "/_" in p]
    assert per_repository == []
    dest.listed.clear()
    again = sync(source, dest, jobs=4)  # marked now: read as usual, and found up to date
    assert again.ok and again.counters["links_written"] == 0
    assert {r for r in tree.repositories if tags_prefix(r) in dest.listed} == set(tree.repositories)


def test_blobs_already_present_with_right_size_are_not_copied(source, tree):
    dest = MemoryBackend()
    blobs = [i for i in source.iter_objects("docker/registry/v2/blobs/")]
    for info in blobs[:10]:
        dest.put_bytes(info.key, source.read_bytes(info.key))
    wrong = blobs[10]
    dest.put_bytes(wrong.key, b"truncated")
    report = sync(source, dest)
    assert report.ok
    assert report.counters["blobs_skipped"] == 10
    assert report.counters["blobs_copied"] == tree.blobs - 10
    assert dest.read_bytes(wrong.key) == source.read_bytes(wrong.key)


def test_tag_move_is_followed(source):
    writer = TreeWriter(source)
    writer.image("app", [b"one"], tag="v1")
    dest = MemoryBackend()
    assert sync(source, dest).ok
    new, _ = writer.image("app", [b"two"], tag="v1")
    report = sync(source, dest)
    assert report.ok and report.counters["tags_published"] == 1
    assert dest_tags(dest, "app") == {"v1": str(new)}


def test_corrupt_source_blob_blocks_only_its_tag(source):
    writer = TreeWriter(source)
    good, _ = writer.image("app", [b"good layer"], tag="good")
    bad, _ = writer.image("app", [b"bad layer"], tag="bad")
    bad_layer = Digest("sha256", hashlib.sha256(b"bad layer").hexdigest())
    source.put_bytes(key_of(BlobData(bad_layer)), b"bad layes")
    dest = InvariantCheckingBackend()
    report = sync(source, dest)
    assert not report.ok
    assert dest.violations == []
    mismatch = [p for p in report.problems if p.kind == "digest-mismatch"]
    assert [p.digest for p in mismatch] == [str(bad_layer)]
    assert any(p.kind == "tag-not-published" and p.tag == "bad" for p in report.problems)
    assert dest_tags(dest, "app") == {"good": str(good)}
    assert not dest.exists(key_of(BlobData(bad_layer)))
    assert not dest.exists(key_of(RevisionLink("app", bad)))
    assert verify_backend(dest).ok


def test_malformed_manifest_and_missing_blob_are_reported(source):
    writer = TreeWriter(source)
    writer.image("app", [b"fine"], tag="fine")
    writer.manifest("app", b"{not json", [], tag="broken")
    missing = Digest("sha256", "f" * 64)
    doc = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "x", "digest": str(missing), "size": 3}, "layers": []}).encode()
    writer.manifest("app", doc, [], tag="incomplete")
    dest = InvariantCheckingBackend()
    report = sync(source, dest)
    assert set(kinds(report)) >= {"malformed-manifest", "missing-blob", "tag-not-published"}
    assert {p.tag for p in report.problems if p.kind == "tag-not-published"} == {"broken", "incomplete"}
    assert any(p.kind == "missing-blob" and p.digest == str(missing) for p in report.problems)
    assert set(dest_tags(dest, "app")) == {"fine"}
    assert dest.violations == []


def test_foreign_layer_absent_at_source_is_not_an_error(source):
    writer = TreeWriter(source)
    foreign = Digest("sha256", "e" * 64)
    config = writer.blob(b"{}")
    doc = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                      "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": str(config), "size": 2},
                      "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": str(foreign),
                                  "size": 10, "urls": ["https://example.invalid/layer"]}]}).encode()
    digest, _ = writer.manifest("win", doc, [config], tag="ltsc")
    dest = MemoryBackend()
    report = sync(source, dest)
    assert report.ok, report.problems
    assert dest_tags(dest, "win") == {"ltsc": str(digest)}


def test_invalid_repository_names_and_junk_are_never_copied(source):
    writer = TreeWriter(source)
    writer.image("ok", [b"x"], tag="v1")
    layer = writer.blob(b"x")
    source.put_bytes(f"docker/registry/v2/repositories/Bad/_layers/sha256/{layer.hex}/link", str(layer).encode())
    source.put_bytes("docker/registry/v2/repositories/a..b/_manifests/tags/v1/current/link", str(layer).encode())
    source.put_bytes("docker/registry/v2/repositories/ok/_uploads/1234/data", b"partial upload")
    source.put_bytes("docker/registry/v2/repositories/ok/_manifests/tags/v1/current/link.5.tmp", b"")
    source.put_bytes("docker/registry/v2/repositories/ok/_manifests/tags/.bad/current/link", str(layer).encode())
    dest = MemoryBackend()
    report = sync(source, dest)
    assert sorted((p.kind, p.key.rsplit("/", 1)[-1]) for p in report.problems) == [
        ("invalid-name", ".bad"),
        ("invalid-name", "Bad"),
        ("invalid-name", "a..b"),
    ]
    keys = {i.key for i in dest.iter_objects("")}
    assert not any("Bad" in k or "a..b" in k or "_uploads" in k or k.endswith(".tmp") or ".bad" in k for k in keys)
    assert dest_tags(dest, "ok") == {"v1": source.read_bytes(key_of(TagCurrentLink("ok", "v1"))).decode()}


def test_a_link_caught_half_written_is_read_again(source):
    writer = TreeWriter(source)
    digest, _ = writer.image("app", [b"x"], tag="v1")
    key = key_of(TagCurrentLink("app", "v1"))

    class RewritingInPlace(MemoryBackend):
        reads = 0

        def open_read(self, k):
            if k == key and self.reads < 2:
                self.reads += 1
                return io.BytesIO(b"" if self.reads == 1 else str(digest).encode()[:30])
            return source.open_read(k)

        def stat(self, k):
            return source.stat(k)

        def iter_children(self, prefix):
            return source.iter_children(prefix)

    flaky = RewritingInPlace()
    report = sync(flaky, MemoryBackend())
    assert report.ok, report.problems
    assert flaky.reads == 2
    source.put_bytes(key, b"")
    report = sync(source, MemoryBackend())
    assert [(p.kind, p.tag) for p in report.problems] == [("invalid-link", "v1")]


def test_failing_destination_write_is_reported_and_leaves_nothing_broken(source, tree):
    victim = key_of(BlobData(Digest.parse(next(iter(tree.tags["app0"].values())))))
    dest = FailingPuts(lambda key: key == victim)
    report = sync(source, dest)
    assert not report.ok
    assert any(p.kind == "write-failed" and p.key == victim for p in report.problems)
    assert any(p.kind == "tag-not-published" and p.repository == "app0" for p in report.problems)
    assert verify_backend(dest).ok
    published = sum(len(dest_tags(dest, r)) for r in tree.repositories)
    assert published == 11
    dest.failing = lambda key: False
    again = sync(source, dest)
    assert again.ok
    assert sum(len(dest_tags(dest, r)) for r in tree.repositories) == 12


def test_dry_run_writes_nothing_and_lists_the_plan(source, tree):
    dest = MemoryBackend()
    report = sync(source, dest, dry_run=True)
    assert report.ok
    assert list(dest.iter_objects("")) == []
    copies = [line for line in report.planned if line.startswith("copy blob")]
    assert len(copies) == tree.blobs
    assert sum(1 for line in report.planned if "/current/link" in line) == 12


def test_repo_filter(source, tree):
    dest = MemoryBackend()
    report = sync(source, dest, repositories=("team*/*",))
    assert report.ok
    synced = {r for r in tree.repositories if dest_tags(dest, r)}
    assert synced == {r for r in tree.repositories if r.startswith("team")}


def test_cancel_midway_leaves_the_invariant_and_resumes(source, tree):
    dest = InvariantCheckingBackend()
    engine = Engine(source, dest, SyncOptions(jobs=2))
    engine.report.subscribe(lambda event, data: event == "tag-published" and engine.cancel())
    report = engine.run()
    assert report.interrupted
    assert dest.violations == []
    assert 1 <= report.counters["tags_published"] < 12
    again = sync(source, dest)
    assert again.ok
    assert sum(len(dest_tags(dest, r)) for r in tree.repositories) == 12


def test_unreadable_source_is_a_problem_not_an_empty_registry(tmp_path):
    from backends.filesystem import FilesystemBackend

    report = sync(FilesystemBackend(tmp_path / "does-not-exist"), MemoryBackend())
    assert kinds(report) == ["read-failed"]


def test_destination_damage_under_an_up_to_date_tag_is_repaired(source, tree):
    dest = MemoryBackend()
    assert sync(source, dest).ok
    digest = Digest.parse(tree.tags["app0"]["v0"])
    manifest = json.loads(source.read_bytes(key_of(BlobData(digest))))
    layer = Digest.parse(manifest["layers"][-1]["digest"])
    dest.delete(key_of(LayerLink("app0", layer)))
    dest.delete(key_of(TagCurrentLink("app0", "v0")))
    report = sync(source, dest)
    assert report.ok, report.problems
    assert verify_backend(dest).ok


def test_copies_that_finish_before_they_are_registered_do_not_deadlock(source):
    """A pool that runs each copy at once (as a fast one can): the copier must not wait on itself."""
    from concurrent.futures import Future

    from syncagent.sync.transfer import BlobCopier

    class InlinePool:
        def submit(self, fn, *args):
            future = Future()
            future.set_result(fn(*args))
            return future

    writer = TreeWriter(source)
    writer.image("app", [b"one", b"two"], tag="v1")
    dest = MemoryBackend()
    report = Engine(source, dest).report
    copier = BlobCopier(source, dest, InlinePool(), report, threading.Event())
    for info in source.iter_objects("docker/registry/v2/blobs/"):
        digest = parse_key(info.key).digest
        assert copier.ensure(digest).result().ok
        assert copier.ensure(digest).result().ok
    assert report.counters["blobs_copied"] == len(writer.blobs)
