"""Single-request uploads through the AWS Common Runtime's S3 client (awscrt, installed by ``boto3[crt]``).

Why: boto3 spends about 1.2 ms of Python on every request, and a registry is
mostly small objects -- every layer, revision and tag link is a 71-byte
object. In a full sync to RGW that was half of syncagent's CPU. The CRT does
the same PutObject in C: SigV4 with an unsigned payload (as the boto3 path
sends it), pooled keep-alive connections, retries with exponential backoff
and jitter on throttling, 5xx and lost connections, and no ``Expect:
100-continue`` round trip.

Only PutObject of a body already in memory goes this way, after the caller's
``before_commit`` has run, so the atomicity argument is unchanged: one PUT,
visible whole when it succeeds. Reads, listings, stats, deletes and multipart
uploads stay on boto3.

What is taken from boto3 so that the two paths cannot disagree:

* credentials: the boto3 session's own (refreshable) credentials, read through
  s3transfer's ``BotocoreCRTCredentialsWrapper`` whenever the CRT signs;
* where the object lives: the client resolves endpoint, region, addressing
  style and bucket placement for a probe key (``generate_presigned_url``, no
  request is sent); the CRT request uses the same scheme, host and path;
* TLS: ``?verify=false`` turns peer verification off, ``?ca_bundle=`` (or the
  profile's ``ca_bundle`` / ``AWS_CA_BUNDLE``) replaces the trust store;
  otherwise the CRT uses the system's trust store.

:func:`make_crt_uploads` returns None, with the reason, when the CRT must not
be used: awscrt missing, ``?put_client=boto3``, ``max_attempts=1`` (the CRT
always retries), a proxy configured in the environment (the CRT would not use
it), or no credentials found.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import re
import urllib.request
import zlib
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import BackendError, PermissionDenied, TransientError
from .codes import response_error

try:
    import awscrt.exceptions
    from awscrt.http import HttpHeaders, HttpRequest
    from awscrt.io import ClientBootstrap, ClientTlsContext, DefaultHostResolver, EventLoopGroup, TlsContextOptions
    from awscrt.s3 import S3Client, S3RequestTlsMode, S3RequestType, S3ResponseError, S3RetryConfig
    from s3transfer.crt import BotocoreCRTCredentialsWrapper
except ImportError as exc:  # awscrt is optional for the backend: boto3 alone works
    MISSING = f"awscrt is not installed or too old ({exc}); pip install 'boto3[crt]'"
else:
    MISSING = ""

PROBE_KEY = "syncagent-url-probe"
_SINGLE_PUT_LIMIT = 5 * 1024 * 1024 * 1024  # never let the CRT split one of our bodies into parts
_CANCEL_WAIT = 10.0
# S3's answers when a request went to the wrong region (AWS buckets outside the client's region).
# boto3 follows them (it finds the bucket's region and signs again): see HandBack.
_WRONG_REGION_CODES = {"PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
_XML_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


class HandBack(BackendError):
    """The CRT cannot do this backend's puts; boto3 should take over (and keep them).

    Two cases: S3 redirected the request to another region or endpoint (boto3
    follows redirects), or the TLS handshake failed. The CRT's TLS library
    (s2n) waits 10-30 s after a failed handshake before it reports it, and it
    checks certificates against the system's trust store where boto3 uses
    certifi's, so boto3 reports the certificate problem, or gets through.
    """


class CrtUploads:
    """PutObject of in-memory bodies through one CRT S3 client; thread-safe."""

    def __init__(self, *, region: str, scheme: str, host: str, path_prefix: str, credentials: Any,
                 verify: bool | str, max_attempts: int, max_connections: int, timeout: float) -> None:
        event_loops = EventLoopGroup()
        bootstrap = ClientBootstrap(event_loops, DefaultHostResolver(event_loops))
        tls_options = None
        if scheme == "https" and verify is not True:
            context = TlsContextOptions()
            if verify is False:
                context.verify_peer = False
            else:
                context.override_default_trust_store_from_path(ca_filepath=verify)
            tls_options = ClientTlsContext(context).new_connection_options()
        self._client = S3Client(
            bootstrap=bootstrap,
            region=region,
            credential_provider=BotocoreCRTCredentialsWrapper(credentials).to_crt_credentials_provider(),
            tls_mode=S3RequestTlsMode.ENABLED if scheme == "https" else S3RequestTlsMode.DISABLED,
            tls_connection_options=tls_options,
            max_active_connections_override=max_connections,
            retry_config=S3RetryConfig(max_retries=max_attempts - 1),
        )
        self._host = host
        self._path_prefix = path_prefix
        self._timeout = timeout

    def put(self, key: str, object_key: str, body: bytes) -> None:
        """Store ``body`` at ``object_key`` in one PutObject; typed errors name ``key``."""
        headers = HttpHeaders([("Host", self._host), ("Content-Length", str(len(body))), ("x-amz-checksum-crc32", crc32_header(body))])
        request = HttpRequest("PUT", self._path_prefix + quote(object_key, safe="/~"), headers, io.BytesIO(body))
        try:
            upload = self._client.make_request(type=S3RequestType.PUT_OBJECT, request=request,
                                               multipart_upload_threshold=_SINGLE_PUT_LIMIT)
        except awscrt.exceptions.AwsCrtError as exc:
            raise translate_crt_error(exc, key) from exc
        try:
            upload.finished_future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            upload.cancel()
            concurrent.futures.wait([upload.finished_future], timeout=_CANCEL_WAIT)
            raise TransientError(f"{key}: PutObject did not finish within {self._timeout:.0f}s", key=key) from None
        except awscrt.exceptions.AwsCrtError as exc:
            raise translate_crt_error(exc, key) from exc

    def close(self) -> None:
        self._client = None  # the CRT shuts the client down once the last reference is gone


def crc32_header(body: bytes) -> str:
    """The ``x-amz-checksum-crc32`` value S3 checks the body against: base64 of the big-endian CRC32."""
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode("ascii")


def translate_crt_error(exc: BaseException, key: str | None) -> BackendError:
    """The typed error for a CRT failure: an S3 error response or a client-side CRT error."""
    where = key if key is not None else "S3"
    if isinstance(exc, S3ResponseError):
        body = exc.body or b""
        code = _first(_XML_CODE, body)
        status = int(exc.status_code or 0)
        if code in _WRONG_REGION_CODES or status in (301, 307):
            return HandBack(f"{where}: PutObject was redirected: {code or f'HTTP {status}'}", key=key)
        return response_error(exc.operation_name or "PutObject", code, status, _first(_XML_MESSAGE, body), key)
    if isinstance(exc, awscrt.exceptions.AwsCrtError):
        name = exc.name or ""
        message = f"{where}: PutObject failed: {name}: {exc.message}"
        if "TLS" in name:
            return HandBack(f"{message} (check the endpoint's certificate, ?ca_bundle= or ?verify=)", key=key)
        if name.startswith("AWS_AUTH") or "CREDENTIALS" in name:
            return PermissionDenied(f"{message} (no usable AWS credentials?)", key=key)
        if name.startswith(("AWS_IO_", "AWS_ERROR_HTTP")) or "TIMEOUT" in name or "SLOW_DOWN" in name:
            return TransientError(message, key=key)
        return BackendError(message, key=key)
    return BackendError(f"{where}: {exc}", key=key)


def make_crt_uploads(session, client, bucket: str, options) -> tuple[CrtUploads | None, str]:
    """The CRT upload path for this client and bucket, or (None, why it is not used)."""
    if options.put_client == "boto3":
        return None, "put_client=boto3"
    if MISSING:
        return None, MISSING
    if options.max_attempts < 2:
        return None, "max_attempts=1: the CRT always retries, so single attempts go through boto3"
    proxies = {scheme for scheme in urllib.request.getproxies() if scheme in ("http", "https", "all")}
    if proxies:
        return None, f"a proxy is configured ({', '.join(sorted(proxies))}_proxy), which only boto3 follows"
    credentials = session.get_credentials()
    if credentials is None:
        return None, "boto3 found no credentials"
    try:
        probe = urlsplit(client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": PROBE_KEY}, ExpiresIn=60))
    except Exception as exc:  # botocore's own errors, e.g. an unresolvable endpoint: boto3 will report them per request
        return None, f"cannot resolve the object URL: {exc}"
    if not probe.path.endswith("/" + PROBE_KEY) or probe.scheme not in ("http", "https"):
        return None, f"cannot place objects from the endpoint URL {probe.scheme}://{probe.netloc}{probe.path}"
    verify: bool | str = True
    if not options.verify:
        verify = False
    elif options.ca_bundle:
        verify = options.ca_bundle
    else:
        verify = session._session.get_config_variable("ca_bundle") or True  # AWS_CA_BUNDLE or the profile's
    uploads = CrtUploads(
        region=client.meta.region_name,
        scheme=probe.scheme,
        host=probe.netloc,
        path_prefix=probe.path[: -len(PROBE_KEY)],
        credentials=credentials,
        verify=verify,
        max_attempts=options.max_attempts,
        max_connections=2 * options.max_concurrency,
        timeout=float(options.max_attempts * (client.meta.config.connect_timeout + client.meta.config.read_timeout)),
    )
    return uploads, ""


def _first(pattern: re.Pattern[bytes], body: bytes) -> str:
    found = pattern.search(body)
    return found.group(1).decode("utf-8", "replace") if found else ""
