"""The ``backend_under_test`` fixture: one fresh backend per test, for every kind.

memory and file are always here. Another kind joins when tests/support/ has a
plugin ``fixtures_backend_<kind>.py`` defining a fixture ``<kind>_backend_factory``
that returns a callable making a fresh :class:`BackendUnderTest`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from backends.memory import MemoryBackend
from tests.support.backends_under_test import BackendUnderTest

_SUPPORT = Path(__file__).parent.parent / "support"
KINDS = ["memory", "file"] + sorted(p.stem.removeprefix("fixtures_backend_") for p in _SUPPORT.glob("fixtures_backend_*.py"))


CEPH_KINDS = {"s3", "s3_boto3", "rados"}


@pytest.fixture(params=[pytest.param(kind, marks=pytest.mark.ceph) if kind in CEPH_KINDS else kind for kind in KINDS])
def backend_under_test(request, tmp_path):
    kind = request.param
    if kind == "memory":
        memory = MemoryBackend()
        made = BackendUnderTest(memory, plant=lambda key, data: memory.plant(key, data) is None)
    elif kind == "file":
        (tmp_path / "root").mkdir()
        backend = FilesystemBackend(tmp_path / "root")
        made = BackendUnderTest(
            backend,
            lambda: sorted(os.listdir(backend.staging)) if backend.staging.exists() else [],
            lambda key, data: _plant_file(tmp_path / "root", key, data),
        )
    else:
        made = request.getfixturevalue(f"{kind}_backend_factory")()
    yield made
    made.backend.close()


def _plant_file(root: Path, key: str, data: bytes) -> bool:
    """A file at ``key`` under ``root``, written past the backend; False for keys no path can spell."""
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return False
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True
