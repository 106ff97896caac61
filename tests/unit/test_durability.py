"""Durability in batches: no name becomes durable before what it needs, whatever instant a crash picks.

A destination double with the StagedPuts ability records every stage, publish
and barrier, and models a crash: what a barrier has completed is durable;
anything published since may or may not be. So at each publish, the durable
state plus that one new name must keep the invariant (then so does any subset
of the names published since the last barrier), and the new name's own bytes
must have been made durable by a barrier between its stage and its publish.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import Future

import pytest

from backends import BackendError, Capabilities, StagedObject
from backends.filesystem import FilesystemBackend
from backends.memory import MemoryBackend
from syncagent.check.verify import verify_backend
from syncagent.sync.durability import GroupCommit, all_of
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import BlobData, LayerLink, RevisionLink, TagCurrentLink, TagIndexLink, key_of, parse_key, parse_link
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree


class CrashModel(MemoryBackend):
    """A destination whose writes are durable only at barriers (a filesystem without fsyncs between)."""

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = Capabilities(local=True, staged_puts=True)
        self.durable: dict[str, bytes] = {}
        self.events: list[tuple[str, str]] = []  # (stage | publish | barrier | put, key)
        self.violations: list[str] = []
        self._serial = threading.Lock()
        self._staged_at: dict[int, int] = {}  # staged token -> barriers completed when it was staged
        self._barriers = 0
        self._tokens = 0

    def stage(self, key, data, *, size=None, before_commit=None):
        content = data.read()
        if before_commit is not None:
            before_commit()
        with self._serial:
            self._tokens += 1
            self._staged_at[self._tokens] = self._barriers
            self.events.append(("stage", key))
            return StagedObject(key, len(content), (self._tokens, content))

    def publish(self, staged):
        token, content = staged.handle
        with self._serial:
            self.events.append(("publish", staged.key))
            if self._staged_at.pop(token) == self._barriers:
                self.violations.append(f"{staged.key} named before a barrier made its bytes durable")
            image = MemoryBackend()
            for key, value in {**self.durable, staged.key: content}.items():
                image.plant(key, value)
            report = verify_backend(image, hygiene=False)
            if not report.ok:
                self.violations.append(f"a crash right after naming {staged.key}: {[p.describe() for p in report.problems]}")
            with self._lock:
                self._objects[staged.key] = content
        return super().stat(staged.key)

    def discard(self, staged):
        with self._serial:
            self._staged_at.pop(staged.handle[0], None)

    def barrier(self):
        with self._serial:
            self.events.append(("barrier", ""))
            self._barriers += 1
            with self._lock:
                self.durable = dict(self._objects)

    def put(self, key, data, **kwargs):  # fsynced on its own: durable at once (pass records, the replica marker)
        info = super().put(key, data, **kwargs)
        with self._serial:
            self.events.append(("put", key))
            with self._lock:
                self.durable[key] = self._objects[key]
        return info


@pytest.fixture
def source():
    source = MemoryBackend()
    write_tree(source, TreeShape(repositories=4, tags_per_repository=4, index_every=2, untagged_per_repository=1,
                                 layer_bytes=(100, 3000)))
    return source


def named_digests(dest, key):
    """What a link names: the blob data, and the links, that must be durable before it."""
    spec = parse_key(key)
    if isinstance(spec, LayerLink):
        return [key_of(BlobData(spec.digest))]
    if isinstance(spec, RevisionLink):
        return [key_of(BlobData(spec.digest))]
    if isinstance(spec, (TagCurrentLink, TagIndexLink)):
        digest = parse_link(dest.read_bytes(key))
        return [key_of(BlobData(digest)), key_of(RevisionLink(spec.repository, digest))]
    return []


@pytest.mark.parametrize("jobs", [1, 8])
def test_no_name_becomes_durable_before_what_it_needs(source, jobs):
    dest = CrashModel()
    report = Engine(source, dest, SyncOptions(jobs=jobs)).run()
    assert report.ok, report.problems
    assert dest.violations == []
    assert verify_backend(dest).ok
    # The brief's wording, literally: between a blob's data and the first link that names it, a barrier
    # made the data durable, then the blob got its name, then another barrier made the name durable.
    position = {}
    for index, (event, key) in enumerate(dest.events):
        position.setdefault((event, key), index)
    barriers = [index for index, (event, _) in enumerate(dest.events) if event == "barrier"]
    links = [key for event, key in dest.events if event == "publish" and key.endswith("/link")]
    assert links
    for link in links:
        for needed in named_digests(dest, link):
            staged, published, linked = position[("stage", needed)], position[("publish", needed)], position[("publish", link)]
            assert any(staged < b < published for b in barriers), (needed, "named before its data was durable")
            assert any(published < b < linked for b in barriers), (link, "named before", needed, "was durable")
    assert len(barriers) < len(links)  # batched: not a barrier per write


def test_a_tag_moved_by_a_second_pass_never_points_at_what_is_not_durable(source):
    dest = CrashModel()
    assert Engine(source, dest, SyncOptions()).run().ok
    writer = TreeWriter(source)
    digest, _ = writer.image("app0", [b"a new layer", b"another"], tag="v0")  # moves v0
    dest.events.clear()
    report = Engine(source, dest, SyncOptions()).run()
    assert report.ok, report.problems
    assert dest.violations == []
    assert parse_link(dest.read_bytes(key_of(TagCurrentLink("app0", "v0")))) == digest


def test_a_failed_barrier_fails_its_writes_and_publishes_no_tag(source):
    class FailingBarrier(CrashModel):
        def barrier(self):
            if any(key.endswith("/current/link") for event, key in self.events if event == "stage"):
                raise BackendError("syncfs: Input/output error")
            super().barrier()

    dest = FailingBarrier()
    report = Engine(source, dest, SyncOptions()).run()
    assert not report.ok
    assert {p.kind for p in report.problems} >= {"write-failed"}
    assert dest.violations == []
    assert report.counters.get("tags_published", 0) == 0


class Recorder(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.release = threading.Event()
        self.release.set()

    def stage(self, key, data, *, size=None, before_commit=None):
        self.calls.append(f"stage {key}")
        return StagedObject(key, len(data.read()), key)

    def publish(self, staged):
        self.calls.append(f"publish {staged.key}")
        return super().put(staged.key, io.BytesIO(b"x"))

    def discard(self, staged):
        self.calls.append(f"discard {staged.key}")

    def barrier(self):
        self.release.wait(5)
        self.calls.append("barrier")


def test_group_commit_publishes_after_a_barrier_and_ends_with_one():
    dest = Recorder()
    dest.release.clear()  # hold the first barrier, so that both writes gather behind it
    commits = GroupCommit(dest)
    first = commits.put("a", io.BytesIO(b"1"))
    second = commits.put("b", io.BytesIO(b"2"))
    dest.release.set()
    all_of([first, second]).result(timeout=5)
    assert first.result().key == "a" and second.result().key == "b"
    assert dest.calls == ["stage a", "stage b", "barrier", "publish a", "publish b"]
    commits.close()
    assert dest.calls[-1] == "barrier"  # the pass ends with its names durable


def test_a_last_barrier_that_fails_is_raised_by_close():
    class LastBarrierFails(Recorder):
        def barrier(self):
            if "publish k" in self.calls:
                raise BackendError("syncfs: Input/output error")
            super().barrier()

    commits = GroupCommit(LastBarrierFails())
    assert commits.put("k", io.BytesIO(b"1")).result(timeout=5).key == "k"
    with pytest.raises(BackendError, match="Input/output"):
        commits.close()


def test_close_finishes_what_was_staged_and_refuses_more():
    dest = Recorder()
    commits = GroupCommit(dest)
    future = commits.put("k", io.BytesIO(b"1"))
    commits.close()
    assert future.done() and future.result().key == "k"
    with pytest.raises(BackendError):
        commits.put("late", io.BytesIO(b"2"))
    assert dest.calls[-1] == "discard late" and not dest.exists("late")


def test_all_of_resolves_after_the_last_and_carries_the_first_failure():
    first, second = Future(), Future()
    both = all_of([first, second])
    first.set_exception(BackendError("boom"))
    assert not both.done()
    second.set_result(None)
    with pytest.raises(BackendError):
        both.result()
    assert all_of([]).result() is None


def test_a_durable_filesystem_destination_is_written_in_batches(tmp_path, source):
    class Counting(FilesystemBackend):
        barriers = publishes = 0

        def barrier(self):
            type(self).barriers += 1
            super().barrier()

        def publish(self, staged):
            type(self).publishes += 1
            return super().publish(staged)

    dest = Counting(tmp_path / "dest")
    assert dest.capabilities.staged_puts
    report = Engine(source, dest, SyncOptions()).run()
    assert report.ok, report.problems
    assert verify_backend(dest).ok
    objects = sum(1 for info in source.iter_objects("docker/"))
    assert Counting.publishes == objects
    assert 2 <= Counting.barriers < objects / 4
    assert not FilesystemBackend(tmp_path / "other", dest.options.__class__(fsync=False)).capabilities.staged_puts


def test_group_commit_can_be_turned_off_keeping_per_object_fsyncs(tmp_path, source):
    from backends import open_backend

    dest = open_backend(f"file://{tmp_path / 'dest'}?group_commit=false")
    assert dest.options.fsync and not dest.capabilities.staged_puts
    report = Engine(source, dest, SyncOptions()).run()
    assert report.ok, report.problems
    assert verify_backend(dest).ok
    assert open_backend(f"file://{tmp_path / 'other'}").capabilities.staged_puts
