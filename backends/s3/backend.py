"""The S3 backend itself: keys under a root directory, reads, atomic puts (one request, or a
multipart upload it drives), deletes and listings. See the package docstring."""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Callable, Iterator

from ..base import BaseBackend, BeforeCommit, Capabilities, Entry, ObjectInfo, check_key, check_prefix
from ..errors import BackendError, BackendUnavailable, ConfigurationError, InvalidKey
from ..options import parse_options
from .connection import RequestCounter, format_url, make_client, make_session
from .crt import HandBack, make_crt_uploads
from .errors import SDK_ERRORS, boto3, translate_error
from .copies import ServerCopies
from .leftovers import IncompleteUploads
from .options import BUCKET_NAME, MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIB, S3Options
from .streams import ObjectReader, Prepended, etag, is_folder_marker, md5_of_etag, read_up_to

log = logging.getLogger(__name__)


class S3Backend(IncompleteUploads, ServerCopies, BaseBackend):
    def __init__(self, bucket: str, root: str = "", options: S3Options = S3Options()) -> None:
        if boto3 is None:
            raise BackendUnavailable("the s3 backend needs boto3: pip install boto3")
        if not BUCKET_NAME.match(bucket):
            raise ConfigurationError(f"s3:// URL needs a bucket name (3-255 letters, digits, '.', '-', '_'), got {bucket!r}")
        root = root.strip("/")
        if root:
            try:
                check_key(root)
            except InvalidKey as exc:
                raise ConfigurationError(f"s3:// root directory {root!r} is malformed: {exc}") from None
        self.bucket = bucket
        self.root = root
        self.options = options
        self.url = format_url(bucket, root, options)
        self.capabilities = Capabilities(empty_prefixes=False, default_concurrency=options.max_concurrency,
                                         max_object_size=MAX_OBJECT_SIZE, listing_md5=options.listing_md5,
                                         incomplete_uploads=True, server_copy=options.server_copy)
        session = make_session(options)
        self._client = make_client(session, options)
        self.requests = RequestCounter()
        self.requests.attach(self._client)
        credentials = session.get_credentials()
        self._copy_identity = None if credentials is None else (
            self._client.meta.endpoint_url, self._client.meta.region_name, credentials.access_key)
        self._crt, why_not = make_crt_uploads(session, self._client, bucket, options)
        if self._crt is None:
            if options.put_client == "crt":
                self._client.close()
                raise ConfigurationError(f"option put_client=crt: {why_not}")
            log.debug("%s: single-request uploads through boto3: %s", self.url, why_not)
        self._part_slots = threading.BoundedSemaphore(options.max_concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @classmethod
    def from_url(cls, parts, query) -> "S3Backend":
        if "@" in parts.netloc:
            raise ConfigurationError("s3:// URLs never carry credentials; use the environment, a profile (?profile=) or a role")
        if not parts.netloc:
            raise ConfigurationError("s3:// URL without a bucket: expected s3://BUCKET/ROOTDIRECTORY")
        return cls(parts.netloc, parts.path, parse_options(S3Options, query, scheme="s3"))

    # -- keys ------------------------------------------------------------------

    def _object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.root}/{key}" if self.root else key

    def _object_prefix(self, prefix: str) -> str:
        check_prefix(prefix)
        return f"{self.root}/{prefix}" if self.root else prefix

    def _call(self, operation: Callable[..., Any], key: str | None, **params: Any) -> Any:
        try:
            return operation(Bucket=self.bucket, **params)
        except SDK_ERRORS as exc:
            raise translate_error(exc, key) from exc

    # -- reading ---------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        response = self._call(self._client.head_object, key, Key=self._object_key(key))
        return ObjectInfo(key, int(response["ContentLength"]), etag=etag(response.get("ETag")))

    def open_read(self, key: str) -> BinaryIO:
        response = self._call(self._client.get_object, key, Key=self._object_key(key))
        return ObjectReader(response["Body"], key, response.get("ContentLength"))  # type: ignore[return-value]

    # -- writing ---------------------------------------------------------------

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        object_key = self._object_key(key)
        threshold = self.options.multipart_threshold
        if size is not None and size > threshold:
            return self._put_multipart(key, object_key, data, b"", size, before_commit)
        head = read_up_to(data, threshold + 1)
        if len(head) > threshold:
            return self._put_multipart(key, object_key, data, head, size, before_commit)
        if before_commit is not None:
            before_commit()
        crt = self._crt
        if crt is not None:
            try:
                self.requests.add("PutObject (CRT)")
                crt.put(key, object_key, head)
                return ObjectInfo(key, len(head))
            except HandBack as exc:
                log.info("%s: %s; single-request uploads go through boto3 from now on", self.url, exc)
                self._crt = None
        self._call(self._client.put_object, key, Key=object_key, Body=head)
        return ObjectInfo(key, len(head))

    def _put_multipart(self, key: str, object_key: str, data: BinaryIO, head: bytes, size: int | None,
                       before_commit: BeforeCommit | None) -> ObjectInfo:
        chunk = self._part_size(size)
        source = Prepended(head, data)
        del head
        upload_id = self._call(self._client.create_multipart_upload, key, Key=object_key)["UploadId"]
        futures: list[Future] = []
        failed = threading.Event()
        total = 0
        try:
            part_number = 0
            while True:
                self._part_slots.acquire()
                try:
                    if failed.is_set():
                        _raise_first_failure(futures)
                    body = read_up_to(source, chunk)
                except BaseException:
                    self._part_slots.release()
                    raise
                if not body and part_number > 0:
                    self._part_slots.release()
                    break
                part_number += 1
                if part_number > MAX_PARTS:
                    self._part_slots.release()
                    raise BackendError(f"{key}: more than {MAX_PARTS} parts of {chunk} bytes; raise ?multipart_chunksize= or pass the size", key=key)
                total += len(body)
                try:
                    future = self._parts_pool().submit(self._upload_part, key, object_key, upload_id, part_number, body)
                except BaseException:
                    self._part_slots.release()
                    raise
                future.add_done_callback(self._part_done(failed))
                futures.append(future)
                if len(body) < chunk:
                    break
            parts = [future.result() for future in futures]
            if before_commit is not None:
                before_commit()
            self._call(self._client.complete_multipart_upload, key, Key=object_key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
        except BaseException:
            self._abandon(key, object_key, upload_id, futures)
            raise
        return ObjectInfo(key, total)

    def _part_done(self, failed: threading.Event) -> Callable[[Future], None]:
        def done(future: Future) -> None:
            self._part_slots.release()
            if future.cancelled() or future.exception() is not None:
                failed.set()

        return done

    def _upload_part(self, key: str, object_key: str, upload_id: str, part_number: int, body: bytes) -> dict[str, Any]:
        response = self._call(self._client.upload_part, key, Key=object_key, UploadId=upload_id, PartNumber=part_number, Body=body)
        part = {"PartNumber": part_number, "ETag": response["ETag"]}
        for name in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"):
            if response.get(name):
                part[name] = response[name]
        return part

    def _abandon(self, key: str, object_key: str, upload_id: str, futures: "list[Future]") -> None:
        """Cancel the part transfers of a failed multipart upload, wait for those already running, then
        abort the upload (aborting while a part is still being sent could leave that part behind)."""
        for future in futures:
            future.cancel()
        for future in futures:
            if not future.cancelled():
                future.exception()
        self._abort(key, object_key, upload_id)

    def _abort(self, key: str, object_key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
        except SDK_ERRORS as exc:
            log.warning("could not abort multipart upload %s of s3://%s/%s: %s", upload_id, self.bucket, object_key, translate_error(exc, key))

    def _part_size(self, size: int | None) -> int:
        chunk = self.options.multipart_chunksize
        if size is not None and size > chunk * MAX_PARTS:
            chunk = min(MAX_PART_SIZE, math.ceil(size / MAX_PARTS / MIB) * MIB)
        return chunk

    def _parts_pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.options.max_concurrency, thread_name_prefix="s3-part")
            return self._executor

    def delete(self, key: str) -> None:
        self._call(self._client.delete_object, key, Key=self._object_key(key))

    # -- listing ---------------------------------------------------------------

    def iter_children(self, prefix: str) -> Iterator[Entry]:
        full = self._object_prefix(prefix)
        for page in self._pages("list_objects_v2", full, Prefix=full, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                yield Entry(common["Prefix"][len(full):-1], True)
            for item in page.get("Contents", ()):
                name = item["Key"][len(full):]
                if not is_folder_marker(name, int(item["Size"])):
                    yield Entry(name, False)

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        full = self._object_prefix(prefix)
        for page in self._pages("list_objects_v2", full, Prefix=full):
            for item in page.get("Contents", ()):
                key, size = self._relative(item["Key"]), int(item["Size"])
                if not is_folder_marker(key, size):
                    yield ObjectInfo(key, size, md5_of_etag(item.get("ETag")), etag(item.get("ETag")))

    def _relative(self, object_key: str) -> str:
        """The backend's key for an S3 key under the root directory, as stored (maybe malformed)."""
        return object_key[len(self.root) + 1:] if self.root else object_key

    def _pages(self, operation: str, where: str, **params: Any) -> Iterator[dict[str, Any]]:
        pages = iter(self._client.get_paginator(operation).paginate(Bucket=self.bucket, **params))
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except SDK_ERRORS as exc:
                raise translate_error(exc, where) from exc
            yield page

    def close(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        if self._crt is not None:
            self._crt.close()
        self._client.close()
        log.info("%s: %s", self.url, self.requests.describe())


def _raise_first_failure(futures: list[Future]) -> None:
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
    raise BackendError("a part upload was cancelled")
