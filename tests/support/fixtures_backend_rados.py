"""The ``rados_backend_factory`` fixture: RADOS backends on the session's Ceph cluster.

One pool (size 1, application ``rados``) for the session, a fresh namespace
per backend. The cluster's limits are lowered for the session so that the
suite's 12-13 MiB objects are striped into several chunk objects, each written
in several requests: ``osd_max_object_size`` 4 MiB and ``osd_max_write_size``
5 MiB. Both stay at or above what radosgw needs (it writes 4 MiB stripes plus
their xattrs in one request), since the S3 tests share the cluster.
``leftovers()`` is :meth:`RadosBackend.scan_leftovers`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest

from backends.errors import BackendUnavailable
from tests.support.backends_under_test import BackendUnderTest
from tests.support.components import missing_component

POOL = "syncagent-rados"
MAX_OBJECT_SIZE = 4 << 20
MAX_WRITE_SIZE_MIB = 5
LIMITS = {"osd_max_object_size": str(MAX_OBJECT_SIZE), "osd_max_write_size": str(MAX_WRITE_SIZE_MIB)}


@dataclass(frozen=True)
class RadosPool:
    """The session's pool, and how to open a backend on it."""

    cluster: object  # tests.support.fixtures_ceph.CephCluster
    name: str

    def options(self, **overrides):
        from backends.rados import RadosOptions

        values = dict(conf=str(self.cluster.conf), keyring=str(self.cluster.keyring), id="admin", connect_timeout=30, op_timeout=60)
        values.update(overrides)
        return RadosOptions(**values)

    def backend(self, namespace: str | None = None, **overrides):
        from backends.rados import RadosBackend

        return RadosBackend(self.name, namespace or f"t-{uuid.uuid4().hex[:16]}", self.options(**overrides))


@pytest.fixture(scope="session")
def rados_pool(ceph_cluster):
    try:
        from backends.rados.errors import load_rados

        load_rados()
    except BackendUnavailable as exc:
        missing_component(f"the Python module rados in this environment ({exc})")
    ceph_cluster.ceph("osd", "pool", "create", POOL, "8", "8")
    ceph_cluster.ceph("osd", "pool", "set", POOL, "size", "1", "--yes-i-really-mean-it")
    ceph_cluster.ceph("osd", "pool", "application", "enable", POOL, "rados")
    dump = json.loads(ceph_cluster.ceph("config", "dump", "--format", "json"))
    before = {e["name"]: e["value"] for e in dump if e.get("section") == "osd" and e.get("name") in LIMITS}
    for name, value in LIMITS.items():
        ceph_cluster.ceph("config", "set", "osd", name, value)
    try:
        yield RadosPool(ceph_cluster, POOL)
    finally:
        for name in LIMITS:
            if name in before:
                ceph_cluster.ceph("config", "set", "osd", name, before[name])
            else:
                ceph_cluster.ceph("config", "rm", "osd", name)


@pytest.fixture
def rados_backend_factory(rados_pool):
    made = []

    def make() -> BackendUnderTest:
        backend = rados_pool.backend()
        made.append(backend)
        return BackendUnderTest(backend, backend.scan_leftovers)

    yield make
    for backend in made:
        _purge(rados_pool, backend.namespace)
        backend.close()


def _purge(pool: RadosPool, namespace: str) -> None:
    """Remove what a test left in its namespace (a reused cluster stays small)."""
    backend = pool.backend(namespace)
    try:
        io = backend._io()
        for obj in list(io.list_objects()):
            io.remove_object(obj.key)
    finally:
        backend.close()
