"""The behaviour every backend must show. A new backend is done when it passes all of this."""

from __future__ import annotations

import io
import os
import threading

import pytest

from backends import Entry, InvalidKey, NotFound, staged_puts_of


class Boom(Exception):
    """Raised by a test's before_commit to abandon a put."""


class CheckingStream(io.RawIOBase):
    """A stream that, on every read, runs ``check`` (e.g. "the key is still invisible")."""

    def __init__(self, data: bytes, check, chunk: int = 256 * 1024) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._check = check
        self._chunk = chunk
        self.checks = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._check()
        self.checks += 1
        if size is None or size < 0:
            size = len(self._data) - self._pos
        size = min(size, self._chunk)
        out = bytes(self._data[self._pos : self._pos + size])
        self._pos += len(out)
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class FailingStream(io.RawIOBase):
    """Yields some bytes, then fails like a source that went away."""

    def __init__(self, good: bytes) -> None:
        self._good = good
        self._sent = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self._sent:
            self._sent = True
            return self._good
        raise IOError("source connection lost")

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def keys_of(backend, prefix: str = "") -> list[str]:
    return sorted(info.key for info in backend.iter_objects(prefix))


def test_missing_key_is_typed_not_found(backend_under_test):
    backend = backend_under_test.backend
    with pytest.raises(NotFound):
        backend.stat("no/such/key")
    with pytest.raises(NotFound):
        backend.open_read("no/such/key")
    assert not backend.exists("no/such/key")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/./b", "trailing/", "..", "a/.."])
def test_malformed_keys_are_rejected(backend_under_test, key):
    backend = backend_under_test.backend
    with pytest.raises(InvalidKey):
        backend.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        backend.stat(key)
    assert keys_of(backend) == []


def test_zero_byte_object(backend_under_test):
    backend = backend_under_test.backend
    info = backend.put_bytes("empty/object", b"")
    assert info.size == 0
    assert backend.stat("empty/object").size == 0
    assert backend.read_bytes("empty/object") == b""
    assert keys_of(backend) == ["empty/object"]


def test_multi_mib_object_round_trips(backend_under_test):
    backend = backend_under_test.backend
    data = os.urandom(13 * 1024 * 1024 + 17)
    info = backend.put("big/blob", io.BytesIO(data), size=len(data))
    assert info.size == len(data)
    assert backend.stat("big/blob").size == len(data)
    with backend.open_read("big/blob") as stream:
        received = bytearray()
        while chunk := stream.read(1 << 20):
            received += chunk
    assert bytes(received) == data
    assert backend_under_test.leftovers() == []


def test_overwrite_replaces_whole_object(backend_under_test):
    backend = backend_under_test.backend
    backend.put_bytes("k/v", b"first version, longer")
    backend.put_bytes("k/v", b"second")
    assert backend.read_bytes("k/v") == b"second"
    assert backend.stat("k/v").size == 6
    assert keys_of(backend) == ["k/v"]


def test_listing_after_put_and_after_delete(backend_under_test):
    backend = backend_under_test.backend
    for key in ["r/a/one", "r/a/two", "r/b/deep/three", "r/top"]:
        backend.put_bytes(key, key.encode())
    assert sorted(backend.iter_children("r/"), key=lambda e: e.name) == [
        Entry("a", True),
        Entry("b", True),
        Entry("top", False),
    ]
    assert sorted(backend.iter_children("r/a/"), key=lambda e: e.name) == [Entry("one", False), Entry("two", False)]
    assert keys_of(backend, "r/b/") == ["r/b/deep/three"]
    assert {i.key: i.size for i in backend.iter_objects("r/")} == {
        "r/a/one": 7,
        "r/a/two": 7,
        "r/b/deep/three": 14,
        "r/top": 5,
    }
    backend.delete("r/b/deep/three")
    assert sorted(e.name for e in backend.iter_children("r/")) == ["a", "top"]
    assert list(backend.iter_children("r/b/")) == []
    backend.delete("r/a/one")
    assert keys_of(backend) == ["r/a/two", "r/top"]


def test_listing_a_missing_prefix_yields_nothing(backend_under_test):
    backend = backend_under_test.backend
    backend.put_bytes("present/key", b"1")
    assert list(backend.iter_children("absent/")) == []
    assert list(backend.iter_objects("absent/")) == []
    assert list(backend.iter_objects("present/ke/")) == []


def test_prefix_listing_does_not_match_partial_names(backend_under_test):
    backend = backend_under_test.backend
    backend.put_bytes("app/x", b"1")
    backend.put_bytes("app2/y", b"2")
    assert keys_of(backend, "app/") == ["app/x"]


def test_deleting_a_missing_key_is_not_an_error(backend_under_test):
    backend = backend_under_test.backend
    backend.delete("never/was/here")
    backend.put_bytes("x/y", b"1")
    backend.delete("x/y")
    backend.delete("x/y")
    assert keys_of(backend) == []


def test_new_object_is_invisible_until_committed(backend_under_test):
    backend = backend_under_test.backend
    data = os.urandom(3 * 1024 * 1024)

    def still_invisible():
        assert not backend.exists("fresh/dir/object")
        assert list(backend.iter_children("")) == []

    stream = CheckingStream(data, still_invisible)
    backend.put("fresh/dir/object", stream, size=len(data), before_commit=still_invisible)
    assert stream.checks > 2
    assert backend.read_bytes("fresh/dir/object") == data


def test_old_object_stays_whole_until_replacement_commits(backend_under_test):
    backend = backend_under_test.backend
    backend.put_bytes("k/current", b"old-content")
    new = os.urandom(2 * 1024 * 1024)

    def old_still_there():
        assert backend.read_bytes("k/current") == b"old-content"

    backend.put("k/current", CheckingStream(new, old_still_there), size=len(new), before_commit=old_still_there)
    assert backend.read_bytes("k/current") == new


def test_rejected_commit_leaves_nothing(backend_under_test):
    backend = backend_under_test.backend
    backend.put_bytes("keep/me", b"old")
    big = os.urandom(12 * 1024 * 1024)
    for key, data in [("new/dir/obj", b"small"), ("keep/me", b"replacement"), ("new/big", big)]:
        with pytest.raises(Boom):
            backend.put(key, io.BytesIO(data), size=len(data), before_commit=_raise_boom)
    assert keys_of(backend) == ["keep/me"]
    assert backend.read_bytes("keep/me") == b"old"
    assert backend_under_test.leftovers() == []


def test_failing_source_stream_leaves_nothing(backend_under_test):
    backend = backend_under_test.backend
    with pytest.raises(IOError):
        backend.put("broken/obj", FailingStream(b"partial" * 1000))
    assert keys_of(backend) == []
    assert backend_under_test.leftovers() == []


def test_concurrent_puts_of_one_key_leave_one_whole_version(backend_under_test):
    backend = backend_under_test.backend
    versions = [bytes([i]) * (256 * 1024 + i) for i in range(6)]
    errors: list[BaseException] = []

    def put(data: bytes) -> None:
        try:
            backend.put_bytes("race/key", data)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert backend.read_bytes("race/key") in versions
    assert backend_under_test.leftovers() == []


def test_concurrent_puts_into_one_new_prefix_all_land(backend_under_test):
    backend = backend_under_test.backend
    keys = [f"shared/new/dir/{i}/obj" for i in range(4)] + [f"shared/new/{i}" for i in range(4)]
    errors: list[BaseException] = []

    def put(key: str) -> None:
        try:
            backend.put_bytes(key, key.encode())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert keys_of(backend) == sorted(keys)
    assert all(backend.read_bytes(k) == k.encode() for k in keys)


def _staged_puts(backend_under_test):
    staged = staged_puts_of(backend_under_test.backend)
    if staged is None:
        pytest.skip("this backend has no StagedPuts ability")
    return staged


def test_a_staged_object_is_invisible_until_published_and_whole_after(backend_under_test):
    backend = _staged_puts(backend_under_test)
    backend.put_bytes("k/old", b"old-content")
    data = {"deep/new/dir/obj": os.urandom(3 * 1024 * 1024), "k/old": b"new", "k/sibling": b"s", "top": b""}
    staged = [backend.stage(key, io.BytesIO(content), size=len(content)) for key, content in data.items()]
    assert keys_of(backend) == ["k/old"] and backend.read_bytes("k/old") == b"old-content"
    assert [entry.name for entry in backend.iter_children("")] == ["k"]  # no new prefix shows, not even empty
    backend.barrier()
    assert keys_of(backend) == ["k/old"]
    for item in staged:
        assert item.size == len(data[item.key])
        info = backend.publish(item)
        assert (info.key, info.size) == (item.key, len(data[item.key]))
        assert backend.read_bytes(item.key) == data[item.key]
    backend.barrier()
    assert keys_of(backend) == sorted(data)
    assert backend_under_test.leftovers() == []


def test_a_discarded_or_rejected_stage_leaves_nothing(backend_under_test):
    backend = _staged_puts(backend_under_test)
    backend.put_bytes("keep/me", b"old")
    with pytest.raises(Boom):
        backend.stage("new/dir/rejected", io.BytesIO(b"x" * 1000), before_commit=_raise_boom)
    with pytest.raises(IOError):
        backend.stage("new/dir/broken", FailingStream(b"partial" * 1000))
    for key in ("new/dir/obj", "keep/me"):
        backend.discard(backend.stage(key, io.BytesIO(b"never published")))
    backend.barrier()
    assert keys_of(backend) == ["keep/me"] and backend.read_bytes("keep/me") == b"old"
    assert backend_under_test.leftovers() == []


def _raise_boom() -> None:
    raise Boom("digest mismatch")


def test_read_prefix_reads_at_most_the_asked_size(backend_under_test):
    backend = backend_under_test.backend
    backend.put_bytes("short/object", b"0123456789")
    assert backend.read_prefix("short/object", 4) == b"0123"
    assert backend.read_prefix("short/object", 100) == b"0123456789"
    with pytest.raises(NotFound):
        backend.read_prefix("short/missing", 10)


def test_listing_md5_hints_match_the_content(backend_under_test):
    """Stores that report MD5 hints in listings report the content's MD5 for objects stored whole
    (or nothing, e.g. for multipart uploads); other stores report none."""
    import hashlib

    backend = backend_under_test.backend
    big = os.urandom(13 * 1024 * 1024 + 17)
    backend.put_bytes("hints/small", b"sha256:" + b"ab" * 32)
    backend.put_bytes("hints/overwritten", b"first version")
    backend.put_bytes("hints/overwritten", b"second version")
    backend.put("hints/big", io.BytesIO(big), size=len(big))
    hints = {info.key: info.md5 for info in backend.iter_objects("hints/")}
    if not backend.capabilities.listing_md5:
        assert set(hints.values()) == {None}
        return
    assert hints["hints/small"] == hashlib.md5(b"sha256:" + b"ab" * 32).hexdigest()
    assert hints["hints/overwritten"] == hashlib.md5(b"second version").hexdigest()
    assert hints["hints/big"] in (None, hashlib.md5(big).hexdigest())


MALFORMED = ["r/a//b", "r/../up", "r/./here", "r/odd\\name"]


def test_listings_yield_malformed_keys_as_stored_and_nothing_reads_them(backend_under_test):
    """Keys another client wrote that are no valid keys are listed, never dropped (so callers can report
    them), and every operation given one refuses it."""
    made = backend_under_test
    backend = made.backend
    backend.put_bytes("r/ok", b"fine")
    planted = [key for key in MALFORMED if made.plant(key, b"planted")]
    if not planted:
        pytest.skip("this store cannot hold a malformed key")
    assert keys_of(backend, "r/") == sorted(["r/ok", *planted])
    children = {entry.name: entry.is_prefix for entry in backend.iter_children("r/")}
    for key in planted:
        name, slash, rest = key[len("r/"):].partition("/")
        assert children[name] is bool(slash), key
        if rest.startswith("/"):
            assert [e.name for e in backend.iter_children(f"r/{name}/")] == [""]
        for operation in (backend.stat, backend.open_read, backend.delete, lambda k: backend.put_bytes(k, b"x")):
            with pytest.raises(InvalidKey):
                operation(key)
    assert keys_of(backend, "r/") == sorted(["r/ok", *planted])
    assert backend.read_bytes("r/ok") == b"fine"
