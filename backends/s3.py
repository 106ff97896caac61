"""S3 backend (AWS S3, Ceph RGW, MinIO, ...) on boto3: ``s3://BUCKET/ROOTDIRECTORY?OPTIONS``.

Keys are stored as ``ROOTDIRECTORY/KEY`` (just ``KEY`` when the root directory
is empty), the layout of the registry's own ``storage.s3`` driver with
``rootdirectory: /ROOTDIRECTORY``. Options are declared in :class:`S3Options`;
credentials come only from boto3's chain (environment, shared files and
profiles -- pick one with ``?profile=`` --, container and instance roles) and
never appear in the URL, in ``url`` or in a log line.

Atomic puts follow from S3 itself: an object becomes visible whole, when its
PutObject or CompleteMultipartUpload succeeds, and not before.

* Objects up to ``multipart_threshold`` bytes are read into memory, then
  ``before_commit()`` runs, then one PutObject stores them: sent by the AWS
  CRT's S3 client when it can be used (``put_client``; see
  ``backends/s3_crt.py``), else by boto3.
* Larger objects go through a multipart upload driven here:
  CreateMultipartUpload, UploadPart calls on a thread pool, ``before_commit()``
  once every part is stored, then CompleteMultipartUpload. On any failure --
  the caller's stream, a part, ``before_commit`` -- the remaining parts are
  cancelled or awaited and the upload is aborted (AbortMultipartUpload), so no
  incomplete upload is left behind.

Why not boto3's transfer manager (s3transfer) for the multipart case: it
completes the upload itself, with no point between the last UploadPart and
CompleteMultipartUpload at which ``before_commit`` could run and veto the
commit. Hooking the client's ``before-call`` event for CompleteMultipartUpload
would work only by matching upload ids in a handler shared by every thread of
one client. Driving the four calls ourselves is short, and keeps the memory
bound explicit: the backend holds at most ``max_concurrency`` parts in flight
across all its puts (a semaphore taken before a part is read from the source,
released when its upload ends), each ``multipart_chunksize`` bytes, plus the
first ``multipart_threshold`` bytes a put buffers to choose its path. Parts
are uploaded by one pool of ``max_concurrency`` threads per backend.

Reads stream: ``open_read`` returns a thin wrapper around the response's
StreamingBody that translates errors raised while reading, fills each read
(as a file does) and raises TransientError when the answer ends before its
Content-Length (a truncated response), so a read cut short in transit is
never taken for the object's end.

Listings yield every key under the root as stored, malformed ones included
(``a//b``, ``a/../b``: written by other clients; see ``backends/base.py``),
except the zero-byte "folder" markers (``a/b/``) that S3 consoles create.

Incomplete multipart uploads (left by a process killed mid-put) are listed
and aborted through the optional ``Leftovers`` ability.

Every SDK error goes through :func:`translate_error` (the CRT's through
``translate_crt_error``; both classify S3 error codes with
``backends/s3_errors.py``). Errors raised by the caller's stream or by
``before_commit`` are never translated.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import urlencode

from .base import BaseBackend, BeforeCommit, Capabilities, Entry, IncompleteUpload, ObjectInfo, check_key, check_prefix
from .errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidKey,
    PermissionDenied,
    TransientError,
)
from .options import option, parse_options
from .s3_crt import HandBack, make_crt_uploads
from .s3_errors import response_error

try:
    import boto3
    import botocore.config
    import botocore.exceptions
    import urllib3.exceptions
except ImportError:  # pragma: no cover - boto3 is a dependency of the project
    boto3 = None
    _SDK_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
else:
    # urllib3's ProtocolError: botocore lets it through when an error answer's body (a 404's XML)
    # is cut short or reset, since it reads that body outside its own error handling.
    _SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, urllib3.exceptions.ProtocolError,
                   TimeoutError, ConnectionError)

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MIB
_READ_BLOCK = 1 * MIB
_HEX32 = re.compile(r"[0-9a-f]{32}")
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$")


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
        if self.endpoint_url and not re.match(r"^https?://", self.endpoint_url):
            raise ConfigurationError(f"option endpoint_url: expected http://HOST[:PORT] or https://..., got {self.endpoint_url!r}")
        if "@" in self.endpoint_url:
            raise ConfigurationError("option endpoint_url: credentials are never taken from a URL; use the environment or a profile")


# -- error translation ---------------------------------------------------------

def translate_error(exc: BaseException, key: str | None = None) -> BackendError:
    """The typed error for an exception raised by boto3/botocore (or by reading a response).

    NoSuchKey/NoSuchBucket/404 -> NotFound; AccessDenied/403 and missing or
    rejected credentials -> PermissionDenied; throttling, 5xx, timeouts, lost
    and refused connections -> TransientError; anything else -> BackendError.
    The message names the key and the S3 error code, never credentials.
    """
    where = key if key is not None else "S3"
    if boto3 is not None and isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code", "") or "")
        status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
        return response_error(exc.operation_name, code, status, str(error.get("Message") or ""), key)
    if boto3 is not None and isinstance(exc, botocore.exceptions.BotoCoreError):
        message = f"{where}: {exc}"
        if isinstance(exc, botocore.exceptions.SSLError):
            return BackendError(f"{message} (check the endpoint's certificate, ?ca_bundle= or ?verify=)", key=key)
        if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
            return PermissionDenied(f"{where}: no usable AWS credentials: {exc} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or a role)", key=key)
        if isinstance(exc, (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
            botocore.exceptions.IncompleteReadError,
            botocore.exceptions.CredentialRetrievalError,
            botocore.exceptions.FlexibleChecksumError,
        )):
            return TransientError(message, key=key)
        return BackendError(message, key=key)
    if isinstance(exc, (TimeoutError, ConnectionError)) or (boto3 is not None and isinstance(exc, urllib3.exceptions.ProtocolError)):
        return TransientError(f"{where}: {exc}", key=key)
    return BackendError(f"{where}: {exc}", key=key)


# -- the backend ------------------------------------------------------------------


class S3Backend(BaseBackend):
    def __init__(self, bucket: str, root: str = "", options: S3Options = S3Options()) -> None:
        if boto3 is None:
            raise BackendUnavailable("the s3 backend needs boto3: pip install boto3")
        if not _BUCKET_NAME.match(bucket):
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
        self.url = _format_url(bucket, root, options)
        self.capabilities = Capabilities(empty_prefixes=False, default_concurrency=options.max_concurrency,
                                         max_object_size=MAX_OBJECT_SIZE, listing_md5=options.listing_md5,
                                         incomplete_uploads=True)
        session = _make_session(options)
        self._client = _make_client(session, options)
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
        except _SDK_ERRORS as exc:
            raise translate_error(exc, key) from exc

    # -- reading ---------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        response = self._call(self._client.head_object, key, Key=self._object_key(key))
        return ObjectInfo(key, int(response["ContentLength"]), etag=_etag(response.get("ETag")))

    def open_read(self, key: str) -> BinaryIO:
        response = self._call(self._client.get_object, key, Key=self._object_key(key))
        return _ObjectReader(response["Body"], key, response.get("ContentLength"))  # type: ignore[return-value]

    # -- writing ---------------------------------------------------------------

    def put(self, key: str, data: BinaryIO, *, size: int | None = None, before_commit: BeforeCommit | None = None) -> ObjectInfo:
        object_key = self._object_key(key)
        threshold = self.options.multipart_threshold
        if size is not None and size > threshold:
            return self._put_multipart(key, object_key, data, b"", size, before_commit)
        head = _read_up_to(data, threshold + 1)
        if len(head) > threshold:
            return self._put_multipart(key, object_key, data, head, size, before_commit)
        if before_commit is not None:
            before_commit()
        crt = self._crt
        if crt is not None:
            try:
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
        source = _Prepended(head, data)
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
                    body = _read_up_to(source, chunk)
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
            for future in futures:
                future.cancel()
            for future in futures:
                if not future.cancelled():
                    future.exception()  # wait: abort only once no part upload is running
            self._abort(key, object_key, upload_id)
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

    def _abort(self, key: str, object_key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
        except _SDK_ERRORS as exc:
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
                if not _is_folder_marker(name, int(item["Size"])):
                    yield Entry(name, False)

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        full = self._object_prefix(prefix)
        for page in self._pages("list_objects_v2", full, Prefix=full):
            for item in page.get("Contents", ()):
                key, size = self._relative(item["Key"]), int(item["Size"])
                if not _is_folder_marker(key, size):
                    yield ObjectInfo(key, size, _md5_of_etag(item.get("ETag")), _etag(item.get("ETag")))

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
            except _SDK_ERRORS as exc:
                raise translate_error(exc, where) from exc
            yield page

    # -- leftovers (the optional Leftovers ability) ------------------------------------

    def iter_incomplete_uploads(self, prefix: str) -> Iterator[IncompleteUpload]:
        """Multipart uploads under ``prefix`` never completed nor aborted, with the bytes their parts hold."""
        full = self._object_prefix(prefix)
        for page in self._pages("list_multipart_uploads", full, Prefix=full):
            for upload in page.get("Uploads", ()):
                size = self._parts_size(upload["Key"], upload["UploadId"])
                if size is not None:
                    yield IncompleteUpload(self._relative(upload["Key"]), upload["UploadId"], upload["Initiated"], size)

    def _parts_size(self, object_key: str, upload_id: str) -> int | None:
        """Bytes the upload's parts hold; None when it ended meanwhile."""
        size = 0
        try:
            for page in self._client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=object_key, UploadId=upload_id):
                size += sum(int(part["Size"]) for part in page.get("Parts", ()))
        except _SDK_ERRORS as exc:
            if _error_code(exc) == "NoSuchUpload":
                return None
            raise translate_error(exc, self._relative(object_key)) from exc
        return size

    def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        """Abort an upload ``iter_incomplete_uploads`` listed (its key as listed, even malformed)."""
        object_key = f"{self.root}/{upload.key}" if self.root else upload.key
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload.upload_id)
        except _SDK_ERRORS as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise translate_error(exc, upload.key) from exc

    def close(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        if self._crt is not None:
            self._crt.close()
        self._client.close()


# -- helpers ----------------------------------------------------------------------


def _make_session(options: S3Options):
    try:
        return boto3.session.Session(profile_name=options.profile or None)
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigurationError(f"option profile: {exc}") from None


def _make_client(session, options: S3Options):
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},  # max_attempts would count retries only
        max_pool_connections=2 * options.max_concurrency,
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": options.addressing_style, "payload_signing_enabled": options.sign_payload},
    )
    verify: bool | str | None = None
    if not options.verify:
        verify = False
    elif options.ca_bundle:
        verify = options.ca_bundle
    try:
        return session.client(
            "s3",
            endpoint_url=options.endpoint_url or None,
            region_name=options.region or None,
            verify=verify,
            config=config,
        )
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        raise ConfigurationError(f"cannot set up the S3 client: {exc}") from None


def _format_url(bucket: str, root: str, options: S3Options) -> str:
    """The backend's URL: bucket, root directory and the options that differ from their defaults."""
    changed = {
        field.name: getattr(options, field.name)
        for field in dataclasses.fields(options)
        if getattr(options, field.name) != field.default
    }
    query = urlencode({name: str(value).lower() if isinstance(value, bool) else value for name, value in changed.items()}, safe=":/")
    return f"s3://{bucket}/{root}" + (f"?{query}" if query else "")


def _md5_of_etag(etag: str | None) -> str | None:
    """The ETag as an MD5 hint: S3's ETag of an object stored by one PutObject without SSE-KMS or
    SSE-C is its MD5; other ETags (multipart ``...-N``) are left out, the rest are hints only."""
    value = (etag or "").strip('"').lower()
    return value if _HEX32.fullmatch(value) else None


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def _read_up_to(stream: BinaryIO, limit: int) -> bytes:
    """Read until ``limit`` bytes or EOF; errors of the stream propagate unchanged."""
    pieces: list[bytes] = []
    remaining = limit
    while remaining > 0:
        piece = stream.read(min(remaining, _READ_BLOCK))
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return b"".join(pieces)


def _is_folder_marker(key: str, size: int) -> bool:
    """A zero-byte object named like a directory (``a/b/``, or the listed prefix itself: ``""``), as
    S3 consoles create for "folders": no object of a registry's, skipped like a directory's own entry."""
    if size != 0:
        return False
    if key == "":
        return True
    try:
        return key.endswith("/") and bool(check_key(key[:-1]))
    except InvalidKey:
        return False


def _error_code(exc: BaseException) -> str:
    if boto3 is not None and isinstance(exc, botocore.exceptions.ClientError):
        return str((exc.response.get("Error", {}) or {}).get("Code", "") or "")
    return ""


def _raise_first_failure(futures: list[Future]) -> None:
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
    raise BackendError("a part upload was cancelled")


class _Prepended:
    """``head`` followed by the rest of ``stream``, read through ``read(n)``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def read(self, size: int) -> bytes:
        if self._head:
            piece, self._head = bytes(self._head[:size]), self._head[size:]
            return piece
        return self._stream.read(size)


class _ObjectReader(io.RawIOBase):
    """An object's bytes as a stream: the response body, with errors translated.

    ``read(n)`` returns ``n`` bytes unless the object ends first. An answer
    that ends before its announced ``length`` (a truncated response; botocore
    notices only at its next read, and not in every case) raises
    TransientError: a short read is a failed read, never the object's end.
    """

    def __init__(self, body, key: str, length: int | None) -> None:
        self._body = body
        self._key = key
        self._length = length
        self._received = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        pieces: list[bytes] = []
        remaining = size
        while remaining > 0:
            piece = self._read_once(remaining)
            if not piece:
                break
            pieces.append(piece)
            remaining -= len(piece)
        return b"".join(pieces)

    def readall(self) -> bytes:
        pieces: list[bytes] = []
        while piece := self._read_once(_READ_BLOCK):
            pieces.append(piece)
        return b"".join(pieces)

    def _read_once(self, size: int) -> bytes:
        try:
            piece = self._body.read(size)
        except _SDK_ERRORS as exc:
            raise translate_error(exc, self._key) from exc
        self._received += len(piece)
        if not piece and size > 0 and self._length is not None and self._received < self._length:
            raise TransientError(
                f"{self._key}: the answer ended after {self._received} of its {self._length} bytes (cut short in transit; read again)",
                key=self._key,
            )
        return piece

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
