"""Server-side copies: the S3 backend's optional ``ServerCopy`` ability (``backends/base.py``).

Between two buckets (or prefixes) of one S3 service reached with the same
credentials, the store can copy an object itself; its bytes need not travel
to the agent and back. A copy is still checked before it becomes visible:

* it is a multipart upload: CreateMultipartUpload, one UploadPartCopy per
  part (one part up to 64 MiB and more; parts of 64 MiB or more above that),
  CompleteMultipartUpload. Nothing is visible before the last call;
* the caller reads the source object meanwhile (and hashes it: for a blob,
  SHA-256 against its digest); here the MD5 of each part's range of those
  bytes is computed as they pass;
* S3 answers each UploadPartCopy with the part's ETag, the MD5 of the bytes
  it copied into that part. The upload is completed only when the caller's
  ``before_commit`` has accepted what it read and every part's ETag is the
  MD5 of the same range of it -- the copy holds exactly the bytes that were
  hashed. Otherwise it is aborted: a part whose ETag is no MD5 (SSE-KMS,
  SSE-C) raises CopyUnverifiable and the caller streams the object instead;
  one whose MD5 differs means the source changed meanwhile (TransientError).

Why not a CopyObject pinned to the ETag the read saw (``x-amz-copy-source-if-match``):
Ceph RGW 16 ignores that header (it honours a non-standard
``x-amz-copy-if-match`` on CopyObject, and nothing on UploadPartCopy), and
S3's own checksum of a copy (``ChecksumAlgorithm=SHA256``) arrives with the
copy already visible -- and RGW 16 neither computes nor checks it. The part
ETags are what every S3 implementation returns.
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import Future
from typing import Any, BinaryIO

from ..base import BeforeCommit, ObjectInfo, innermost
from ..errors import CopyUnverifiable, TransientError
from .options import MAX_PART_SIZE, MAX_PARTS, MIB, READ_BLOCK
from .streams import md5_of_etag, pieces_up_to

COPY_PART_SIZE = 64 * MIB


class ServerCopies:
    """Mixed into the backend: needs ``_client``, ``bucket``, ``options``, ``_object_key``, ``_call``,
    ``_parts_pool``, ``_abort`` and ``_copy_identity`` (endpoint, region, access key; None without credentials)."""

    def can_copy_from(self, source, size: int) -> bool:
        if not self.options.server_copy or size <= 0 or size < self.options.server_copy_threshold:
            return False
        other = innermost(source)
        return (isinstance(other, ServerCopies) and self._copy_identity is not None
                and other._copy_identity == self._copy_identity)

    def copy_from(self, source, key: str, data: BinaryIO, *, size: int, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        other = innermost(source)
        copy_source = {"Bucket": other.bucket, "Key": other._object_key(key)}
        object_key = self._object_key(key)
        ranges = _part_ranges(size)
        upload_id = self._call(self._client.create_multipart_upload, key, Key=object_key)["UploadId"]
        futures: list[Future] = []
        try:
            for number, (first, last) in enumerate(ranges, start=1):
                byte_range = None if len(ranges) == 1 else f"bytes={first}-{last}"
                futures.append(self._parts_pool().submit(self._copy_part, key, object_key, upload_id, number, copy_source, byte_range))
            read = _md5_of_ranges(data, ranges)
            etags = [future.result() for future in futures]
            if before_commit is not None:
                before_commit()
            _check_parts(key, etags, read)
            parts = [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, start=1)]
            self._call(self._client.complete_multipart_upload, key, Key=object_key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
        except BaseException:
            self._abandon(key, object_key, upload_id, futures)
            raise
        return ObjectInfo(key, size)

    def _copy_part(self, key: str, object_key: str, upload_id: str, number: int, copy_source: dict[str, str],
                   byte_range: str | None) -> str:
        params: dict[str, Any] = {"Key": object_key, "UploadId": upload_id, "PartNumber": number, "CopySource": copy_source}
        if byte_range is not None:
            params["CopySourceRange"] = byte_range
        return self._call(self._client.upload_part_copy, key, **params)["CopyPartResult"]["ETag"]


def _part_ranges(size: int) -> list[tuple[int, int]]:
    """Inclusive byte ranges of the parts of a copy of ``size`` bytes (at most 10,000, each within S3's limits)."""
    part = max(COPY_PART_SIZE, math.ceil(size / MAX_PARTS / MIB) * MIB)
    part = min(part, MAX_PART_SIZE)
    return [(start, min(start + part, size) - 1) for start in range(0, size, part)]


def _md5_of_ranges(data: BinaryIO, ranges: list[tuple[int, int]]) -> list[str]:
    """The MD5 of each range of ``data``, read to EOF (bytes past the last range go to no range)."""
    digests = []
    for first, last in ranges:
        hasher = hashlib.md5()
        for piece in pieces_up_to(data, last - first + 1):
            hasher.update(piece)
        digests.append(hasher.hexdigest())
    while data.read(READ_BLOCK):
        pass
    return digests


def _check_parts(key: str, etags: list[str], read: list[str]) -> None:
    for number, (etag, md5) in enumerate(zip(etags, read), start=1):
        copied = md5_of_etag(etag)
        if copied is None:
            raise CopyUnverifiable(f"{key}: the store's ETag of copied part {number} is no MD5 (encrypted with SSE-KMS or "
                                   "SSE-C?): a server-side copy cannot be checked here", key=key)
        if copied != md5:
            raise TransientError(f"{key}: part {number} of the server-side copy differs from what was read and hashed "
                                 "(the source object changed meanwhile); nothing was made visible", key=key)
