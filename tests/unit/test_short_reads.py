"""Reads that fail or come up short: transient errors, retried; never taken for corrupt content.

The S3 backend's stream raises TransientError for an answer cut short; every
backend's ``read_prefix`` fills its read; small reads (links, manifests) are
retried; a blob copy compares the bytes read with the source's size before it
judges the digest. On real RGW through a fault proxy: tests/e2e/test_s3_faults.py.
"""

from __future__ import annotations

import hashlib
import io

import pytest
from botocore.exceptions import IncompleteReadError

from backends import TransientError
from backends.memory import MemoryBackend
from backends.retry import RetryingBackend, RetryPolicy
from backends.s3.streams import ObjectReader as _ObjectReader
from syncagent.sync.closure import ClosureError, read_manifest
from syncagent.sync.discovery import read_small
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import BlobData, Digest, key_of
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree
from syncagent.check.verify import verify_backend


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt: 0.0)


class ScriptedBody:
    """A response body that hands out ``pieces`` one per read, then b"" (a connection closed cleanly)."""

    def __init__(self, *pieces: bytes | Exception) -> None:
        self.pieces = list(pieces)
        self.closed = False

    def read(self, amt=None) -> bytes:
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if isinstance(piece, Exception):
            raise piece
        return piece

    def close(self) -> None:
        self.closed = True


# -- the S3 backend's stream -----------------------------------------------------------


def test_an_s3_answer_that_ends_before_its_length_raises_transient_error():
    reader = _ObjectReader(ScriptedBody(b"abc", b"de"), "k", 10)
    with pytest.raises(TransientError) as raised:
        reader.read(10)
    assert "5 of its 10 bytes" in str(raised.value) and raised.value.key == "k"
    with pytest.raises(TransientError):
        _ObjectReader(ScriptedBody(b"abc"), "k", 10).read()


def test_an_s3_read_is_filled_across_short_pieces_up_to_the_end():
    reader = _ObjectReader(ScriptedBody(b"abc", b"de", b"fgh"), "k", 8)
    assert reader.read(5) == b"abcde"
    assert reader.read(100) == b"fgh"
    assert reader.read(100) == b""
    assert _ObjectReader(ScriptedBody(b"abc", b"de"), "k", 5).read() == b"abcde"


def test_botocore_s_own_incomplete_read_is_transient_too():
    reader = _ObjectReader(ScriptedBody(b"abc", IncompleteReadError(actual_bytes=3, expected_bytes=9)), "k", 9)
    with pytest.raises(TransientError):
        reader.read(9)


# -- read_prefix fills its read on every backend -------------------------------------------


class Dribble(io.RawIOBase):
    """A stream whose reads return at most 3 bytes, as a socket may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(3 if size is None or size < 0 else min(size, 3))


class DribblingBackend(MemoryBackend):
    def open_read(self, key):
        return Dribble(super().open_read(key).read())


def test_read_prefix_and_read_bytes_fill_their_read_from_a_stream_that_dribbles():
    backend = DribblingBackend()
    backend.put_bytes("k", b"0123456789")
    assert backend.read_prefix("k", 8) == b"01234567"
    assert backend.read_prefix("k", 100) == b"0123456789"
    assert backend.read_bytes("k", limit=10) == b"0123456789"
    with pytest.raises(ValueError):
        backend.read_bytes("k", limit=9)


# -- small reads (links, manifests) are retried ------------------------------------------


class FlakyReads(MemoryBackend):
    """Reads of ``flaky`` keys fail transiently (like an S3 answer cut short) ``failures`` times each."""

    def __init__(self, failures: int, flaky=lambda key: True) -> None:
        super().__init__()
        self.failures = failures
        self.flaky = flaky
        self.failed: dict[str, int] = {}

    def read_prefix(self, key, size):
        if self.flaky(key) and self.failed.get(key, 0) < self.failures:
            self.failed[key] = self.failed.get(key, 0) + 1
            raise TransientError(f"{key}: the answer ended after 3 of its {size} bytes", key=key)
        return super().read_prefix(key, size)


QUICK_RETRIES = RetryPolicy(attempts=4, sleep=lambda seconds: None)


def test_a_small_read_is_retried_and_then_gives_up_saying_how_often_it_tried():
    backend = FlakyReads(failures=3)
    backend.put_bytes("k", b"content")
    assert read_small(RetryingBackend(backend, QUICK_RETRIES), "k", 100) == b"content"
    backend = FlakyReads(failures=10)
    backend.put_bytes("k", b"content")
    with pytest.raises(TransientError) as raised:
        read_small(RetryingBackend(backend, QUICK_RETRIES), "k", 100)
    assert "(tried 4 times)" in str(raised.value)
    assert backend.failed["k"] == 4


def manifest_in(backend) -> Digest:
    digest, _ = TreeWriter(backend).image("app", [b"layer one", b"layer two"], tag="v1")
    return digest


def test_a_manifest_read_cut_short_is_read_again_and_never_called_corrupt():
    backend = FlakyReads(failures=2)
    digest = manifest_in(backend)
    data, manifest = read_manifest(RetryingBackend(backend, QUICK_RETRIES), digest)
    assert hashlib.sha256(data).hexdigest() == digest.hex and len(manifest.blobs) == 3

    backend = FlakyReads(failures=100)
    digest = manifest_in(backend)
    with pytest.raises(ClosureError) as raised:
        read_manifest(RetryingBackend(backend, QUICK_RETRIES), digest)
    assert raised.value.kind == "read-failed"
    assert "tried 4 times" in raised.value.reason


def test_a_sync_from_a_source_whose_reads_fail_transiently_publishes_everything():
    """Every manifest and link read fails twice first (as through a proxy that cuts answers short)."""
    source = FlakyReads(failures=2)
    tree = write_tree(source, TreeShape(repositories=3, tags_per_repository=2, index_every=2, layer_bytes=(100, 2000)))
    dest = MemoryBackend()
    report = Engine(source, dest, SyncOptions(jobs=2)).run()
    assert report.problems == []
    assert report.counters["tags_published"] == sum(len(tags) for tags in tree.tags.values()) == 6
    assert source.failed and all(count == 2 for count in source.failed.values())
    assert verify_backend(dest).ok


# -- blob copies: bytes read against the source's size, then the digest ---------------------


class ShortStreams(MemoryBackend):
    """The first ``short`` opens of each layer give a stream that ends early without an error
    (a backend without the S3 backend's length check, or a file replaced while read)."""

    def __init__(self, short: int) -> None:
        super().__init__()
        self.short = short
        self.layers: set[str] = set()
        self.opened: dict[str, int] = {}

    def layer(self, data: bytes) -> bytes:
        self.layers.add(key_of(BlobData(Digest("sha256", hashlib.sha256(data).hexdigest()))))
        return data

    def open_read(self, key):
        stream = super().open_read(key)
        self.opened[key] = self.opened.get(key, 0) + 1
        if key in self.layers and self.opened[key] <= self.short:
            return io.BytesIO(stream.read()[:-7])
        return stream


def test_a_blob_read_that_comes_up_short_is_copied_again_not_called_corrupt():
    source = ShortStreams(short=1)
    TreeWriter(source).image("app", [source.layer(b"a" * 5000), source.layer(b"b" * 7000)], tag="v1")
    dest = MemoryBackend()
    report = Engine(source, dest, SyncOptions(jobs=2)).run()
    assert report.problems == []
    assert report.counters["tags_published"] == 1
    for key in source.layers:
        assert source.opened[key] == 2
        assert dest.read_bytes(key) == source.read_bytes(key)
    assert verify_backend(dest, deep=True).ok


def test_a_blob_that_always_comes_up_short_is_read_failed_after_the_retries():
    source = ShortStreams(short=100)
    TreeWriter(source).image("app", [source.layer(b"l" * 5000)], tag="v1")
    report = Engine(source, MemoryBackend(), SyncOptions(jobs=1)).run()
    (layer_key,) = source.layers
    failures = [p for p in report.problems if p.key == layer_key]
    assert [p.kind for p in failures] == ["read-failed"]
    assert "gave up after 4 attempts" in failures[0].reason and "4993 bytes of the source's 5000" in failures[0].reason
    assert "digest-mismatch" not in {p.kind for p in report.problems}
    assert source.opened[layer_key] == 4


def test_a_full_length_blob_whose_bytes_differ_is_still_digest_mismatch():
    source = MemoryBackend()
    layer = b"l" * 5000
    TreeWriter(source).image("app", [layer], tag="v1")
    layer_key = key_of(BlobData(Digest("sha256", hashlib.sha256(layer).hexdigest())))
    source.put_bytes(layer_key, b"X" * 5000)
    report = Engine(source, MemoryBackend(), SyncOptions(jobs=1)).run()
    assert [p.kind for p in report.problems if p.key == layer_key] == ["digest-mismatch"]


# -- the pass's own bookkeeping on a destination whose reads keep failing ------------------------


def test_a_replica_marker_that_cannot_be_read_stops_neither_the_pass_nor_raises_from_deletes():
    """Found by the fault proxy: a transient failure reading ``.syncagent/replica.json`` ended the
    run with a traceback. Now the pass goes on (the marker is written by a later one) and a delete
    pass that cannot check the marker is reported, not raised."""
    source = MemoryBackend()
    write_tree(source, TreeShape(repositories=2, tags_per_repository=1, layer_bytes=(100, 200)))
    dest = FlakyReads(failures=1000, flaky=lambda key: key == ".syncagent/replica.json")
    report = Engine(source, dest, SyncOptions(jobs=1)).run()
    assert report.problems == [] and report.counters["tags_published"] == 2
    assert not dest.exists(".syncagent/replica.json")

    deleting = Engine(source, dest, SyncOptions(jobs=1, delete=True)).run()
    assert [p.kind for p in deleting.problems] == ["delete-failed"]
    assert "replica.json" in deleting.problems[0].reason and "(tried 4 times)" in deleting.problems[0].reason
