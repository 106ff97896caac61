"""The ``s3_boto3_backend_factory`` fixture: the S3 backend with every upload sent by boto3.

The same buckets and options as ``s3_backend_factory`` (tests/support/fixtures_backend_s3.py),
with ``put_client=boto3``, so the conformance suite covers both of the backend's upload paths.
"""

from __future__ import annotations

import pytest

from tests.support.fixtures_backend_s3 import backend_factory


@pytest.fixture
def s3_boto3_backend_factory(s3_credentials):
    yield from backend_factory(s3_credentials, put_client="boto3")
