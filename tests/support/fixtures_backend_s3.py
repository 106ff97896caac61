"""The ``s3_backend_factory`` fixture: fresh S3 backends on the session's Ceph RGW.

Each backend gets a bucket of its own (``syncagent-test-<hex>``) and the root
directory ``mirror``, so the key mapping ``mirror/<key>`` is exercised too.
Credentials reach boto3 the ordinary way, through AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (set for the test only, with the shared AWS files pointed
away so a developer's ~/.aws cannot interfere). ``multipart_threshold`` and
``multipart_chunksize`` are 5 MiB, the S3 minimum part size, so the
conformance suite's 12-13 MiB objects go through multipart uploads.
``leftovers()`` lists the bucket's incomplete multipart uploads, ``plant()``
writes an object under any key with boto3 (``a//b``: syncagent's put refuses it).

``s3_fault_proxy``: a running :class:`~tests.support.fault_proxy.S3FaultProxy`
in front of the cluster's RGW, with no faults set; pass its ``endpoint`` as
``rgw_url(..., endpoint_url=proxy.endpoint)`` and set rates on its ``control``.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import boto3
import botocore.config
import pytest

from backends import open_backend
from tests.support.backends_under_test import BackendUnderTest
from tests.support.fault_proxy import S3FaultProxy

ROOT = "mirror"
PART = 5 * 1024 * 1024


@pytest.fixture
def s3_credentials(ceph_cluster, monkeypatch, tmp_path):
    """Point boto3's credential chain at the cluster's S3 user for this test."""
    if not ceph_cluster.rgw_endpoint:
        pytest.skip("the reused Ceph cluster has no radosgw")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph_cluster.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph_cluster.secret_key)
    return ceph_cluster


def rgw_url(cluster, bucket: str, root: str = ROOT, **options) -> str:
    """An s3:// URL for ``bucket`` on the cluster's RGW, path-style, with small multipart sizes."""
    query = {
        "endpoint_url": cluster.rgw_endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "multipart_threshold": PART,
        "multipart_chunksize": PART,
        "max_concurrency": 4,
    }
    query.update(options)
    return f"s3://{bucket}/{root}?{urlencode(query)}"


def rgw_admin_client(cluster):
    """A plain boto3 client for the test's own calls (create buckets, look for leftovers)."""
    return boto3.client(
        "s3",
        endpoint_url=cluster.rgw_endpoint,
        region_name="us-east-1",
        aws_access_key_id=cluster.access_key,
        aws_secret_access_key=cluster.secret_key,
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    )


@pytest.fixture
def s3_backend_factory(s3_credentials):
    """Backends whose single-request uploads go through the CRT (required: CI installs boto3[crt])."""
    yield from backend_factory(s3_credentials, put_client="crt")


@pytest.fixture
def s3_fault_proxy(s3_credentials):
    """A fault proxy in front of the session's RGW (see the module docstring); stopped after the test."""
    with S3FaultProxy(s3_credentials.rgw_endpoint) as proxy:
        yield proxy


def backend_factory(cluster, **options):
    """Yield a factory of fresh backends on ``cluster`` (URL ``options`` added); remove their buckets after."""
    client = rgw_admin_client(cluster)
    made: list[str] = []

    def make() -> BackendUnderTest:
        bucket = f"syncagent-test-{uuid.uuid4().hex[:16]}"
        client.create_bucket(Bucket=bucket)
        made.append(bucket)
        backend = open_backend(rgw_url(cluster, bucket, **options))

        def leftovers() -> list[str]:
            uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=f"{ROOT}/").get("Uploads", [])
            return sorted(f"multipart upload {u['Key']} ({u['UploadId']})" for u in uploads)

        def plant(key: str, data: bytes) -> bool:
            client.put_object(Bucket=bucket, Key=f"{ROOT}/{key}", Body=data)
            return True

        return BackendUnderTest(backend, leftovers, plant)

    yield make
    for bucket in made:
        _remove_bucket(client, bucket)
    client.close()


def _remove_bucket(client, bucket: str) -> None:
    """Best effort: the cluster is throwaway, but a reused one should not fill up."""
    try:
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except Exception:
        pass
