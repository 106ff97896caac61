"""RADOS: a put killed right after its commit must not leave a dead writer's chunks behind for good.

Found by the SIGKILL campaign into RADOS (under load, a few percent of the
cases): run 1 is killed while it writes blob X (its ``t:`` record and some
chunk objects stay, as designed); run 2 writes X again, commits it, and is
killed before the put's last step, the one that collects dead writers'
records. From then on X is whole and present, so no later sync puts it
again: when only a put or delete of X collected, run 1's record and chunks
stayed in the namespace for ever (a 9 MiB blob left two 4 MiB chunks). Now a
``stat`` or read of X -- what the next sync does -- collects them, as it
completes the prefix markers run 2 did not add (docs/rados.md).

The two deaths are real: each put runs in a process that SIGKILLs itself at
the point of the put named above.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.ceph]

KEY = "docker/registry/v2/blobs/sha256/ab/" + "ab" * 32 + "/data"
SIZE = 9 << 20  # three chunks of the session pool's 4 MiB objects

PUT_KILLED_AT = textwrap.dedent("""
    import io, os, signal, sys
    from backends.rados import RadosBackend, RadosOptions
    pool, namespace, conf, keyring, key, size, point = sys.argv[1:]
    backend = RadosBackend(pool, namespace, RadosOptions(conf=conf, keyring=keyring, id="admin", connect_timeout=30))
    original = getattr(RadosBackend, point)
    def die(self, *args, **kwargs):
        if point == "_write_chunks":
            original(self, *args, **kwargs)  # every chunk stored, then the writer dies before its commit
        os.kill(os.getpid(), signal.SIGKILL)
    setattr(RadosBackend, point, die)
    backend.put(key, io.BytesIO(bytes(int(size))), size=int(size))
""")


def put_killed_at(pool, namespace: str, point: str) -> None:
    """Put KEY in a process that SIGKILLs itself at ``point`` of RadosBackend.put."""
    cluster = pool.cluster
    done = subprocess.run([sys.executable, "-c", PUT_KILLED_AT, pool.name, namespace, str(cluster.conf), str(cluster.keyring),
                           KEY, str(SIZE), point], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr


def test_a_put_killed_after_its_commit_leaves_nothing_once_the_object_is_read(rados_pool):
    namespace = f"faults-leak-{uuid.uuid4().hex[:12]}"
    backend = rados_pool.backend(namespace)
    try:
        put_killed_at(rados_pool, namespace, "_write_chunks")  # run 1: chunks stored, no commit
        assert any(line.startswith("record t:") for line in backend.scan_leftovers())
        put_killed_at(rados_pool, namespace, "_ensure_markers")  # run 2: committed, then dead
        assert backend.stat(KEY).size == SIZE  # whole and visible: no sync will put it again
        with backend.open_read(KEY) as stream:
            assert stream.read() == bytes(SIZE)
        assert backend.scan_leftovers() == []
    finally:
        io_ = backend._io()
        for obj in list(io_.list_objects()):
            io_.remove_object(obj.key)
        backend.close()
