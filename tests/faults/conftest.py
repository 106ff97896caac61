"""Fixtures of the fault suite: its settings, the source tree, destinations on every backend, a tmpfs."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.testing.synthetic import TreeWriter
from tests.faults.destinations import FilesystemDestination, RadosDestination, S3Destination
from tests.faults.harness import BLOBS, PROJECT_ROOT
from tests.support.components import missing_component
from tests.support.fixtures_ceph import SCRIPT, cluster_from_env_file

MIB = 1 << 20
BIG_BLOB = 5 * MIB  # above S3's multipart threshold here, and RADOS's lowered object size (4 MiB)
KILL_SHARES = {"filesystem": 0.4, "s3": 0.3, "rados": 0.3}


@dataclass(frozen=True)
class FaultSettings:
    """From the environment (see the package docstring)."""

    kills: int
    interrupts: int
    seed: int
    long: bool

    def kills_for(self, backend: str) -> int:
        return max(1, round(self.kills * KILL_SHARES[backend]))

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")


def _int_from_env(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text) if text else default
    except ValueError:
        raise pytest.UsageError(f"{name}={text!r}: expected a whole number") from None


@pytest.fixture(scope="session")
def fault_settings() -> FaultSettings:
    return FaultSettings(
        kills=_int_from_env("SYNCAGENT_FAULT_KILLS", 20),
        interrupts=_int_from_env("SYNCAGENT_FAULT_INTERRUPTS", 3),
        seed=_int_from_env("SYNCAGENT_FAULT_SEED", 1),
        long=os.environ.get("SYNCAGENT_FAULT_LONG", "") not in ("", "0"),
    )


# -- the source -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceTree:
    """A registry tree to sync from: ``scripts/make-sample-tree``'s small generated tree (shared
    layers, indexes, untagged revisions) and three images with large layers, one of them shared by two
    repositories. ``big_blobs``: the keys of blobs large enough to be killed in the middle of."""

    root: Path
    big_blobs: frozenset[str]

    def blobs(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in (self.root / BLOBS).rglob("data")}


def make_source_tree(root: Path, seed: int) -> SourceTree:
    subprocess.run(
        [sys.executable, "scripts/make-sample-tree", str(root), "--repositories", "5", "--tags", "3", "--layers", "3",
         "--shared-layers", "3", "--min-bytes", "512", "--max-bytes", "98304", "--index-every", "3", "--untagged", "1",
         "--seed", str(seed)],
        cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=120,
    )
    rng = random.Random(seed)
    large, other = rng.randbytes(16 * MIB), rng.randbytes(9 * MIB)
    with FilesystemBackend(root) as backend:
        writer = TreeWriter(backend)
        writer.image("big/layers", [rng.randbytes(4096), large], tag="v1")
        writer.image("big/shared", [large], tag="v1")
        writer.image("big/layers", [other], tag="v2")
    big = frozenset(str(p.relative_to(root)) for p in (root / BLOBS).rglob("data") if p.stat().st_size > BIG_BLOB)
    return SourceTree(root, big)


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory, fault_settings) -> SourceTree:
    """Shared by the tests that only read it."""
    return make_source_tree(tmp_path_factory.mktemp("fault-source") / "registry", fault_settings.seed)


# -- destinations ---------------------------------------------------------------------------------


@pytest.fixture
def fs_destinations(tmp_path):
    """``make()`` -> a FilesystemDestination in a directory that does not exist yet.

    As root (CI) on a tmpfs mounted for the test, where a sync of the source
    tree takes a fifth of the time it takes on a disk (fsync is free there),
    so that more kill points fit in the suite's time; else under tmp_path.
    A SIGKILL loses no written data either way: the kernel keeps it.
    """
    base = tmp_path
    if os.geteuid() == 0:
        base = tmp_path / "tmpfs"
        base.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g,mode=0755", "tmpfs", str(base)], check=True, capture_output=True, timeout=30)
    made = []

    def make() -> FilesystemDestination:
        made.append(FilesystemDestination(base / f"dst-{len(made)}"))
        return made[-1]

    yield make
    if base != tmp_path:
        subprocess.run(["umount", "--lazy", str(base)], capture_output=True, timeout=30)


@pytest.fixture
def s3_destinations(s3_credentials):
    """``make()`` -> an S3Destination in a fresh versioned bucket on the session's RGW; buckets removed after."""
    from tests.support.fixtures_backend_s3 import rgw_admin_client, rgw_url

    client = rgw_admin_client(s3_credentials)
    buckets: list[str] = []

    def make(**options) -> S3Destination:
        bucket = f"syncagent-faults-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        buckets.append(bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        return S3Destination(client, bucket, "mirror", rgw_url(s3_credentials, bucket, "mirror", **options))

    yield make
    for bucket in buckets:
        remove_versioned_bucket(client, bucket)
    client.close()


def remove_versioned_bucket(client, bucket: str) -> None:
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if versions:
            client.delete_objects(Bucket=bucket, Delete={"Objects": versions, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def rados_destinations(rados_pool, source_tree):
    """``make()`` -> a RadosDestination in a fresh namespace of the session's pool; emptied after."""
    made: list[RadosDestination] = []

    def make() -> RadosDestination:
        made.append(RadosDestination(rados_pool, f"faults-{uuid.uuid4().hex[:12]}", source_tree.blobs, source_tree.big_blobs))
        return made[-1]

    yield make
    for destination in made:
        try:
            destination.purge()
        finally:
            destination.close()


# -- a Ceph cluster of a test's own ----------------------------------------------------------------


@contextlib.contextmanager
def own_ceph_cluster(base: Path, *start_options: str):
    """``scripts/ceph-cluster start`` in ``base``, for tests that stop radosgw or fill the cluster (never
    the session's shared one); stopped on exit. A missing Ceph skips locally, fails in CI."""
    absent = [name for name in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin") if shutil.which(name) is None]
    if absent:
        missing_component(f"Ceph ({', '.join(absent)} not installed)")
    directory = base / "c"  # short: admin socket paths must fit in 107 bytes
    done = subprocess.run([str(SCRIPT), "start", str(directory), *start_options], capture_output=True, text=True, timeout=180)
    try:
        if done.returncode != 0:
            missing_component(f"a throwaway Ceph cluster (scripts/ceph-cluster start failed):\n{done.stderr.strip()}")
        yield cluster_from_env_file(directory / "env")
    finally:
        subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, text=True, timeout=120)


# -- a tmpfs ---------------------------------------------------------------------------------------


@dataclass
class Tmpfs:
    path: Path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)`` mounts a tmpfs of ``size`` (``mount``'s syntax: 8m) under tmp_path; unmounted after.

    Mounting needs root: skipped on a developer machine without it, a failure in CI.
    """
    mounted: list[Path] = []

    def mount(size: str) -> Tmpfs:
        if os.geteuid() != 0:
            missing_component("root, to mount a tmpfs")
        path = tmp_path / f"tmpfs-{len(mounted)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            missing_component(f"a tmpfs mount ({done.stderr.strip()})")
        mounted.append(path)
        return Tmpfs(path)

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True, timeout=30)
