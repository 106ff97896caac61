"""The S3 backend's options (``s3://BUCKET/ROOT?name=value``) and the limits S3 sets."""

from __future__ import annotations

import dataclasses
import re

from ..errors import ConfigurationError
from ..options import option

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MIB
READ_BLOCK = 1 * MIB
BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$")


@dataclasses.dataclass(frozen=True)
class S3Options:
    endpoint_url: str = option("", "S3 endpoint, e.g. http://127.0.0.1:7480 for Ceph RGW; empty means AWS (or AWS_ENDPOINT_URL)")
    region: str = option("", "region to sign for; empty means boto3's default (AWS_DEFAULT_REGION, profile, else us-east-1)")
    addressing_style: str = option("auto", "bucket in the path ('path', needed by most RGW/MinIO setups), in the host name ('virtual') or boto3's choice ('auto')")
    verify: bool = option(True, "verify the endpoint's TLS certificate")
    ca_bundle: str = option("", "PEM file of CA certificates to verify the endpoint with; empty means boto3's default (AWS_CA_BUNDLE, profile, certifi)")
    profile: str = option("", "profile in the shared AWS config/credentials files to take credentials and settings from; empty means boto3's default chain")
    sign_payload: bool = option(
        False,
        "sign each request body with SHA-256 (SigV4 payload signing); off, as botocore does over HTTPS: "
        "TLS and the CRC32 checksum S3 verifies protect the body in transit, and syncagent checks every digest itself",
    )
    max_attempts: int = option(5, "attempts per request by botocore's standard retry mode (throttling, 5xx, lost connections); 1 when an outer retry wrapper decides")
    max_concurrency: int = option(8, "parts uploaded (and held in memory) at once per backend; the suggested number of parallel transfers; the connection pool holds twice as many")
    multipart_threshold: int = option(16 * MIB, "objects larger than this many bytes are uploaded in parts; smaller ones are buffered in memory and sent in one request")
    put_client: str = option(
        "auto",
        "what sends single-request uploads: 'crt' (the AWS Common Runtime from boto3[crt]: the same request, "
        "signed the same way, at a fraction of boto3's CPU per request), 'boto3', or 'auto' (crt unless awscrt "
        "is missing, max_attempts is 1, a proxy is set in the environment or no credentials are found)",
    )
    multipart_chunksize: int = option(16 * MIB, "bytes per part of a multipart upload (at least 5 MiB); raised as needed to stay within 10,000 parts when the size is known")
    server_copy: bool = option(
        True,
        "let the store copy objects from a source bucket on the same endpoint reached with the same credentials "
        "(UploadPartCopy), each copy checked against the bytes syncagent reads and hashes before it is visible; "
        "off: every byte is read and written back by syncagent",
    )
    server_copy_threshold: int = option(4 * MIB, "objects smaller than this are read and written back even when the store could copy them (a server-side copy takes three requests besides the read)")
    listing_md5: bool = option(
        True,
        "take listed ETags as MD5 hints, so that links whose content is known are not read one GET each; "
        "off for S3 gateways whose listings can lag behind the objects (e.g. over storage written out of band)",
    )

    def __post_init__(self) -> None:
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ConfigurationError(f"option addressing_style: expected auto, path or virtual, got {self.addressing_style!r}")
        if self.put_client not in ("auto", "crt", "boto3"):
            raise ConfigurationError(f"option put_client: expected auto, crt or boto3, got {self.put_client!r}")
        if self.max_attempts < 1:
            raise ConfigurationError(f"option max_attempts: must be at least 1, got {self.max_attempts}")
        if self.max_concurrency < 1:
            raise ConfigurationError(f"option max_concurrency: must be at least 1, got {self.max_concurrency}")
        if not MIN_PART_SIZE <= self.multipart_chunksize <= MAX_PART_SIZE:
            raise ConfigurationError(f"option multipart_chunksize: must be between 5 MiB and 5 GiB ({MIN_PART_SIZE}..{MAX_PART_SIZE}), got {self.multipart_chunksize}")
        if not 0 <= self.multipart_threshold <= MAX_PART_SIZE:
            raise ConfigurationError(f"option multipart_threshold: must be between 0 and 5 GiB, got {self.multipart_threshold}")
        if self.server_copy_threshold < 0:
            raise ConfigurationError(f"option server_copy_threshold: cannot be negative, got {self.server_copy_threshold}")
        if self.endpoint_url and not re.match(r"^https?://", self.endpoint_url):
            raise ConfigurationError(f"option endpoint_url: expected http://HOST[:PORT] or https://..., got {self.endpoint_url!r}")
        if "@" in self.endpoint_url:
            raise ConfigurationError("option endpoint_url: credentials are never taken from a URL; use the environment or a profile")
