"""The blob copier's use of a destination's optional server-side copies (backends/base.py ServerCopy)."""

from __future__ import annotations

from dataclasses import replace

from backends import CopyUnverifiable, server_copy_of
from backends.memory import MemoryBackend
from backends.retry import RetryingBackend
from syncagent.check.verify import verify_backend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.testing.synthetic import TreeShape, write_tree


class CopyingMemory(MemoryBackend):
    """A memory store that copies from a twin store server-side; ``vouches`` False: as a store whose
    ETags are no MD5s (SSE-KMS), it cannot confirm a copy."""

    def __init__(self, twin: MemoryBackend, *, vouches: bool = True, declared: bool = True) -> None:
        super().__init__()
        self.capabilities = replace(self.capabilities, server_copy=declared)
        self.twin = twin
        self.vouches = vouches
        self.copies: list[str] = []
        self.attempts = 0

    def can_copy_from(self, source, size):
        return getattr(source, "inner", source) is self.twin and size > 0

    def copy_from(self, source, key, data, *, size, before_commit=None):
        self.attempts += 1
        read = data.read()
        if before_commit is not None:
            before_commit()
        if not self.vouches:
            raise CopyUnverifiable(f"{key}: cannot check", key=key)
        assert read == self.twin.read_bytes(key)
        self.copies.append(key)
        return self.put_bytes(key, read)


def tree(source):
    return write_tree(source, TreeShape(repositories=2, tags_per_repository=2, layer_bytes=(100, 900)))


def test_the_ability_is_found_through_the_engines_wrappers_only_when_declared():
    twin = MemoryBackend()
    assert server_copy_of(RetryingBackend(CopyingMemory(twin))) is not None
    assert server_copy_of(CopyingMemory(twin, declared=False)) is None
    assert server_copy_of(MemoryBackend()) is None


def test_blobs_of_a_source_the_destination_can_copy_from_are_copied_by_the_store():
    source = MemoryBackend()
    tree(source)
    dest = CopyingMemory(source)
    report = Engine(source, dest, SyncOptions()).run()
    assert report.ok and report.counters["blobs_copied_server_side"] == len(dest.copies) > 0
    assert verify_backend(dest, deep=True).ok


def test_a_store_that_cannot_vouch_for_its_copy_gets_the_blob_streamed_and_is_not_asked_again():
    source = MemoryBackend()
    summary = tree(source)
    dest = CopyingMemory(source, vouches=False)
    report = Engine(source, dest, SyncOptions(jobs=1)).run()
    assert report.ok and report.counters["blobs_copied"] == summary.blobs
    assert report.counters.get("blobs_copied_server_side", 0) == 0 and dest.attempts == 1
    assert verify_backend(dest, deep=True).ok
