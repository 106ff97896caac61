"""The ``multisite`` fixture: a throwaway Ceph cluster with two RGW zones, A replicating to B, per test session.

It runs ``scripts/ceph-cluster start DIR --multisite`` (one mon, one memstore
OSD, radosgw for zone A, the master, and for zone B) in a temporary directory
and stops it at the end of the session. It is not the ``ceph_cluster`` of
tests/support/fixtures_ceph.py: that one has a single gateway.

No bucket replicates until a test asks: ``multisite.bucket(name, prefix=P)``
creates the bucket on A, enables replication of the keys under P to B and
returns once a probe object has made the trip (``mirror_bucket(name)`` does
the same for every key). To reuse a running cluster, name its env file::

    scripts/ceph-cluster start /tmp/ms --multisite
    SYNCAGENT_MULTISITE_ENV=/tmp/ms/env .venv/bin/python -m pytest ...
    scripts/ceph-cluster stop /tmp/ms

A reused cluster is never stopped by the tests; the buckets they made are
emptied and removed on both zones at the end (best effort). When the Ceph
programs are missing or the cluster does not start, tests that need it are
skipped on a developer machine and fail in CI (CI=true), with the script's
error and log tail in the message.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from tests.support.components import missing_component
from tests.support.fixtures_ceph import read_env_file

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ceph-cluster"
ENV_VARIABLE = "SYNCAGENT_MULTISITE_ENV"
MEMSTORE_BYTES = "512M"  # both zones' copies live in the OSD's RAM: about 4x what the tests write is plenty
START_TIMEOUT = 120
REPLICATE_TIMEOUT = 60
_PROGRAMS = ("ceph-mon", "ceph-osd", "ceph", "rados", "monmaptool", "radosgw", "radosgw-admin")


class MultisiteCommandError(RuntimeError):
    """``scripts/ceph-cluster`` or ``radosgw-admin`` failed; the message has its output (and a log tail)."""


class NotReplicated(AssertionError):
    """A key did not reach (or did not leave) zone B in the time allowed."""


@dataclass(frozen=True)
class Multisite:
    """A running two-zone cluster: zone A (master) at ``endpoint_a``, zone B at ``endpoint_b``, one S3 user."""

    dir: Path
    conf: Path
    keyring: Path
    endpoint_a: str
    endpoint_b: str
    access_key: str
    secret_key: str = field(repr=False)
    zone_a: str = "a"
    zone_b: str = "b"
    _clients: dict = field(init=False, default_factory=dict, repr=False, compare=False)
    _buckets: list = field(init=False, default_factory=list, repr=False, compare=False)

    # -- replication ---------------------------------------------------------------

    def bucket(self, name: str, prefix: str) -> str:
        """Create ``name`` on A (if absent) replicating the keys under ``prefix`` to B; return once proven."""
        self._script("replicate", name, "--prefix", prefix, "--timeout", str(REPLICATE_TIMEOUT))
        self._buckets.append(name)
        return name

    def mirror_bucket(self, name: str) -> str:
        """Create ``name`` on A (if absent) replicating every key to B; return once proven."""
        self._script("replicate", name, "--all", "--timeout", str(REPLICATE_TIMEOUT))
        self._buckets.append(name)
        return name

    def pause(self, bucket: str) -> None:
        """Stop ``bucket``'s replication (``radosgw-admin bucket sync disable`` on A); writes on A stay there."""
        self._script("pause", bucket)

    def resume(self, bucket: str) -> None:
        """Restart ``bucket``'s replication; what was written meanwhile follows."""
        self._script("resume", bucket)

    # -- looking at the zones ---------------------------------------------------------

    def s3_client(self, zone: str):
        """A boto3 S3 client (path-style) for zone ``a`` or ``b``, made once per zone."""
        if zone not in self._clients:
            endpoint = {self.zone_a: self.endpoint_a, self.zone_b: self.endpoint_b}.get(zone)
            if endpoint is None:
                raise ValueError(f"no zone {zone!r}: the zones are {self.zone_a!r} and {self.zone_b!r}")
            self._clients[zone] = boto3.client(
                "s3", endpoint_url=endpoint, region_name="us-east-1",
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
            )
        return self._clients[zone]

    def head(self, zone: str, bucket: str, key: str) -> dict | None:
        """HeadObject on ``zone``; None when the key is not there."""
        try:
            return self.s3_client(zone).head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def wait_until_on_b(self, bucket: str, key: str, timeout: float = 30.0) -> dict:
        """Poll zone B until ``key`` is there; return its HeadObject answer. NotReplicated after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (head := self.head(self.zone_b, bucket, key)) is None:
            if time.monotonic() >= deadline:
                raise NotReplicated(f"{bucket}/{key} did not arrive on zone {self.zone_b} within {timeout:.0f} s")
            time.sleep(0.02)
        return head

    def wait_until_gone_on_b(self, bucket: str, key: str, timeout: float = 30.0) -> None:
        """Poll zone B until ``key`` is gone. NotReplicated after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.head(self.zone_b, bucket, key) is not None:
            if time.monotonic() >= deadline:
                raise NotReplicated(f"{bucket}/{key} is still on zone {self.zone_b} after {timeout:.0f} s")
            time.sleep(0.02)

    def wait_until_b_caught_up(self, bucket: str, timeout: float = 30.0) -> None:
        """Wait until zone B has processed everything zone A logged for ``bucket`` so far.

        ``radosgw-admin bucket sync checkpoint`` on B: it compares B's sync
        markers with A's bucket index log, shard by shard. After it, a key that
        A logged and B does not have was filtered out, not merely late.
        MultisiteCommandError when B does not catch up in time (a paused
        bucket never does).
        """
        self.radosgw_admin("bucket", "sync", "checkpoint", f"--bucket={bucket}", f"--rgw-zone={self.zone_b}",
                           "--retry-delay-ms=50", f"--timeout-sec={int(timeout)}", timeout=timeout + 30)

    def radosgw_admin(self, *args: str, timeout: float = 60) -> str:
        """Run ``radosgw-admin`` (as client.admin) against this cluster and return its stdout.

        Name the zone: ``multisite.radosgw_admin("sync", "info", "--bucket=B", "--rgw-zone=b")``.
        """
        argv = ["radosgw-admin", "--conf", str(self.conf), "--keyring", str(self.keyring), "-n", "client.admin", *args]
        environment = {k: v for k, v in os.environ.items() if k not in ("CEPH_ARGS", "CEPH_CONF", "CEPH_KEYRING")}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environment)
        if done.returncode != 0:
            raise MultisiteCommandError(f"{shlex.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def remove_buckets(self) -> None:
        """Best effort: empty and remove the buckets this session made, on both zones."""
        for bucket in self._buckets:
            for zone in (self.zone_a, self.zone_b):
                client = self.s3_client(zone)
                try:
                    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                        objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                        if objects:
                            client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
                except ClientError:
                    continue
            try:
                self.s3_client(self.zone_a).delete_bucket(Bucket=bucket)
            except ClientError:
                pass

    # -- internals -------------------------------------------------------------------

    def _script(self, command: str, *args: str) -> None:
        argv = [str(SCRIPT), command, str(self.dir), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=REPLICATE_TIMEOUT + 60)
        if done.returncode != 0:
            raise MultisiteCommandError(f"{shlex.join(argv[1:])} failed:\n{done.stderr.strip()}")


def multisite_from_env_file(path: Path) -> Multisite:
    env = read_env_file(path)
    if "RGW_ENDPOINT_B" not in env:
        raise MultisiteCommandError(f"{path} names no zone B (RGW_ENDPOINT_B): start the cluster with --multisite")
    conf = Path(env["CEPH_CONF"])
    return Multisite(
        dir=path.parent,
        conf=conf,
        keyring=Path(env.get("CEPH_KEYRING", conf.parent / "keyring")),
        endpoint_a=env["RGW_ENDPOINT"],
        endpoint_b=env["RGW_ENDPOINT_B"],
        access_key=env["RGW_ACCESS_KEY"],
        secret_key=env["RGW_SECRET_KEY"],
        zone_a=env.get("RGW_ZONE_A", "a"),
        zone_b=env.get("RGW_ZONE_B", "b"),
    )


def _stop(directory: Path) -> None:
    subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def multisite(tmp_path_factory):
    """The session's two-zone cluster (see the module docstring)."""
    reuse = os.environ.get(ENV_VARIABLE)
    if reuse:
        path = Path(reuse)
        if not path.is_file():
            missing_component(f"the multisite cluster named by {ENV_VARIABLE}={reuse} (no such env file)")
        try:
            cluster = multisite_from_env_file(path)
        except MultisiteCommandError as exc:
            missing_component(f"the multisite cluster named by {ENV_VARIABLE}={reuse} ({exc})")
        try:
            yield cluster
        finally:
            cluster.remove_buckets()
        return

    absent = [name for name in _PROGRAMS if shutil.which(name) is None]
    if absent:
        missing_component(f"Ceph multisite ({', '.join(absent)} not installed)")
    # A short base path: admin socket paths must fit in 107 bytes.
    directory = tmp_path_factory.mktemp("ms") / "c"
    argv = [str(SCRIPT), "start", str(directory), "--multisite", "--memstore-bytes", MEMSTORE_BYTES]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(directory)
        missing_component(f"a throwaway two-zone Ceph cluster (scripts/ceph-cluster start did not finish in {START_TIMEOUT} s)")
    if done.returncode != 0:
        _stop(directory)
        missing_component(f"a throwaway two-zone Ceph cluster (scripts/ceph-cluster start --multisite failed):\n{done.stderr.strip()}")
    try:
        yield multisite_from_env_file(directory / "env")
    finally:
        _stop(directory)
