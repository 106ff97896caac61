"""The RADOS backend's own layout: names, heads, errors, striping, dead writers, cleanup.

The conformance suite checks the behaviour every backend shares; this file
checks what is particular to RADOS. Tests marked ``ceph`` run against the
session's throwaway cluster (tests/support/fixtures_ceph.py) with the lowered
limits of tests/support/fixtures_backend_rados.py: 4 MiB objects, 5 MiB writes.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backends import BackendError, BackendUnavailable, ConfigurationError, NotFound, PermissionDenied, TransientError
from backends.opening import open_backend
from tests.support.components import missing_component
from tests.support.fixtures_backend_rados import MAX_OBJECT_SIZE, MAX_WRITE_SIZE_MIB

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


@pytest.fixture
def rados_module():
    try:
        from backends.rados.errors import load_rados

        return load_rados()
    except BackendUnavailable as exc:
        missing_component(f"the Python module rados ({exc})")


# --- without a cluster ----------------------------------------------------------------


def test_url_names_pool_namespace_and_options(rados_module):
    backend = open_backend("rados://registry/mirror?conf=/etc/ceph/site-b.conf&id=syncagent&keyring=/k&chunk_size=4194304")
    assert (backend.pool, backend.namespace) == ("registry", "mirror")
    assert backend.options.conf == "/etc/ceph/site-b.conf"
    assert backend.options.id == "syncagent"
    assert backend.options.chunk_size == 4194304
    assert backend.options.inline_max == 16384  # defaults stay
    assert backend.url.startswith("rados://registry/mirror?")
    assert open_backend("rados://registry").namespace == ""
    assert open_backend("rados://registry/").namespace == ""
    backend.close()  # never connected: nothing to do


@pytest.mark.parametrize(
    "url",
    ["rados://pool/ns?colour=blue", "rados:///ns", "rados://pool/a/b", "rados://pool/ns?chunk_size=big", "rados://pool/ns?inline_max=-1"],
)
def test_bad_urls_are_configuration_errors(rados_module, url):
    with pytest.raises(ConfigurationError):
        open_backend(url)


def test_missing_binding_says_how_to_install(monkeypatch):
    import backends.rados.errors as module

    monkeypatch.setattr(module, "_rados", None)
    monkeypatch.setitem(sys.modules, "rados", None)
    with pytest.raises(BackendUnavailable, match="python3-rados.*venv-link-rados"):
        open_backend("rados://pool/ns")


def test_object_names_have_a_fixed_length_whatever_the_key():
    from backends.rados.layout import chunk_oid, index_oid, parse_chunk_oid

    long_prefix = "docker/registry/v2/repositories/" + "a" * 255 + "/_manifests/tags/" + "t" * 128 + "/index/sha256/" + "f" * 64 + "/"
    assert len(index_oid(long_prefix)) == len(index_oid("")) < 64
    assert index_oid("a/") != index_oid("a/b/")
    assert parse_chunk_oid(chunk_oid("0123abcd", 17)) == ("0123abcd", 17)
    assert parse_chunk_oid(index_oid("x/")) is None


@pytest.mark.parametrize(
    "key, parent, name",
    [("top", "", "top"), ("a/b", "a/", "b"), ("docker/registry/v2/blobs/sha256/ab/abcd/data", "docker/registry/v2/blobs/sha256/ab/abcd/", "data")],
)
def test_split_key(key, parent, name):
    from backends.rados.layout import split_key, split_prefix

    assert split_key(key) == (parent, name)
    assert split_prefix(key + "/") == (parent, name)


def test_head_round_trips_and_rejects_garbage():
    from backends.rados.layout import Head

    head = Head(13 * MIB + 17, "0" * 32, 4 * MIB, 4)
    assert Head.decode(head.encode(), "k") == head
    assert head.encode().isascii()  # omap_cmp compares it as text
    for raw in (b"", b"{", b'{"size": 1}', Head(100, "g", 10, 2).encode()):
        with pytest.raises(BackendError):
            Head.decode(raw, "k")


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda r: r.ObjectNotFound("gone", errno=errno.ENOENT), NotFound),
        (lambda r: r.PermissionError("no", errno=errno.EPERM), PermissionDenied),
        (lambda r: r.PermissionDeniedError("no", errno=errno.EACCES), PermissionDenied),
        (lambda r: r.TimedOut("slow", errno=errno.ETIMEDOUT), TransientError),
        (lambda r: r.OSError("down", errno=errno.ESHUTDOWN), TransientError),
        (lambda r: r.OSError("down", errno=errno.ENOTCONN), TransientError),
        (lambda r: r.OSError("busy", errno=errno.EAGAIN), TransientError),
        (lambda r: r.ConnectionShutdown("bye"), TransientError),
        (lambda r: r.OSError("too big", errno=errno.EFBIG), BackendError),
        (lambda r: r.Error("odd"), BackendError),
    ],
)
def test_rados_errors_become_typed_errors(rados_module, make, expected):
    from backends.rados.errors import translate

    translated = translate(make(rados_module), "some/key")
    assert type(translated) is expected
    assert "some/key" in str(translated)


def test_size_limit_errors_name_the_cluster_setting(rados_module):
    from backends.rados.errors import translate

    assert "osd_max_object_size" in str(translate(rados_module.OSError("x", errno=errno.EFBIG), "k"))
    assert "osd_max_write_size" in str(translate(rados_module.OSError("x", errno=errno.EMSGSIZE), "k"))


@pytest.mark.parametrize("text, value", [("134217728\n", 134217728), ("90", 90), ("128M", 128 * MIB), ("4Ki", 4096), ("", 0), ("x", 0)])
def test_parse_size(text, value):
    from backends.rados.options import parse_size

    assert parse_size(text) == value


DEEP = b'{"size":' * 200_000 + b"1" + b"}" * 200_000


def in_a_small_thread(function):
    """Run ``function`` on a thread with a 256 KiB stack (the sidecar's threads are small); its result or error."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    previous = threading.stack_size(256 * 1024)
    try:
        thread = threading.Thread(target=run)
        thread.start()
    finally:
        threading.stack_size(previous)
    thread.join()
    return outcome


def test_values_from_the_pool_are_bounded_and_never_quoted():
    import hashlib

    from backends.rados.layout import Head, garbage_chunks, garbage_value
    from backends.rados.writers import Writer

    for raw in (DEEP, b"[" * 300_000):
        outcome = in_a_small_thread(lambda: Head.decode(raw, "k"))
        assert isinstance(outcome.get("error"), BackendError), outcome
        assert in_a_small_thread(lambda: garbage_chunks(raw)) == {"value": None}
        assert in_a_small_thread(lambda: Writer.decode(raw)) == {"value": None}
    secret = b'{"size": 1, "gen": "confidential-looking-value", "chunk_size": 1, "chunks": "two"}'
    with pytest.raises(BackendError) as raised:
        Head.decode(secret, "some/key")
    message = str(raised.value)
    assert "confidential" not in message and str(len(secret)) in message
    assert hashlib.sha256(secret).hexdigest()[:12] in message
    with pytest.raises(BackendError) as raised:
        Head.decode(Head(100, "confidential", 10, 2).encode(), "k")  # does not cover its size
    assert "confidential" not in str(raised.value)
    for bad in (b'{"size": 1e999, "gen": "g", "chunk_size": 0, "chunks": 0}', b'{"size": -1, "gen": "g", "chunk_size": 0, "chunks": 0}',
                b'{"size": true, "gen": "g", "chunk_size": 0, "chunks": 0}', b'{"size": 1, "gen": 7, "chunk_size": 0, "chunks": 0}'):
        with pytest.raises(BackendError):
            Head.decode(bad, "k")
    assert garbage_chunks(garbage_value(3)) == 3
    assert garbage_chunks(garbage_value(None)) is None


def dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_dead_and_live_writers():
    from backends.processes import WriterIdentity
    from backends.rados.writers import Writer, ended, started

    me = Writer.this_process()
    here = me.identity
    assert here == WriterIdentity.current()
    dead = Writer(WriterIdentity(here.host, here.boot, here.pidns, dead_pid(), here.start), time.time())
    assert dead.abandoned("g", 3600)
    started("mine")
    try:
        assert not me.abandoned("mine", 3600)  # a put of this process, still running
    finally:
        ended("mine")
    assert me.abandoned("mine", 3600)  # this process gave it up
    elsewhere = WriterIdentity("elsewhere", "b", "4026531836", 1, "1")
    assert not Writer(elsewhere, time.time()).abandoned("g", 3600)
    assert Writer(elsewhere, time.time() - 7200).abandoned("g", 3600)


def test_a_writer_in_another_pid_namespace_is_judged_by_time_not_by_pid():
    """Its pid means another process here (issue 13: the pid namespace was ignored)."""
    from backends.processes import WriterIdentity
    from backends.rados.writers import Writer

    here = WriterIdentity.current()
    other_namespace = WriterIdentity(here.host, here.boot, here.pidns + "0", dead_pid(), here.start)
    assert not Writer(other_namespace, time.time()).abandoned("g", 3600)
    assert Writer(other_namespace, time.time() - 7200).abandoned("g", 3600)


def test_writer_records_round_trip_and_old_ones_without_pidns_are_judged_by_time():
    from backends.rados.writers import Writer

    me = Writer.this_process()
    assert Writer.decode(me.encode()) == me
    assert me.encode().isascii()  # omap_cmp compares it as text
    old = json.dumps({"host": me.identity.host, "boot": me.identity.boot, "pid": dead_pid(), "start": me.identity.start,
                      "since": time.time()}).encode()
    decoded = Writer.decode(old)
    assert decoded is not None and decoded.identity.pidns == ""
    assert not decoded.abandoned("g", 3600)  # never dead by its pid: it may come from another pid namespace
    assert decoded.abandoned("g", 0)
    for raw in (b"", b"[]", b'{"host": "h"}', b'{"host":"h","boot":"b","pid":"1","start":"1","since":1}',
                b'{"host":"h","boot":"b","pid":1,"start":"1","since":1e999}'):
        assert Writer.decode(raw) is None


# --- against the cluster ------------------------------------------------------------------


def namespace_objects(backend) -> dict[str, int]:
    io_ = backend._io()
    return {obj.key: io_.stat(obj.key)[0] for obj in io_.list_objects()}


def chunks_of(backend) -> list[str]:
    from backends.rados.layout import CHUNK_PREFIX

    return sorted(name for name in namespace_objects(backend) if name.startswith(CHUNK_PREFIX))


def head_of(backend, key):
    from backends.rados.layout import Head, index_oid, split_key

    parent, name = split_key(key)
    return Head.decode(backend._values(index_oid(parent), ["o:" + name], key)["o:" + name], key)


@pytest.fixture
def rados_backend(rados_pool):
    backend = rados_pool.backend()
    yield backend
    backend.close()


@pytest.mark.ceph
def test_limits_come_from_the_cluster(rados_pool):
    backend = rados_pool.backend(chunk_size=64 * MIB)
    limits = backend.limits()
    assert limits.max_object_size == MAX_OBJECT_SIZE
    assert limits.max_write_size == MAX_WRITE_SIZE_MIB * MIB
    assert limits.chunk_size == MAX_OBJECT_SIZE  # asked for 64 MiB, the cluster allows 4
    assert limits.write_size <= limits.max_write_size // 2
    backend.close()


@pytest.mark.ceph
def test_large_object_is_striped_into_chunk_objects(rados_backend):
    data = os.urandom(13 * MIB + 17)
    rados_backend.put("docker/registry/v2/blobs/sha256/ab/abcd/data", io.BytesIO(data))
    head = head_of(rados_backend, "docker/registry/v2/blobs/sha256/ab/abcd/data")
    assert (head.size, head.chunk_size, head.chunks) == (len(data), MAX_OBJECT_SIZE, 4)
    objects = namespace_objects(rados_backend)
    sizes = [objects[f"chunk.{head.gen}.{n}"] for n in range(4)]
    assert sizes == [MAX_OBJECT_SIZE] * 3 + [len(data) - 3 * MAX_OBJECT_SIZE]
    assert rados_backend._io().get_xattr(f"chunk.{head.gen}.0", "syncagent.key") == b"docker/registry/v2/blobs/sha256/ab/abcd/data"
    assert rados_backend.read_bytes("docker/registry/v2/blobs/sha256/ab/abcd/data") == data
    with rados_backend.open_read("docker/registry/v2/blobs/sha256/ab/abcd/data") as stream:
        assert stream.read(10) == data[:10]
        assert stream.read(5 * MIB) == data[10 : 5 * MIB + 10]  # across a chunk boundary
    assert rados_backend.scan_leftovers() == []


@pytest.mark.ceph
def test_small_objects_live_in_the_index(rados_backend):
    rados_backend.put_bytes("repositories/app/_manifests/tags/latest/current/link", b"sha256:" + b"a" * 64)
    rados_backend.put_bytes("empty", b"")
    assert chunks_of(rados_backend) == []
    assert head_of(rados_backend, "empty").chunks == 0
    assert rados_backend.read_bytes("repositories/app/_manifests/tags/latest/current/link") == b"sha256:" + b"a" * 64


@pytest.mark.ceph
def test_overwrite_removes_the_replaced_chunks(rados_backend):
    rados_backend.put("k", io.BytesIO(os.urandom(9 * MIB)))
    first = head_of(rados_backend, "k")
    second_data = os.urandom(5 * MIB)
    rados_backend.put("k", io.BytesIO(second_data))
    second = head_of(rados_backend, "k")
    assert chunks_of(rados_backend) == [f"chunk.{second.gen}.0", f"chunk.{second.gen}.1"]
    assert first.gen != second.gen
    rados_backend.put_bytes("k", b"small now")
    assert chunks_of(rados_backend) == []
    assert rados_backend.read_bytes("k") == b"small now"
    assert rados_backend.scan_leftovers() == []


@pytest.mark.ceph
def test_delete_removes_every_chunk_and_index_object(rados_backend):
    rados_backend.put("a/b/big", io.BytesIO(os.urandom(10 * MIB)))
    rados_backend.put_bytes("a/small", b"x")
    rados_backend.put_bytes("top", b"y")
    assert len(chunks_of(rados_backend)) == 3
    for key in ("a/b/big", "a/small", "top"):
        rados_backend.delete(key)
    assert namespace_objects(rados_backend) == {}
    assert list(rados_backend.iter_children("")) == []


@pytest.mark.ceph
def test_listing_pages_through_large_indexes(rados_backend, monkeypatch):
    import backends.rados.backend as module

    monkeypatch.setattr(module, "PAGE", 3)
    keys = [f"d/obj{i}" for i in range(10)] + [f"d/sub{i}/x" for i in range(5)]
    for key in keys:
        rados_backend.put_bytes(key, b"1")
    children = sorted((e.name, e.is_prefix) for e in rados_backend.iter_children("d/"))
    assert children == sorted([(f"obj{i}", False) for i in range(10)] + [(f"sub{i}", True) for i in range(5)])
    assert sorted(i.key for i in rados_backend.iter_objects("")) == sorted(keys)


@pytest.mark.ceph
def test_missing_pool_is_not_found(rados_pool):
    from backends.rados import RadosBackend

    backend = RadosBackend("no-such-pool", "ns", rados_pool.options())
    with pytest.raises(NotFound):
        list(backend.iter_children(""))
    backend.close()


@pytest.mark.ceph
def test_read_only_cephx_user_gets_permission_denied(rados_pool, rados_backend, tmp_path):
    rados_backend.put_bytes("k/v", b"value")
    name = "client.syncagent-test-ro"
    keyring = tmp_path / "ro.keyring"
    keyring.write_text(rados_pool.cluster.ceph("auth", "get-or-create", name, "mon", "allow r", "osd", f"allow r pool={rados_pool.name}"))
    reader = rados_pool.backend(rados_backend.namespace, id="syncagent-test-ro", keyring=str(keyring))
    try:
        assert reader.read_bytes("k/v") == b"value"
        assert [e.name for e in reader.iter_children("")] == ["k"]
        with pytest.raises(PermissionDenied):
            reader.put_bytes("k/w", b"nope")
        with pytest.raises(PermissionDenied):
            reader.delete("k/v")
    finally:
        reader.close()
        rados_pool.cluster.ceph("auth", "rm", name)
    assert rados_backend.scan_leftovers() == []


@pytest.mark.ceph
def test_reader_of_a_replaced_object_gets_a_retryable_error(rados_backend):
    rados_backend.put("k", io.BytesIO(os.urandom(9 * MIB)))
    with rados_backend.open_read("k") as stream:
        stream.read(MIB)
        rados_backend.put_bytes("k", b"replaced")
        with pytest.raises(TransientError):
            while stream.read(MIB):
                pass


CHILD = r"""
import io, os, sys
from backends.rados import RadosBackend, RadosOptions

conf, keyring, pool, namespace, key, ready_fd, signal_after = sys.argv[1:]
ready_fd, signal_after = int(ready_fd), int(signal_after)

class Source(io.RawIOBase):
    sent = 0
    def readable(self):
        return True
    def readinto(self, buffer):
        if self.sent >= signal_after:
            os.write(ready_fd, b"!")    # the chunks so far are stored: kill me now
            sys.stdin.buffer.read()     # the parent never writes: blocks until SIGKILL
        n = min(len(buffer), signal_after - self.sent)
        buffer[:n] = b"\xab" * n
        self.sent += n
        return n

backend = RadosBackend(pool, namespace, RadosOptions(conf=conf, keyring=keyring))
backend.put(key, Source())
"""


@pytest.mark.ceph
def test_writer_killed_mid_put_leaves_nothing_visible(rados_pool, rados_backend):
    key = "docker/registry/v2/blobs/sha256/cd/cdef/data"
    ready, ready_w = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(rados_pool.cluster.conf), str(rados_pool.cluster.keyring), rados_pool.name,
         rados_backend.namespace, key, str(ready_w), str(3 * MAX_OBJECT_SIZE)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(ready_w,), cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    os.close(ready_w)
    try:
        signalled, _, _ = select.select([ready], [], [], 120)  # a bound on a broken child, not a synchronisation
        assert signalled and os.read(ready, 1) == b"!", child.stderr.read().decode() if child.poll() is not None else "no signal"
        leftovers = rados_backend.scan_leftovers()
        assert any(line.startswith("record t:data/") for line in leftovers), leftovers
        assert sum(line.startswith("orphan chunk") for line in leftovers) >= 2, leftovers
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stderr.close()
        os.close(ready)
    assert child.returncode == -signal.SIGKILL

    assert list(rados_backend.iter_children("")) == []
    assert list(rados_backend.iter_objects("")) == []
    assert rados_backend.scan_leftovers() != []  # the dead writer's chunks, recorded and invisible
    assert not rados_backend.exists(key)
    assert rados_backend.scan_leftovers() == []  # the stat of the key cleaned up after the dead writer

    data = os.urandom(6 * MIB)
    rados_backend.put(key, io.BytesIO(data))
    assert rados_backend.read_bytes(key) == data
    assert [info.key for info in rados_backend.iter_objects("")] == [key]
    assert rados_backend.scan_leftovers() == []


def plant_leftovers(backend, parent: str, name: str, gen: str, record: dict | None, chunks: int = 2) -> list[str]:
    """What a put of ``parent + name`` that never committed leaves: its t: record (as ``record``, written as
    JSON the way any version of the backend wrote it) or, for ``record=None``, an x: record, and chunk
    objects; the chunk objects' names."""
    import rados

    from backends.rados.layout import chunk_oid, garbage_key, index_oid, writer_key

    io_ = backend._io()
    omap_key, value = (writer_key(name, gen), json.dumps(record)) if record is not None else (garbage_key(name, gen), '{"chunks": null}')
    with rados.WriteOpCtx() as op:
        io_.set_omap(op, [omap_key], [value.encode()])
        io_.operate_write_op(op, index_oid(parent))
    names = [chunk_oid(gen, number) for number in range(chunks)]
    for oid in names:
        io_.write_full(oid, b"partial")
    return names


def writer_record(host: str, boot: str, pid: int, start: str, since: float, pidns: str | None) -> dict:
    record = {"host": host, "boot": boot, "pid": pid, "start": start, "since": since}
    return record if pidns is None else {**record, "pidns": pidns}


@pytest.mark.ceph
def test_put_of_another_host_is_cleaned_only_once_abandoned(rados_backend):
    from backends.rados.layout import chunk_oid

    plant_leftovers(rados_backend, "d/", "obj", "a" * 32, writer_record("elsewhere", "other-boot", 4242, "1", time.time() - 2 * 86400, "1"))
    plant_leftovers(rados_backend, "d/", "obj", "b" * 32, writer_record("elsewhere", "other-boot", 4242, "1", time.time(), "1"))
    rados_backend.put_bytes("d/obj", b"v")
    rados_backend.stat("d/obj")  # an inline put of a new key reads nothing first: the stat looks
    assert chunks_of(rados_backend) == [chunk_oid("b" * 32, 0), chunk_oid("b" * 32, 1)]
    assert rados_backend.scan_leftovers() == sorted(
        [f"orphan chunk {chunk_oid('b' * 32, 0)}", f"orphan chunk {chunk_oid('b' * 32, 1)}", f"record t:obj/{'b' * 32} in the index of 'd/'"]
    )


@pytest.mark.ceph
def test_writers_of_this_host_judged_by_pid_only_in_their_pid_namespace(rados_backend):
    """A pid names a process only within its pid namespace (issue 13): a record from another pid
    namespace, or an old one that does not say its namespace, is judged by ``abandoned_after`` alone."""
    from backends.processes import WriterIdentity

    here, gone = WriterIdentity.current(), dead_pid()
    recent, old = time.time(), time.time() - 2 * 86400
    kept = plant_leftovers(rados_backend, "d/", "obj", "a" * 32, writer_record(here.host, here.boot, gone, here.start, recent, here.pidns + "0"))
    kept += plant_leftovers(rados_backend, "d/", "obj", "b" * 32, writer_record(here.host, here.boot, gone, here.start, recent, None))
    plant_leftovers(rados_backend, "d/", "obj", "c" * 32, writer_record(here.host, here.boot, gone, here.start, recent, here.pidns))
    plant_leftovers(rados_backend, "d/", "obj", "d" * 32, writer_record(here.host, here.boot, gone, here.start, old, None))
    rados_backend.put_bytes("d/obj", b"v")
    rados_backend.stat("d/obj")
    assert chunks_of(rados_backend) == sorted(kept)
    assert [line for line in rados_backend.scan_leftovers() if line.startswith("record")] == [
        f"record t:obj/{'a' * 32} in the index of 'd/'", f"record t:obj/{'b' * 32} in the index of 'd/'"]


@pytest.mark.ceph
@pytest.mark.parametrize("look", ["stat", "read"])
def test_a_stat_or_read_of_the_key_collects_what_dead_writers_left(rados_backend, look):
    """A blob is never put again once whole: what dead puts of it left must go when it is looked at."""
    from backends.processes import WriterIdentity

    rados_backend.put("d/obj", io.BytesIO(b"x" * (MAX_OBJECT_SIZE + 1)))
    here = WriterIdentity.current()
    plant_leftovers(rados_backend, "d/", "obj", "a" * 32, writer_record(here.host, here.boot, dead_pid(), here.start, time.time(), here.pidns))
    plant_leftovers(rados_backend, "d/", "obj", "b" * 32, None, chunks=3)
    live = plant_leftovers(rados_backend, "d/", "obj", "c" * 32, writer_record("elsewhere", "b", 1, "1", time.time(), "1"))
    assert len(rados_backend.scan_leftovers()) == 2 + 3 + 2 + 3
    if look == "stat":
        assert rados_backend.stat("d/obj").size == MAX_OBJECT_SIZE + 1
    else:
        assert rados_backend.read_bytes("d/obj") == b"x" * (MAX_OBJECT_SIZE + 1)
    assert rados_backend.scan_leftovers() == sorted(
        [f"orphan chunk {oid}" for oid in live] + [f"record t:obj/{'c' * 32} in the index of 'd/'"])


@pytest.mark.ceph
def test_a_failed_put_whose_cleanup_fails_says_so_and_the_next_stat_cleans_up(rados_backend, caplog, monkeypatch):
    def refuse(*args, **kwargs):
        raise TransientError("d/obj: the cluster does not answer", key="d/obj")

    def veto():
        raise RuntimeError("vetoed")

    monkeypatch.setattr(rados_backend, "_remove_chunks", refuse)
    with caplog.at_level(logging.WARNING, logger="backends.rados"), pytest.raises(RuntimeError, match="vetoed"):
        rados_backend.put("d/obj", io.BytesIO(b"x" * (MAX_OBJECT_SIZE + 1)), before_commit=veto)
    assert [r.levelname for r in caplog.records if "did not commit" in r.getMessage() and "does not answer" in r.getMessage()] == ["WARNING"]
    assert any(line.startswith("record x:obj/") for line in rados_backend.scan_leftovers())
    monkeypatch.undo()
    with pytest.raises(NotFound):
        rados_backend.stat("d/obj")
    assert rados_backend.scan_leftovers() == []


@pytest.mark.ceph
@pytest.mark.parametrize("agents", [1, 2])
def test_concurrent_puts_and_deletes_keep_the_index_consistent(rados_pool, rados_backend, agents):
    """Threads put and delete keys under shared prefixes; afterwards listings show exactly what exists.
    With two agents (two backends on the namespace, as two processes), each trusts the markers it saw
    while the other prunes them."""
    backends = [rados_backend] + [rados_pool.backend(rados_backend.namespace) for _ in range(agents - 1)]
    final: dict[str, bytes] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        try:
            for round_ in range(12):
                key = f"s/d{round_ % 3}/e{round_ % 2}/k{number}"
                data = f"{number}-{round_}".encode() * (1 + round_ % 2)
                backends[number % agents].put_bytes(key, data)
                if round_ % 3 != 2:
                    backends[(number + 1) % agents].delete(key)
                else:
                    with lock:
                        final[key] = data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for other in backends[1:]:
        other.close()
    assert errors == []
    assert {i.key: i.size for i in rados_backend.iter_objects("")} == {k: len(v) for k, v in final.items()}
    assert all(rados_backend.read_bytes(k) == v for k, v in final.items())
    assert rados_backend.scan_leftovers() == []
    for key in final:
        rados_backend.delete(key)
    assert namespace_objects(rados_backend) == {}


@pytest.fixture
def other_agent(rados_pool, rados_backend):
    """A second backend on ``rados_backend``'s namespace: another process, with its own memory of markers."""
    other = rados_pool.backend(rados_backend.namespace)
    yield other
    other.close()


def listed(backend) -> dict[str, int]:
    return {info.key: info.size for info in backend.iter_objects("")}


@pytest.mark.ceph
def test_a_put_into_a_prefix_another_agent_pruned_away_is_listed(rados_backend, other_agent):
    """This backend saw r/x/ marked; another deletes its only object, which prunes r/x/ and r/ and their
    indexes. A put under r/x/ finds the index gone and adds the markers again."""
    rados_backend.put_bytes("r/x/k1", b"one")
    other_agent.delete("r/x/k1")
    assert namespace_objects(rados_backend) == {}
    rados_backend.put_bytes("r/x/k2", b"two")
    assert listed(other_agent) == {"r/x/k2": 3}
    assert rados_backend.scan_leftovers() == []


@pytest.mark.ceph
def test_a_put_into_an_index_a_prune_unmarked_is_listed(rados_backend, other_agent):
    """Another agent prunes r/x/ while a live put's t: record keeps its index: the index stays, without
    its marker, with u:. A put there from a backend that saw r/x/ marked must not trust it."""
    rados_backend.put_bytes("r/x/k1", b"one")
    plant_leftovers(rados_backend, "r/x/", "big", "c" * 32, writer_record("elsewhere", "other-boot", 4242, "1", time.time(), "1"))
    other_agent.delete("r/x/k1")
    assert "record u: in the index of 'r/x/'" in rados_backend.scan_leftovers()
    assert listed(other_agent) == {}
    rados_backend.put_bytes("r/x/k2", b"two")
    assert listed(other_agent) == {"r/x/k2": 3}
    assert [line for line in rados_backend.scan_leftovers() if line.startswith("record")] == [
        f"record t:big/{'c' * 32} in the index of 'r/x/'"]


@pytest.mark.ceph
def test_a_prune_that_died_after_removing_a_marker_is_repaired_by_the_next_put(rados_backend):
    """What a prune killed between removing r/x/'s marker and looking again leaves: u: in r/x/'s index,
    no marker. The next put there, even by a backend that saw the marker, adds it back."""
    import rados

    from backends.rados.layout import index_oid

    rados_backend.put_bytes("r/x/k1", b"one")
    io_ = rados_backend._io()
    with rados.WriteOpCtx() as op:
        io_.set_omap(op, ["u:"], [b"1"])
        io_.operate_write_op(op, index_oid("r/x/"))
    with rados.WriteOpCtx() as op:
        io_.remove_omap_keys(op, ["p:x"])
        io_.operate_write_op(op, index_oid("r/"))
    assert listed(rados_backend) == {}
    rados_backend.put_bytes("r/x/k2", b"two")
    assert listed(rados_backend) == {"r/x/k1": 3, "r/x/k2": 3}
    assert rados_backend.scan_leftovers() == []


@pytest.mark.ceph
def test_markers_a_dead_writer_left_out_are_added_by_the_next_stat(rados_backend):
    """A put killed between its commit and its listing markers: the next stat completes them."""
    import rados

    from backends.rados.layout import index_oid

    rados_backend.put_bytes("repo/tags/v0/link", b"zero")
    rados_backend.put_bytes("repo/tags/v1/link", b"one")
    io_ = rados_backend._io()
    with rados.WriteOpCtx() as op:
        io_.remove_omap_keys(op, ["p:v1"])
        io_.operate_write_op(op, index_oid("repo/tags/"))
    with rados.WriteOpCtx() as op:
        io_.set_omap(op, ["m:link"], [b""])
        io_.operate_write_op(op, index_oid("repo/tags/v1/"))
    assert sorted(e.name for e in rados_backend.iter_children("repo/tags/")) == ["v0"]
    assert "record m:link in the index of 'repo/tags/v1/'" in rados_backend.scan_leftovers()
    assert rados_backend.stat("repo/tags/v1/link").size == 3
    assert sorted(e.name for e in rados_backend.iter_children("repo/tags/")) == ["v0", "v1"]
    assert rados_backend.scan_leftovers() == []


@pytest.mark.ceph
def test_a_sync_after_a_dead_pass_completes_the_markers_of_its_last_history_link(rados_backend):
    """A pass killed between a history link's commit and its markers: the next sync completes them,
    though it takes that tag as up to date (its pass record makes it look at the history links)."""
    import rados

    from backends.memory import MemoryBackend
    from backends.rados.layout import index_oid
    from syncagent.sync.engine import Engine, SyncOptions
    from syncagent.sync.layout import Digest, TagIndexLink, key_of
    from syncagent.sync.records import RECORDS_PREFIX
    from syncagent.testing.synthetic import TreeShape, write_tree

    source = MemoryBackend()
    tree = write_tree(source, TreeShape(repositories=2, tags_per_repository=2, layer_bytes=(100, 1000)))
    assert Engine(source, rados_backend, SyncOptions()).run().ok
    repository, (tag, digest) = tree.repositories[0], sorted(tree.tags[tree.repositories[0]].items())[0]
    key = key_of(TagIndexLink(repository, tag, Digest.parse(digest)))
    parent = key.rsplit("/", 2)[0] + "/"  # .../index/sha256/
    hex_ = Digest.parse(digest).hex
    gone = time.time() - 3600  # the dead pass's record (it ran on another host an hour ago)
    rados_backend.put_bytes(f"{RECORDS_PREFIX}dead.json", json.dumps(
        {"scope": ["*"], "host": "another-host", "boot": "b", "pidns": "1", "pid": 1, "start": "1", "started": gone, "renewed": gone}).encode())
    io_ = rados_backend._io()
    with rados.WriteOpCtx() as op:
        io_.remove_omap_keys(op, ["p:" + hex_])
        io_.operate_write_op(op, index_oid(parent))
    with rados.WriteOpCtx() as op:
        io_.set_omap(op, ["m:link"], [b""])
        io_.operate_write_op(op, index_oid(f"{parent}{hex_}/"))
    assert hex_ not in {e.name for e in rados_backend.iter_children(parent)}

    report = Engine(source, rados_backend, SyncOptions()).run()
    assert report.ok, report.problems
    assert report.counters["tags_published"] == 0 and report.counters["history_repaired"] == 0
    assert hex_ in {e.name for e in rados_backend.iter_children(parent)}
    assert list(rados_backend.iter_objects(RECORDS_PREFIX)) == []
    assert rados_backend.scan_leftovers() == []
