"""End to end with S3 (Ceph RGW): what a read-only registry serves after `syncagent sync` to or from a bucket.

Real images (umoci) are pushed with skopeo into real registries -- one on a
filesystem, one whose storage is an RGW bucket (pushed through the registry's
own s3 driver) -- and copied with the CLI:

- filesystem -> S3, served by a read-only registry with its s3 driver on the
  bucket and root directory syncagent wrote;
- S3 -> filesystem, served by a read-only filesystem registry;
- S3 -> S3, bucket to bucket and prefix to prefix (the plain migration);
- a write failure partway through a multipart upload (a real bucket policy
  denying PutObject, put in place by RGW while the upload is running): exit 1,
  a report naming it, no incomplete multipart upload, no published tag whose
  closure is missing, and a clean resume once writes are allowed again.
  "Partway" is made deterministic by :class:`tests.support.fault_proxy.S3FaultProxy`, a loopback proxy
  in front of RGW that holds one chosen request until the policy is in place.

Every tag and every manifest digest (tagged, untagged, index children) is
fetched through the read-only registry's API (manifest, then a HEAD for every
blob) and, for each copy's first secondary, pulled with skopeo; both must give
the primary's digests. Registries with the s3 driver run without AWS_CA_BUNDLE (FIELD-NOTES;
tests/support/registry.py removes it). syncagent gets its credentials from
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (fixture ``s3_credentials``).

The images are built once per module, and the two primaries are pushed once;
every test writes into buckets or directories of its own. The largest layer
(12 MiB) goes through multipart uploads: parts are 5 MiB here.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.components import require_tool
from tests.support.fault_proxy import S3FaultProxy
from tests.support.fixtures_backend_s3 import rgw_admin_client, rgw_url
from tests.support.images import Image, ImageFactory, layer, pull
from tests.support.registry import Registry, S3Storage
from tests.support.sync_checks import Pushed, assert_serves_like_primary, assert_full_sync, assert_noop_sync, build_images, fs_layout, push_images, sync_report

pytestmark = [pytest.mark.e2e, pytest.mark.ceph]

V2 = "docker/registry/v2"
BIG = 12 * 1024 * 1024  # > the 5 MiB multipart threshold of rgw_url(): three parts


# -- what was pushed --------------------------------------------------------------


@dataclass
class Built:
    factory: ImageFactory
    images: dict[str, Image]


def large_layers() -> dict[str, list]:
    """One image with a 12 MiB layer, uploaded in parts."""
    return {"big": [layer("base"), layer("big", size=BIG)]}


def push_all(built: Built, registry: Registry) -> Pushed:
    return push_images(built.factory, built.images, registry)


# -- buckets, registries, the CLI ---------------------------------------------------


class Buckets:
    """Buckets on the cluster's RGW, made for this module and removed after it."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.client = rgw_admin_client(cluster)
        self.made: list[str] = []

    def make(self, purpose: str) -> str:
        name = f"e2e-{purpose}-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        self.made.append(name)
        return name

    def storage(self, bucket: str, root: str) -> S3Storage:
        """What a registry's s3 driver needs for ``s3://bucket/root``."""
        return S3Storage(self.cluster.access_key, self.cluster.secret_key, self.cluster.rgw_endpoint, bucket, f"/{root}")

    def objects(self, bucket: str, prefix: str) -> dict[str, int]:
        """key (without ``prefix``) -> size of every object under ``prefix``."""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"][len(prefix):]] = item["Size"]
        return found

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def incomplete_uploads(self, bucket: str) -> list[str]:
        uploads = self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return sorted(f"{u['Key']} ({u['UploadId']})" for u in uploads)

    def remove_all(self) -> None:
        for bucket in self.made:
            try:
                self.client.delete_bucket_policy(Bucket=bucket)
                for upload in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                    self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                    keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                    if keys:
                        self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                self.client.delete_bucket(Bucket=bucket)
            except Exception:  # best effort: the cluster is throwaway, a reused one should not fill up
                pass
        self.client.close()


@pytest.fixture(scope="module")
def buckets(ceph_cluster):
    if not ceph_cluster.rgw_endpoint:
        pytest.skip("the reused Ceph cluster has no radosgw")
    made = Buckets(ceph_cluster)
    yield made
    made.remove_all()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    for tool in ("docker-registry", "skopeo", "umoci"):
        require_tool(tool)
    factory = ImageFactory(tmp_path_factory.mktemp("oci"))
    return Built(factory, build_images(factory, large_layers()))


@pytest.fixture(scope="module")
def fs_primary(tmp_path_factory, built):
    """A filesystem registry that took the pushes: (registry, what was pushed)."""
    work = tmp_path_factory.mktemp("fs-primary")
    with Registry(root=work / "root", workdir=work / "registry") as registry:
        yield registry, push_all(built, registry)


@pytest.fixture(scope="module")
def s3_primary(tmp_path_factory, built, buckets):
    """A registry whose storage is ``s3://BUCKET/registry`` on RGW, that took the pushes: (registry, pushed, bucket)."""
    bucket = buckets.make("primary")
    work = tmp_path_factory.mktemp("s3-primary")
    with Registry(s3=buckets.storage(bucket, "registry"), workdir=work / "registry") as registry:
        yield registry, push_all(built, registry), bucket


@pytest.fixture
def serve(tmp_path):
    """Start a read-only registry on a filesystem root or on ``buckets.storage(...)``; stopped after the test."""
    started: list[Registry] = []

    def start(*, root: Path | None = None, s3: S3Storage | None = None) -> Registry:
        registry = Registry(root=root, s3=s3, read_only=True, workdir=tmp_path / f"secondary-{len(started)}")
        started.append(registry)
        return registry.start()

    yield start
    for registry in reversed(started):
        registry.stop()




def s3_layout(buckets: Buckets, bucket: str, root: str) -> dict[str, bytes | int]:
    """The same view of ``s3://bucket/root``."""
    prefix = f"{root}/{V2}/"
    found: dict[str, bytes | int] = {}
    for key, size in buckets.objects(bucket, prefix).items():
        if "/_uploads/" in f"/{key}":
            continue
        found[key] = buckets.read(bucket, prefix + key) if key.endswith("/link") else size
    return found


# -- the tests -----------------------------------------------------------------------


def test_filesystem_to_s3_is_served_by_a_read_only_registry_on_the_bucket(tmp_path, fs_primary, buckets, s3_credentials, serve, syncagent):
    primary, pushed = fs_primary
    bucket = buckets.make("fs-to-s3")
    destination = rgw_url(s3_credentials, bucket, "mirror")

    first = syncagent("sync", primary.root, destination, "--json")
    report = assert_full_sync(first, pushed)
    layout = fs_layout(primary.root)
    blob_bytes = {path: size for path, size in layout.items() if path.startswith("blobs/")}
    assert report["blobs_copied"] == len(blob_bytes), first.describe()
    assert report["bytes_copied"] == sum(blob_bytes.values()), first.describe()
    assert s3_layout(buckets, bucket, "mirror") == layout, "the bucket does not hold exactly the registry's layout"
    assert buckets.incomplete_uploads(bucket) == []

    secondary = serve(s3=buckets.storage(bucket, "mirror"))
    assert_serves_like_primary(secondary, primary, pushed, tmp_path / "pulls")
    verified = syncagent("verify", destination)
    assert verified.returncode == 0, verified.describe()
    assert "invariant holds" in verified.stdout, verified.describe()

    assert_noop_sync(syncagent("sync", f"file://{primary.root}", destination, "--json"))


def test_s3_registry_to_filesystem_is_served_by_a_read_only_filesystem_registry(tmp_path, s3_primary, buckets, s3_credentials, serve, syncagent):
    primary, pushed, bucket = s3_primary
    source = rgw_url(s3_credentials, bucket, "registry")
    destination = tmp_path / "secondary"

    assert_full_sync(syncagent("sync", source, destination, "--json"), pushed)
    expected = s3_layout(buckets, bucket, "registry")
    assert fs_layout(destination) == expected

    secondary = serve(root=destination)
    assert_serves_like_primary(secondary, primary, pushed, tmp_path / "pulls")
    verified = syncagent("verify", destination)
    assert verified.returncode == 0, verified.describe()
    assert_noop_sync(syncagent("sync", source, f"file://{destination}", "--json"))


def test_s3_to_s3_between_buckets_and_between_prefixes(tmp_path, s3_primary, buckets, s3_credentials, serve, syncagent):
    primary, pushed, source_bucket = s3_primary
    source = rgw_url(s3_credentials, source_bucket, "registry")
    bucket = buckets.make("s3-to-s3")
    migrated = rgw_url(s3_credentials, bucket, "mirror")

    assert_full_sync(syncagent("sync", source, migrated, "--json"), pushed)
    expected = s3_layout(buckets, source_bucket, "registry")
    assert s3_layout(buckets, bucket, "mirror") == expected
    verified = syncagent("verify", migrated)
    assert verified.returncode == 0, verified.describe()
    secondary = serve(s3=buckets.storage(bucket, "mirror"))
    assert_serves_like_primary(secondary, primary, pushed, tmp_path / "pulls")

    # The same bucket, another root directory: a registry moving its rootdirectory.
    moved = rgw_url(s3_credentials, bucket, "moved/registry")
    assert_full_sync(syncagent("sync", migrated, moved, "--json"), pushed)
    assert s3_layout(buckets, bucket, "moved/registry") == expected
    verified = syncagent("verify", moved)
    assert verified.returncode == 0, verified.describe()
    secondary = serve(s3=buckets.storage(bucket, "moved/registry"))
    assert_serves_like_primary(secondary, primary, pushed, None)
    assert_noop_sync(syncagent("sync", source, migrated, "--json"))
    assert buckets.incomplete_uploads(bucket) == []


def deny_writes_policy(bucket: str) -> str:
    """A bucket policy under which RGW refuses every PutObject, UploadPart and CompleteMultipartUpload
    (all are ``s3:PutObject``) in ``bucket``; reads, deletes and AbortMultipartUpload stay allowed."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "no-writes", "Effect": "Deny", "Principal": "*",
            "Action": ["s3:PutObject"], "Resource": [f"arn:aws:s3:::{bucket}/*"],
        }],
    })


def tag_index_key(repo: str, tag: str, digest: str) -> str:
    return f"repositories/{repo}/_manifests/tags/{tag}/index/sha256/{digest.removeprefix('sha256:')}/link"


def test_writes_denied_partway_through_a_multipart_upload_leave_nothing_partial(tmp_path, fs_primary, built, buckets, s3_credentials, serve, syncagent):
    """A bucket policy denying PutObject takes effect after the big layer's first part is stored
    and after one tag (library/single:v1, which does not need that layer) was published.

    The trigger is deterministic, without sleeps: a loopback proxy in front of
    RGW holds the request for part 2 of the big layer until RGW acknowledged
    part 1 and the last link of library/single:v1, puts the policy in place,
    then forwards the request, and RGW refuses it (and every later write) with
    a real AccessDenied.
    """
    primary, pushed = fs_primary
    bucket = buckets.make("denied")
    big_layer = built.images["big"].layers[-1]
    hexdigest = big_layer.removeprefix("sha256:")
    big_key = f"mirror/{V2}/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"
    single_published = f"/{bucket}/mirror/{V2}/" + tag_index_key("library/single", "v1", pushed.tags[("library/single", "v1")].digest)
    part_one_stored = threading.Event()
    tag_published = threading.Event()
    policy_applied = threading.Event()
    seen: dict[str, object] = {}
    gate = threading.Lock()

    def part_number(method: str, path: str, query: dict) -> int:
        """The part number of an UploadPart of the big layer, else 0."""
        if method != "PUT" or path != f"/{bucket}/{big_key}" or "uploadId" not in query:
            return 0
        return int(query["partNumber"][0])

    def before(method: str, path: str, query: dict) -> None:
        if part_number(method, path, query) < 2:
            return
        with gate:  # the first later part applies the policy; any other one waits for it
            if policy_applied.is_set():
                return
            seen["part_one_stored_in_time"] = part_one_stored.wait(60)
            seen["tag_published_in_time"] = tag_published.wait(60)
            buckets.client.put_bucket_policy(Bucket=bucket, Policy=deny_writes_policy(bucket))
            seen["uploads_when_denied"] = buckets.incomplete_uploads(bucket)
            policy_applied.set()

    def after(method: str, path: str, query: dict, status: int) -> None:
        if part_number(method, path, query) == 1 and status == 200:
            part_one_stored.set()
        if method == "PUT" and path == single_published and status == 200:
            tag_published.set()

    with S3FaultProxy(s3_credentials.rgw_endpoint, before=before, after=after) as proxy:
        through_proxy = rgw_url(s3_credentials, bucket, "mirror", endpoint_url=proxy.endpoint)
        failed = syncagent("sync", primary.root, through_proxy, "--json")
    assert policy_applied.is_set(), f"the big layer's second part never reached RGW\n{failed.describe()}"
    assert seen["part_one_stored_in_time"], "part 1 of the big layer was not acknowledged"
    assert seen["tag_published_in_time"], f"library/single:v1 was not published while the big layer was uploading\n{failed.describe()}"
    assert any(big_key in upload for upload in seen["uploads_when_denied"]), seen  # an upload really was half done

    # Exit 1, and a report that names the failure: the denied write and the tag it kept back.
    assert failed.returncode == 1, failed.describe()
    problems = sync_report(failed)["problems"]
    assert any(
        p["kind"] == "write-failed" and "AccessDenied" in p["reason"] and (p.get("digest") == big_layer or hexdigest in (p.get("key") or ""))
        for p in problems
    ), failed.describe()
    assert any(p["kind"] == "tag-not-published" and p.get("repository") == "library/big" and p.get("tag") == "v1" for p in problems), failed.describe()

    # Nothing partial: no incomplete multipart upload, no big layer object, no tag whose closure is missing.
    assert buckets.incomplete_uploads(bucket) == []
    assert big_key.removeprefix(f"mirror/{V2}/") not in s3_layout(buckets, bucket, "mirror")
    destination = rgw_url(s3_credentials, bucket, "mirror")
    verified = syncagent("verify", destination)
    assert verified.returncode == 0, verified.describe()
    secondary = serve(s3=buckets.storage(bucket, "mirror"))
    assert "v1" not in secondary.tags("library/big")
    listed = [(repo, tag) for repo in secondary.catalog() for tag in secondary.tags(repo)]
    assert ("library/single", "v1") in listed
    for repo, tag in listed:
        assert secondary.servable_problems(repo, tag) == [], f"{repo}:{tag} is listed but not servable"
        assert pull(secondary.url, repo, tag, tmp_path / "pulls-after-failure" / f"{repo.replace('/', '_')}-{tag}") == pushed.tags[(repo, tag)].digest
    secondary.stop()

    # Writes allowed again: the same command resumes and completes.
    buckets.client.delete_bucket_policy(Bucket=bucket)
    resumed = syncagent("sync", primary.root, destination, "--json")
    assert resumed.returncode == 0, resumed.describe()
    assert sync_report(resumed)["problems"] == [], resumed.describe()
    # Whole, history links included: the failed pass left its record, so the resumed one also wrote
    # the history links of tags it found up to date, then removed both records.
    assert s3_layout(buckets, bucket, "mirror") == fs_layout(primary.root)
    assert buckets.objects(bucket, "mirror/.syncagent/passes/") == {}
    assert buckets.incomplete_uploads(bucket) == []
    secondary = serve(s3=buckets.storage(bucket, "mirror"))
    assert_serves_like_primary(secondary, primary, pushed, None)
    assert pull(secondary.url, "library/big", "v1", tmp_path / "pull-big") == pushed.tags[("library/big", "v1")].digest


def test_a_tag_index_link_refused_after_current_link_is_written_by_the_next_sync(fs_primary, buckets, s3_credentials, syncagent):
    """Writes are denied right after RGW stored library/single:v1's current/link (before syncagent hears
    back), so the tag's index link is refused. Once writes are allowed again, the next plain sync
    writes it, though the tag looks up to date: the failed pass left its record. A history link
    lost some other way is reported by verify --against and written by --repair."""
    primary, pushed = fs_primary
    bucket = buckets.make("index-link")
    digest = pushed.tags[("library/single", "v1")].digest
    current = f"/{bucket}/mirror/{V2}/repositories/library/single/_manifests/tags/v1/current/link"
    denied = threading.Event()

    def after(method: str, path: str, query: dict, status: int) -> None:
        if method == "PUT" and path == current and status == 200 and not denied.is_set():
            buckets.client.put_bucket_policy(Bucket=bucket, Policy=deny_writes_policy(bucket))
            denied.set()

    with S3FaultProxy(s3_credentials.rgw_endpoint, after=after) as proxy:
        failed = syncagent("sync", primary.root, rgw_url(s3_credentials, bucket, "mirror", endpoint_url=proxy.endpoint), "--json")
    assert denied.is_set() and failed.returncode == 1, failed.describe()
    layout = s3_layout(buckets, bucket, "mirror")
    assert "repositories/library/single/_manifests/tags/v1/current/link" in layout
    assert tag_index_key("library/single", "v1", digest) not in layout

    buckets.client.delete_bucket_policy(Bucket=bucket)
    destination = rgw_url(s3_credentials, bucket, "mirror")
    resumed = syncagent("sync", primary.root, destination, "--json")
    assert resumed.returncode == 0, resumed.describe()
    report = sync_report(resumed)
    assert report["history_repaired"] >= 1, resumed.describe()
    assert tag_index_key("library/single", "v1", digest) in s3_layout(buckets, bucket, "mirror")
    assert buckets.objects(bucket, "mirror/.syncagent/passes/") == {}
    assert syncagent("verify", primary.root, "--against", destination).returncode == 0

    # Lost without a failed pass (no record): a plain sync does not look; verify --against does.
    buckets.client.delete_object(Bucket=bucket, Key=f"mirror/{V2}/" + tag_index_key("library/single", "v1", digest))
    again = syncagent("sync", primary.root, destination, "--json")
    assert again.returncode == 0 and sync_report(again)["history_repaired"] == 0, again.describe()
    compared = syncagent("verify", primary.root, "--against", destination, "--json")
    assert compared.returncode == 1, compared.describe()
    assert json.loads(compared.stdout)["comparison"]["repositories"]["library/single"]["missing_history"] == ["v1"]
    repaired = syncagent("verify", primary.root, "--against", destination, "--repair", "--json")
    assert repaired.returncode == 0, repaired.describe()
    assert tag_index_key("library/single", "v1", digest) in s3_layout(buckets, bucket, "mirror"), repaired.describe()
