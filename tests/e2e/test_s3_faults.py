"""S3 under faults, on Ceph RGW: syncs through a proxy injecting throttling, errors after the write,
resets and truncated answers; keys no registry writes; multipart uploads left behind.

The proxy (tests/support/fault_proxy.py) sits on loopback in front of RGW. Real
images (umoci) are pushed with skopeo into a real filesystem registry once per
module; every test copies them with the CLI into buckets of its own.

- the proxy itself: signatures hold through it, each fault does what it says,
  the same seed draws the same faults, ``max_attempts`` is counted right.
- S3 -> filesystem with 10% and 30% of object GETs truncated and 10% reset
  mid-body, each request at most twice: exit 0, no ``digest-mismatch``, a
  destination equal to the source that verifies with ``--deep``. At 90%,
  unbounded: only ``read-failed`` after every retry, never ``digest-mismatch``.
- filesystem -> S3 with 503 SlowDown, 500 after the write was applied, and
  resets before and during requests: at 5% (at most two per request) exit 0;
  at 30%, unbounded, exit 0 or transient problems only. Either way the
  invariant holds (``verify DST`` exits 0) and a second run completes the
  copy. A CreateMultipartUpload answered 500 after RGW carried it out leaves
  an incomplete upload: verify reports it and ``--repair`` aborts it.
- keys with ``..`` and ``//`` segments planted with boto3 are reported as
  ``invalid-name`` by ``sync`` and ``verify``, and nothing is written for them.
- an incomplete multipart upload is a ``verify`` finding, kept by
  ``--repair`` while younger than the threshold, aborted by
  ``--repair --abort-uploads-older-than 0``.
"""
from __future__ import annotations

import json
import os
import uuid

import pytest

from tests.support.components import require_tool
from tests.support.fault_proxy import S3FaultProxy
from tests.support.fixtures_backend_s3 import rgw_admin_client, rgw_url
from tests.support.images import ImageFactory, layer
from tests.support.registry import Registry
from tests.support.sync_checks import Pushed, build_images, fs_layout, push_images, sync_report

pytestmark = [pytest.mark.e2e, pytest.mark.ceph]

V2 = "docker/registry/v2"
ROOT = "mirror"
BIG = 12 * 1024 * 1024  # three parts of 5 MiB: multipart uploads and large GETs
# what a pass reports when requests fail every retry (never digest-mismatch, never a traceback)
TRANSIENT_KINDS = {"read-failed", "write-failed", "verify-failed", "tag-not-published", "revision-not-published"}


@pytest.fixture(scope="module")
def fs_primary(tmp_path_factory):
    """A filesystem registry that took the pushes: (registry, what was pushed)."""
    for tool in ("docker-registry", "skopeo", "umoci"):
        require_tool(tool)
    factory = ImageFactory(tmp_path_factory.mktemp("oci"))
    images = build_images(factory, {"big": [layer("base"), layer("big", size=BIG)]})
    work = tmp_path_factory.mktemp("fs-primary")
    with Registry(root=work / "root", workdir=work / "registry") as registry:
        yield registry, push_images(factory, images, registry)


class Rgw:
    """A boto3 client on RGW (``client``) and the buckets this test made, removed after it."""

    def __init__(self, cluster) -> None:
        self.client = rgw_admin_client(cluster)
        self.made: list[str] = []

    def bucket(self, purpose: str) -> str:
        name = f"faults-{purpose}-{uuid.uuid4().hex[:8]}"
        self.client.create_bucket(Bucket=name)
        self.made.append(name)
        return name

    def layout(self, bucket: str) -> dict[str, bytes | int]:
        """``fs_layout``'s view of ``s3://bucket/mirror``: link key -> content, blob key -> size."""
        prefix = f"{ROOT}/{V2}/"
        found: dict[str, bytes | int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(prefix):]
                if "/_uploads/" in f"/{key}":
                    continue
                found[key] = self.read(bucket, item["Key"]) if key.endswith("/link") else item["Size"]
        return found

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def incomplete_uploads(self, bucket: str) -> list[str]:
        return sorted(u["Key"] for u in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    def remove_all(self) -> None:
        for name in self.made:
            for upload in self.client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            self.client.delete_bucket(Bucket=name)
        self.client.close()


@pytest.fixture
def rgw(s3_credentials):
    made = Rgw(s3_credentials)
    yield made
    made.remove_all()


def filled_bucket(rgw: Rgw, cluster, primary: Registry, syncagent, purpose: str) -> str:
    """A bucket holding a clean copy of the primary (a registry's S3 storage, as far as syncagent is concerned)."""
    bucket = rgw.bucket(purpose)
    result = syncagent("sync", primary.root, rgw_url(cluster, bucket), "--json")
    assert result.returncode == 0, result.describe()
    return bucket


def assert_transient_only(result, pushed: Pushed) -> dict:
    """Exit 0 with nothing to report, or exit 1 with problems that all come from faults in transit."""
    report = sync_report(result)
    if result.returncode == 0:
        assert report["problems"] == [], result.describe()
        assert report["tags_published"] == len(pushed.tags), result.describe()
    else:
        assert result.returncode == 1, result.describe()
        assert {p["kind"] for p in report["problems"]} <= TRANSIENT_KINDS, result.describe()
    assert not any(p["kind"] == "digest-mismatch" for p in report["problems"]), result.describe()
    return report


# -- the proxy itself ------------------------------------------------------------------------


def test_the_proxy_passes_signatures_through_and_injects_each_fault_as_told(s3_credentials, s3_fault_proxy, rgw):
    from backends import TransientError, open_backend

    proxy = s3_fault_proxy
    bucket = rgw.bucket("proxy")
    backend = open_backend(rgw_url(s3_credentials, bucket, endpoint_url=proxy.endpoint, max_attempts=1, put_client="boto3"))
    data = os.urandom(300_000)
    backend.put_bytes("obj", data)  # SigV4 made for the proxy's host:port holds at RGW
    assert backend.read_bytes("obj") == data and [i.key for i in backend.iter_objects("")] == ["obj"]
    assert proxy.control.total() == 0 and proxy.control.requests["put"] == 1

    def fails(fault: str, operation: str, attempt) -> str:
        proxy.control.clear()
        proxy.control.set_rate(fault, 1.0, operation)
        before = proxy.control.injected[(operation, fault)]
        with pytest.raises(TransientError) as raised:
            attempt()
        assert proxy.control.injected[(operation, fault)] == before + 1, (fault, operation, proxy.control.injections)
        proxy.control.clear()
        return str(raised.value)

    assert "300000" in fails("truncate", "get", lambda: backend.read_prefix("obj", 400_000))  # the length it fell short of
    assert "reset" in fails("reset-body", "get", lambda: backend.read_bytes("obj")).lower()
    assert "SlowDown" in fails("slowdown", "get", lambda: backend.read_bytes("obj"))
    assert "InternalError" in fails("error-after", "put", lambda: backend.put_bytes("applied", b"1"))
    assert rgw.read(bucket, f"{ROOT}/applied") == b"1"  # the write happened upstream
    fails("reset-request", "put", lambda: backend.put_bytes("never", b"2"))
    assert "Contents" not in rgw.client.list_objects_v2(Bucket=bucket, Prefix=f"{ROOT}/never")
    fails("truncate", "list", lambda: list(backend.iter_objects("")))

    # max_attempts counts every attempt (botocore's own "max_attempts" would count retries only)
    proxy.control.set_rate("slowdown", 1.0, "head")
    retrying = open_backend(rgw_url(s3_credentials, bucket, endpoint_url=proxy.endpoint, max_attempts=3))
    with pytest.raises(TransientError):
        retrying.stat("obj")
    assert proxy.control.injected[("head", "slowdown")] == 3
    proxy.control.max_faults_per_request = 2
    assert retrying.stat("applied").size == 1  # two 503s, then the answer
    assert proxy.control.injected[("head", "slowdown")] == 5
    retrying.close()
    backend.close()


def test_the_proxy_draws_the_same_faults_for_the_same_seed(s3_credentials, rgw):
    from backends import TransientError, open_backend

    bucket = rgw.bucket("seeded")
    setup = open_backend(rgw_url(s3_credentials, bucket))
    for n in range(30):
        setup.put_bytes(f"k/{n}", b"x" * 1000)
    setup.close()

    def hits(seed: int) -> list[str]:
        with S3FaultProxy(s3_credentials.rgw_endpoint, seed=seed) as proxy:
            proxy.control.set_rate("truncate", 0.5, "get")
            backend = open_backend(rgw_url(s3_credentials, bucket, endpoint_url=proxy.endpoint, max_attempts=1))
            for n in reversed(range(30)):
                for _ in range(2):  # the second read of a key is a draw of its own
                    try:
                        backend.read_bytes(f"k/{n}")
                    except TransientError:
                        pass
            backend.close()
            return sorted(i.path for i in proxy.control.injections)

    first = hits(7)
    assert 10 < len(first) < 50
    assert hits(7) == first
    assert hits(8) != first


# -- reads cut short: S3 -> filesystem ---------------------------------------------------------


@pytest.mark.parametrize("truncated", [0.1, 0.3])
def test_s3_to_filesystem_through_answers_cut_short_copies_everything_with_no_digest_mismatch(
    tmp_path, fs_primary, s3_credentials, s3_fault_proxy, rgw, syncagent, truncated
):
    """Each GET is truncated or reset at most twice (``max_faults_per_request``): retries always win."""
    primary, pushed = fs_primary
    bucket = filled_bucket(rgw, s3_credentials, primary, syncagent, "cut-source")
    proxy = s3_fault_proxy
    proxy.control.set_rate("truncate", truncated, "get")
    proxy.control.set_rate("reset-body", 0.1, "get")
    proxy.control.max_faults_per_request = 2
    destination = tmp_path / "replica"

    result = syncagent("sync", rgw_url(s3_credentials, bucket, endpoint_url=proxy.endpoint), destination, "--json")
    assert proxy.control.total() > 0
    assert result.returncode == 0, f"{result.describe()}\n(injected: {dict(proxy.control.injected)})"
    report = sync_report(result)
    assert report["problems"] == [] and report["tags_published"] == len(pushed.tags), result.describe()
    assert fs_layout(destination) == rgw.layout(bucket)
    verified = syncagent("verify", destination, "--deep")
    assert verified.returncode == 0, verified.describe()


def test_s3_to_filesystem_at_an_absurd_truncation_rate_names_transient_failures_only(
    tmp_path, fs_primary, s3_credentials, s3_fault_proxy, rgw, syncagent
):
    """90% of GETs cut short, without a bound: some reads fail every retry. They are read-failed,
    never digest-mismatch; the source is sound, and what was published verifies."""
    primary, pushed = fs_primary
    bucket = filled_bucket(rgw, s3_credentials, primary, syncagent, "absurd-source")
    proxy = s3_fault_proxy
    proxy.control.set_rate("truncate", 0.9, "get")
    destination = tmp_path / "replica"

    result = syncagent("sync", rgw_url(s3_credentials, bucket, endpoint_url=proxy.endpoint), destination, "--json")
    assert result.returncode == 1, result.describe()
    problems = sync_report(result)["problems"]
    assert {p["kind"] for p in problems} <= TRANSIENT_KINDS, result.describe()
    failed_reads = [p for p in problems if p["kind"] == "read-failed"]
    assert failed_reads and all(
        "tried 4 times" in p["reason"] or "gave up after 4 attempts" in p["reason"] for p in failed_reads
    ), result.describe()
    if destination.exists():
        verified = syncagent("verify", destination)
        assert verified.returncode == 0, verified.describe()
    source_check = syncagent("verify", rgw_url(s3_credentials, bucket), "--deep", "--json")
    assert source_check.returncode == 0 and source_check.json()["problems"] == [], source_check.describe()

    proxy.control.clear()
    resumed = syncagent("sync", rgw_url(s3_credentials, bucket, endpoint_url=proxy.endpoint), destination, "--json")
    assert resumed.returncode == 0 and sync_report(resumed)["problems"] == [], resumed.describe()
    assert fs_layout(destination) == rgw.layout(bucket)


# -- writes under faults: filesystem -> S3 -----------------------------------------------------


WRITE_FAULTS = {  # fault -> (rate, operations); "all" operations when none are named
    "five-percent": {
        "slowdown": (0.05, ()),
        "error-after": (0.05, ("put", "upload-part", "complete-upload")),
        "reset-request": (0.05, ("put", "upload-part", "head")),
        "reset-body": (0.05, ("list", "get")),
    },
    "thirty-percent": {
        "slowdown": (0.1, ()),
        "error-after": (0.1, ("put", "upload-part", "complete-upload", "create-upload")),
        "reset-request": (0.1, ("put", "upload-part", "head", "get")),
        "reset-body": (0.1, ("list", "get")),
    },
}


def test_filesystem_to_s3_at_five_percent_faults_completes_and_repair_aborts_the_uploads_faults_orphaned(
    fs_primary, s3_credentials, s3_fault_proxy, rgw, syncagent
):
    """Each request meets at most two faults, fewer than botocore's and syncagent's retries: exit 0.
    Every CreateMultipartUpload is answered 500 after RGW carried it out, twice: the client starts
    a third, and the first two stay behind as incomplete uploads, which verify reports and
    ``--repair --abort-uploads-older-than 0`` aborts."""
    primary, pushed = fs_primary
    bucket = rgw.bucket("five-percent")
    proxy = s3_fault_proxy
    for fault, (rate, operations) in WRITE_FAULTS["five-percent"].items():
        proxy.control.set_rate(fault, rate, *operations)
    proxy.control.set_rate("slowdown", 0.0, "create-upload")
    proxy.control.set_rate("error-after", 1.0, "create-upload")
    proxy.control.max_faults_per_request = 2

    result = syncagent("sync", primary.root, rgw_url(s3_credentials, bucket, endpoint_url=proxy.endpoint), "--json")
    injected = dict(proxy.control.injected)
    assert result.returncode == 0, f"{result.describe()}\n(injected: {injected})"
    assert sync_report(result)["tags_published"] == len(pushed.tags)
    assert sum(n for (operation, _), n in injected.items() if operation != "create-upload") > 0, injected
    assert rgw.layout(bucket) == fs_layout(primary.root)

    destination = rgw_url(s3_credentials, bucket)
    verified = syncagent("verify", destination, "--json")
    assert verified.returncode == 0, verified.describe()
    orphans = rgw.incomplete_uploads(bucket)
    assert len(orphans) == injected[("create-upload", "error-after")] == 2  # one multipart put: the big layer
    assert sorted(f"{ROOT}/{f['key']}" for f in verified.json()["findings"] if f["kind"] == "incomplete-upload") == orphans

    repaired = syncagent("verify", str(primary.root), "--against", destination, "--repair", "--abort-uploads-older-than", "0", "--json")
    assert repaired.returncode == 0, repaired.describe()
    assert repaired.json()["uploads"]["uploads_aborted"] == 2
    assert rgw.incomplete_uploads(bucket) == []


def test_filesystem_to_s3_at_thirty_percent_faults_keeps_the_invariant_and_a_second_run_completes(
    fs_primary, s3_credentials, s3_fault_proxy, rgw, syncagent
):
    """Unbounded faults: some requests fail every retry. Exit 0 or transient problems only; ``verify DST``
    holds; the only incomplete uploads are those whose CreateMultipartUpload RGW carried out but
    answered 500 (the client started another), and verify reports them."""
    primary, pushed = fs_primary
    bucket = rgw.bucket("thirty-percent")
    proxy = s3_fault_proxy
    proxy.control.seed = 5
    for fault, (rate, operations) in WRITE_FAULTS["thirty-percent"].items():
        proxy.control.set_rate(fault, rate, *operations)

    result = syncagent("sync", primary.root, rgw_url(s3_credentials, bucket, endpoint_url=proxy.endpoint), "--json")
    injected = dict(proxy.control.injected)
    assert proxy.control.total() > 0
    assert_transient_only(result, pushed)

    destination = rgw_url(s3_credentials, bucket)
    verified = syncagent("verify", destination, "--json")
    assert verified.returncode == 0, f"{verified.describe()}\n(injected: {injected})"
    orphans = rgw.incomplete_uploads(bucket)
    assert len(orphans) <= injected.get(("create-upload", "error-after"), 0)
    assert sorted(f"{ROOT}/{f['key']}" for f in verified.json()["findings"] if f["kind"] == "incomplete-upload") == orphans

    proxy.control.clear()
    resumed = syncagent("sync", primary.root, destination, "--json")
    assert resumed.returncode == 0 and sync_report(resumed)["problems"] == [], resumed.describe()
    assert rgw.layout(bucket) == fs_layout(primary.root)


# -- keys no registry writes ---------------------------------------------------------------------


PLANTED = [
    f"{V2}/repositories/library/../evil/_manifests/tags/v1/current/link",
    f"{V2}/repositories/library//twin/_manifests/tags/v1/current/link",
    f"{V2}/repositories/library/single/_manifests/tags//current/link",
    f"{V2}/repositories/library/single/_manifests/revisions/../sha256/link",
    f"{V2}/repositories/library/single/_manifests/tags/v1/index/sha256//link",
]


def test_keys_with_dot_dot_and_empty_segments_are_reported_by_sync_and_verify_and_never_copied(
    tmp_path, fs_primary, s3_credentials, rgw, syncagent
):
    primary, pushed = fs_primary
    bucket = filled_bucket(rgw, s3_credentials, primary, syncagent, "planted")
    digest = pushed.tags[("library/single", "v1")].digest.encode()
    for key in PLANTED:
        rgw.client.put_object(Bucket=bucket, Key=f"{ROOT}/{key}", Body=digest)  # syncagent's own put refuses these keys
    source = rgw_url(s3_credentials, bucket)
    destination = tmp_path / "replica"

    result = syncagent("sync", source, destination, "--json")
    assert result.returncode == 1, result.describe()
    report = sync_report(result)
    assert {p["kind"] for p in report["problems"]} == {"invalid-name"}, result.describe()
    assert report["tags_published"] == len(pushed.tags)
    walked = PLANTED[:4]  # the last one is under no name the sync reads
    for key in walked:
        assert [p for p in report["problems"] if key.startswith(p["key"] + "/")], f"{key} not reported\n{result.describe()}"
    assert fs_layout(destination) == fs_layout(primary.root)
    assert not any("evil" in str(path) or "twin" in str(path) for path in destination.rglob("*"))

    verified = syncagent("verify", source, "--json")
    assert verified.returncode == 1, verified.describe()
    problems = verified.json()["problems"]
    assert {p["kind"] for p in problems} == {"invalid-name"}, verified.describe()
    for key in PLANTED:
        assert [p for p in problems if key == p["key"] or key.startswith(p["key"] + "/")], f"{key} not reported\n{verified.describe()}"
    assert len(problems) == len(PLANTED), verified.describe()


# -- multipart uploads a killed sync left ---------------------------------------------------------


def test_verify_reports_an_incomplete_multipart_upload_and_repair_aborts_it_only_past_the_threshold(
    fs_primary, s3_credentials, rgw, syncagent
):
    primary, _ = fs_primary
    bucket = filled_bucket(rgw, s3_credentials, primary, syncagent, "leftover")
    key = f"{ROOT}/{V2}/blobs/sha256/ee/{'e' * 64}/data"
    upload_id = rgw.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    rgw.client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"p" * (5 * 1024 * 1024))
    destination = rgw_url(s3_credentials, bucket)

    verified = syncagent("verify", destination, "--json")
    assert verified.returncode == 0, verified.describe()
    summary = verified.json()
    assert (summary["incomplete_uploads"], summary["incomplete_upload_bytes"]) == (1, 5 * 1024 * 1024)
    (finding,) = [f for f in summary["findings"] if f["kind"] == "incomplete-upload"]
    assert finding["key"] == key.removeprefix(f"{ROOT}/") and upload_id in finding["reason"]
    assert "incomplete uploads 1 (5.0 MiB" in syncagent("verify", destination).stdout

    for kept in ([], ["--abort-uploads-older-than", "1h"]):
        repaired = syncagent("verify", str(primary.root), "--against", destination, "--repair", *kept, "--json")
        assert repaired.returncode == 0, repaired.describe()
        assert repaired.json()["uploads"]["uploads_kept"] == 1, repaired.describe()
        assert rgw.incomplete_uploads(bucket) == [key]

    aborted = syncagent("verify", str(primary.root), "--against", destination, "--repair", "--abort-uploads-older-than", "0", "--json")
    assert aborted.returncode == 0, aborted.describe()
    result = aborted.json()
    assert (result["uploads"]["uploads_aborted"], result["uploads"]["upload_bytes_freed"]) == (1, 5 * 1024 * 1024)
    assert result["after_repair"]["destination"]["incomplete_uploads"] == 0
    assert rgw.incomplete_uploads(bucket) == []
    assert json.loads(syncagent("verify", destination, "--json").stdout)["findings"] == []
