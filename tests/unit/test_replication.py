"""The supplement mode (--blobs external) on in-memory backends: a stand-in for bucket replication that
delivers blobs late and in random order; tags become current only once their blobs have arrived."""

from __future__ import annotations

import random
import threading
import time

import pytest

from backends.memory import MemoryBackend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import BLOBS_PREFIX, BlobData, Digest, key_of
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree
from syncagent.check.verify import verify_backend
from tests.support.engine_checks import InvariantCheckingBackend, dest_tags


class Replicator:
    """Copies blob objects from ``source`` to ``dest`` in a random order, each after a random delay,
    as bucket replication does (objects under blobs/ only). ``hold``: digests it does not deliver
    until released (or ever)."""

    def __init__(self, source, dest, *, seed: int, delay=(0.0, 0.2), hold=(), prefix=BLOBS_PREFIX):
        self.source, self.dest = source, dest
        self.prefix = prefix  # "" for a full mirror
        self.arrived = threading.Condition()
        self.rng = random.Random(seed)
        self.delay = delay
        self.hold = set(hold)
        self.delivered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def release(self, digest: Digest) -> None:
        self.hold.discard(digest)

    def _run(self) -> None:
        while not self._stop.is_set():
            pending = [i.key for i in self.source.iter_objects(self.prefix)
                       if i.key not in self.delivered and not any(key_of(BlobData(d)) == i.key for d in self.hold)]
            self.rng.shuffle(pending)
            for key in pending[:3]:
                time.sleep(self.rng.uniform(*self.delay))
                self.dest.put_bytes(key, self.source.read_bytes(key))
                with self.arrived:
                    self.delivered.append(key)
                    self.arrived.notify_all()
            if not pending:
                self._stop.wait(0.02)


def external(**options):
    return SyncOptions(blobs="external", **options)


@pytest.fixture
def source():
    return MemoryBackend()


def test_tags_wait_for_their_blobs_and_the_invariant_holds_at_every_write(source):
    tree = write_tree(source, TreeShape(repositories=3, tags_per_repository=3, index_every=2, layer_bytes=(100, 2000)))
    dest = InvariantCheckingBackend()
    with Replicator(source, dest, seed=7, delay=(0.0, 0.03)):
        report = Engine(source, dest, external(jobs=4)).run()
    assert report.ok, report.problems
    assert dest.violations == []
    assert report.counters["blobs_copied"] == 0
    assert report.counters["blobs_replicated"] == tree.blobs
    assert report.counters["tags_published"] == 9
    assert verify_backend(dest).ok


def test_a_blob_that_never_arrives_holds_back_its_tag_only_and_is_named(source):
    writer = TreeWriter(source)
    stuck, _ = writer.image("app", [b"a layer the replication lost"], tag="stuck")
    writer.image("app", [b"a small layer"], tag="fine")
    lost = Digest.parse(f"sha256:{__import__('hashlib').sha256(b'a layer the replication lost').hexdigest()}")
    dest = InvariantCheckingBackend()
    with Replicator(source, dest, seed=1, hold={lost}):
        report = Engine(source, dest, external(external_timeout=0.6)).run()
    assert not report.ok
    assert [(p.kind, p.digest) for p in report.problems if p.kind == "blob-not-replicated"] == [("blob-not-replicated", str(lost))]
    assert "waited" in next(p.reason for p in report.problems if p.kind == "blob-not-replicated")
    assert any(p.kind == "tag-not-published" and p.tag == "stuck" for p in report.problems)
    assert set(dest_tags(dest, "app")) == {"fine"}
    assert dest.violations == [] and not dest.exists(key_of(BlobData(lost)))


def test_a_slow_blob_does_not_hold_back_other_tags(source):
    writer = TreeWriter(source)
    writer.image("app", [b"five gigabytes, say"], tag="big")
    writer.image("app", [b"tiny"], tag="small")
    big = Digest.parse(f"sha256:{__import__('hashlib').sha256(b'five gigabytes, say').hexdigest()}")
    dest = MemoryBackend()
    published = []
    engine = Engine(source, dest, external(external_timeout=30))
    with Replicator(source, dest, seed=3, hold={big}) as replicator:
        def on_event(event, data):
            if event == "tag-published":
                published.append(data["tag"])
                replicator.release(big)  # the big layer arrives only once the small tag is out

        engine.report.subscribe(on_event)
        report = engine.run()
    assert report.ok, report.problems
    assert published == ["small", "big"]


def test_copy_after_copies_what_the_replication_did_not_bring(source):
    writer = TreeWriter(source)
    writer.image("app", [b"written before the rule existed"], tag="old")
    never = Digest.parse(f"sha256:{__import__('hashlib').sha256(b'written before the rule existed').hexdigest()}")
    dest = MemoryBackend()
    with Replicator(source, dest, seed=5, delay=(0.0, 0.01), hold={never}):
        report = Engine(source, dest, external(copy_after=0.5, external_timeout=30)).run()
    assert report.ok, report.problems
    assert report.counters["blobs_copied_after_wait"] == 1 and report.counters["blobs_copied"] == 1
    assert dest.read_bytes(key_of(BlobData(never))) == b"written before the rule existed"
    assert set(dest_tags(dest, "app")) == {"old"}


def test_a_replication_rule_that_carries_more_than_blobs_is_reported(source):
    from syncagent.sync.replication import CANARY_KEY

    writer = TreeWriter(source)
    writer.image("app", [b"x"], tag="v1")
    dest = MemoryBackend()
    with Replicator(source, dest, seed=2, delay=(0.0, 0.01), prefix="") as mirror:
        Engine(source, dest, external()).run()
        assert source.exists(CANARY_KEY)
        with mirror.arrived:
            assert mirror.arrived.wait_for(lambda: CANARY_KEY in mirror.delivered, timeout=10)
        second = Engine(source, dest, external()).run()
    assert [p.kind for p in second.problems] == ["replication-too-wide"]
    narrow = MemoryBackend()
    with Replicator(source, narrow, seed=2, delay=(0.0, 0.01)):
        assert Engine(source, narrow, external()).run().ok
    assert not narrow.exists(CANARY_KEY)
