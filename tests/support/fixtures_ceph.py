"""The ``ceph_cluster`` fixture: one throwaway Ceph cluster (mon, memstore OSD, radosgw) per test session.

It runs ``scripts/ceph-cluster start`` in a temporary directory and stops it at
the end of the session. To reuse a cluster that is already running (to save
the two seconds, or to look at it after the run), start one by hand and name
its env file::

    scripts/ceph-cluster start /tmp/ceph
    SYNCAGENT_CEPH_ENV=/tmp/ceph/env .venv/bin/python -m pytest ...
    scripts/ceph-cluster stop /tmp/ceph

A reused cluster is never stopped by the tests. When the Ceph programs are
missing or the cluster does not start, tests that need it are skipped on a
developer machine and fail in CI (CI=true), with the script's error and log
tail in the message.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.components import missing_component

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ceph-cluster"
ENV_VARIABLE = "SYNCAGENT_CEPH_ENV"
_PROGRAMS = ("ceph-mon", "ceph-osd", "ceph", "rados", "ceph-authtool", "monmaptool", "radosgw", "radosgw-admin")


class CephCommandError(RuntimeError):
    """A ``ceph``/``rados`` command exited non-zero; the message has its output."""


@dataclass(frozen=True)
class CephCluster:
    """A running cluster: where its config lives, its RGW endpoint and S3 user.

    ``pool`` is a size-1 pool ready for RADOS I/O (``syncagent-test``).
    ``rgw_endpoint``, ``access_key`` and ``secret_key`` are None for a reused
    cluster started with ``--no-rgw``.
    """

    dir: Path
    conf: Path
    keyring: Path
    pool: str
    rgw_endpoint: str | None
    access_key: str | None
    secret_key: str | None = field(repr=False)
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def ceph(self, *args: str, timeout: float = 60) -> str:
        """Run the ``ceph`` CLI against this cluster and return its stdout.

        Example: ``cluster.ceph("config", "set", "osd", "osd_max_object_size", "8388608")``.
        """
        return self._run("ceph", "--connect-timeout", str(int(timeout)), *args, timeout=timeout + 5)

    def rados(self, *args: str, timeout: float = 60) -> str:
        """Run the ``rados`` CLI against this cluster and return its stdout."""
        return self._run("rados", *args, timeout=timeout)

    def radosgw_admin(self, *args: str, timeout: float = 60) -> str:
        """Run ``radosgw-admin`` against this cluster and return its stdout."""
        return self._run("radosgw-admin", "-n", "client.admin", *args, timeout=timeout)

    def create_pool(self, name: str, application: str = "rados") -> str:
        """Create a size-1 pool with ``application`` enabled; return its name."""
        done = subprocess.run([str(SCRIPT), "pool", str(self.dir), name, application], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise CephCommandError(f"ceph-cluster pool {name} failed: {done.stderr.strip()}")
        return name

    def _run(self, program: str, *args: str, timeout: float) -> str:
        argv = [program, "--conf", str(self.conf), "--keyring", str(self.keyring), *args]
        environment = {k: v for k, v in os.environ.items() if k not in ("CEPH_ARGS", "CEPH_CONF", "CEPH_KEYRING")}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environment)
        if done.returncode != 0:
            raise CephCommandError(f"{shlex.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")
        return done.stdout


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as written by ``scripts/ceph-cluster`` (shell quoting, optional ``export``)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ")
        name, sep, raw = line.partition("=")
        if not sep:
            continue
        words = shlex.split(raw) if raw else [""]
        values[name.strip()] = words[0] if words else ""
    return values


def cluster_from_env_file(path: Path) -> CephCluster:
    env = read_env_file(path)
    conf = Path(env["CEPH_CONF"])
    return CephCluster(
        dir=path.parent,
        conf=conf,
        keyring=Path(env.get("CEPH_KEYRING", conf.parent / "keyring")),
        pool=env.get("CEPH_POOL", "syncagent-test"),
        rgw_endpoint=env.get("RGW_ENDPOINT"),
        access_key=env.get("RGW_ACCESS_KEY"),
        secret_key=env.get("RGW_SECRET_KEY"),
        env=env,
    )


def _stop(directory: Path) -> None:
    subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory):
    """The session's Ceph cluster (see the module docstring)."""
    reuse = os.environ.get(ENV_VARIABLE)
    if reuse:
        path = Path(reuse)
        if not path.is_file():
            missing_component(f"the Ceph cluster named by {ENV_VARIABLE}={reuse} (no such env file)")
        yield cluster_from_env_file(path)
        return

    absent = [name for name in _PROGRAMS if shutil.which(name) is None]
    if absent:
        missing_component(f"Ceph ({', '.join(absent)} not installed)")
    # A short base path: admin socket paths must fit in 107 bytes.
    directory = tmp_path_factory.mktemp("ceph") / "c"
    try:
        done = subprocess.run([str(SCRIPT), "start", str(directory)], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        _stop(directory)
        missing_component("a throwaway Ceph cluster (scripts/ceph-cluster start did not finish in 180 s)")
    if done.returncode != 0:
        _stop(directory)
        missing_component(f"a throwaway Ceph cluster (scripts/ceph-cluster start failed):\n{done.stderr.strip()}")
    try:
        yield cluster_from_env_file(directory / "env")
    finally:
        _stop(directory)
