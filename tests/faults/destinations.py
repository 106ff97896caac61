"""Destinations of the fault suite, seen from outside syncagent: progress, writes in flight, blob copies.

Each implements :class:`tests.faults.harness.Destination` for one backend:
a directory, an S3 bucket on Ceph RGW (versioned, so that every write of a
key leaves a version behind to count), a RADOS namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import botocore.exceptions

from backends import Backend, open_backend
from backends.filesystem import STAGING_NAME, FilesystemBackend
from syncagent.sync.records import RECORDS_PREFIX

BLOBS_PREFIX = "docker/registry/v2/blobs/"
IN_FLIGHT_BYTES = 1 << 20  # a part file this large belongs to one of the large blobs


def _staged_files(staging: Path) -> list[tuple[str, os.DirEntry]]:
    """The files in ``staging`` and in its directories one level down, named relative to it."""
    try:
        entries = list(os.scandir(staging))
    except FileNotFoundError:
        return []
    files = []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                files += [(f"{entry.name}/{inner.name}", inner) for inner in os.scandir(entry.path)
                          if inner.is_file(follow_symlinks=False)]
            elif entry.is_file(follow_symlinks=False):
                files.append((entry.name, entry))
        except FileNotFoundError:
            continue  # renamed into place or removed meanwhile
    return files


@dataclass
class FilesystemDestination:
    root: Path

    @property
    def url(self) -> str:
        return str(self.root)

    def open(self) -> Backend:
        return FilesystemBackend(self.root)

    def objects(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.root / "docker"))

    def writes_in_flight(self) -> frozenset[str]:
        """Staging files of large blobs (a killed writer's stay until the next run): a ``.part`` file in the
        staging directory, or the file inside a staging directory made for a key whose parent is new."""
        found = set()
        for name, entry in _staged_files(self.root / STAGING_NAME):
            try:
                if entry.stat(follow_symlinks=False).st_size >= IN_FLIGHT_BYTES:
                    found.add(name)
            except FileNotFoundError:
                continue  # renamed into place meanwhile
        return frozenset(found)

    def blob_copies(self) -> dict[str, tuple]:
        """A blob's copy is its inode and ctime: a second put renames a new file into place."""
        copies = {}
        for directory, _, files in os.walk(self.root / BLOBS_PREFIX):
            if "data" in files:
                path = Path(directory) / "data"
                st = path.stat()
                copies[str(path.relative_to(self.root))] = ((st.st_ino, st.st_ctime_ns),)
        return copies

    def leftovers(self) -> list[str]:
        staging = self.root / STAGING_NAME
        found = [f"staging: {p.name}" for p in staging.iterdir()] if staging.is_dir() else []
        records = self.root / RECORDS_PREFIX
        return found + ([f"pass record {p.name}" for p in records.iterdir()] if records.is_dir() else [])


@dataclass
class S3Destination:
    """A versioned bucket: a key written twice keeps two versions."""

    client: object  # a boto3 S3 client with the cluster's credentials
    bucket: str
    root: str
    url: str

    def open(self) -> Backend:
        return open_backend(self.url)

    def objects(self) -> int:
        return sum(len(page.get("Contents", ())) for page in self._pages("list_objects_v2", "docker/"))

    def writes_in_flight(self) -> frozenset[str]:
        """Multipart uploads with at least one part stored (a killed writer's stay: nothing aborts them)."""
        found = set()
        for upload in self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=f"{self.root}/docker/").get("Uploads", []):
            try:
                parts = self.client.list_parts(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts")
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "NoSuchKey"):
                    continue  # completed or aborted meanwhile (RGW answers NoSuchKey)
                raise
            if parts:
                found.add(upload["UploadId"])
        return frozenset(found)

    def blob_copies(self) -> dict[str, tuple]:
        copies: dict[str, list[str]] = {}
        for page in self._pages("list_object_versions", BLOBS_PREFIX):
            for version in page.get("Versions", ()):
                copies.setdefault(version["Key"][len(self.root) + 1:], []).append(version["VersionId"])
        return {key: tuple(sorted(ids)) for key, ids in copies.items()}

    def leftovers(self) -> list[str]:
        return [f"pass record {item['Key']}" for page in self._pages("list_objects_v2", RECORDS_PREFIX)
                for item in page.get("Contents", ())]

    def _pages(self, operation: str, prefix: str):
        return self.client.get_paginator(operation).paginate(Bucket=self.bucket, Prefix=f"{self.root}/{prefix}")


@dataclass
class RadosDestination:
    """A namespace of the session's pool. ``blobs``: the blob keys to look for (the source's);
    ``big_blobs``: those whose writes in flight are watched."""

    pool: object  # tests.support.fixtures_backend_rados.RadosPool
    namespace: str
    blobs: Callable[[], set[str]]
    big_blobs: frozenset[str]
    _backend: Backend = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._backend = self.open()

    @property
    def url(self) -> str:
        cluster = self.pool.cluster
        query = urlencode({"conf": str(cluster.conf), "keyring": str(cluster.keyring), "id": "admin", "connect_timeout": 30})
        return f"rados://{self.pool.name}/{self.namespace}?{query}"

    def open(self) -> Backend:
        return self.pool.backend(self.namespace)

    def objects(self) -> int:
        return sum(1 for _ in self._backend.iter_objects("docker/"))

    def writes_in_flight(self) -> frozenset[str]:
        """Puts of the large blobs that recorded themselves (``t:`` in the parent's index) and stored a chunk."""
        from backends.rados.layout import WRITER, chunk_oid, index_oid, split_key

        io = self._backend._io()
        found = set()
        for key in self.big_blobs:
            parent, name = split_key(key)
            for omap_key, _ in self._omap(index_oid(parent), f"{WRITER}{name}/"):
                gen = omap_key.rpartition("/")[2]
                if self._exists(io, chunk_oid(gen, 0)):
                    found.add(f"{key}@{gen}")
        return frozenset(found)

    def blob_copies(self) -> dict[str, tuple]:
        """A blob's copy is its head's generation: every put writes a new one.

        Heads are read from the index, not found by listing: a put killed after
        its commit and before its prefix markers leaves an object that listings
        miss until a read of it adds them (docs/rados.md).
        """
        from backends.rados.layout import OBJECT, Head, index_oid, split_key

        copies = {}
        for key in self.blobs():
            parent, name = split_key(key)
            raw = dict(self._omap(index_oid(parent), OBJECT + name)).get(OBJECT + name)
            if raw is not None:
                copies[key] = (Head.decode(raw, key).gen,)
        return copies

    def leftovers(self) -> list[str]:
        """scan_leftovers() and pass records."""
        return self._backend.scan_leftovers() + [f"pass record {info.key}" for info in self._backend.iter_objects(RECORDS_PREFIX)]

    def purge(self) -> None:
        io = self._backend._io()
        for obj in list(io.list_objects()):
            io.remove_object(obj.key)

    def close(self) -> None:
        self._backend.close()

    def _omap(self, oid: str, prefix: str) -> list[tuple[str, bytes]]:
        import rados

        io = self._backend._io()
        try:
            with rados.ReadOpCtx() as op:
                found, _ = io.get_omap_vals(op, "", prefix, 1000)
                io.operate_read_op(op, oid)
                return list(found)
        except rados.ObjectNotFound:
            return []

    @staticmethod
    def _exists(io, oid: str) -> bool:
        import rados

        try:
            io.stat(oid)
        except rados.ObjectNotFound:
            return False
        return True
