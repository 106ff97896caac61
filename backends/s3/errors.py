"""Translating boto3's, botocore's and urllib3's errors into the typed errors of ``backends.errors``,
in one place (the CRT's go through ``crt.translate_crt_error``, which classifies with the same table)."""

from __future__ import annotations

from ..errors import BackendError, PermissionDenied, TransientError
from .codes import response_error

try:
    import boto3
    import botocore.config
    import botocore.exceptions
    import urllib3.exceptions
except ImportError:  # pragma: no cover - boto3 is a dependency of the project
    boto3 = None
    SDK_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
else:
    # urllib3's ProtocolError: botocore lets it through when an error answer's body (a 404's XML)
    # is cut short or reset, since it reads that body outside its own error handling.
    SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, urllib3.exceptions.ProtocolError,
                  TimeoutError, ConnectionError)


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


def error_code(exc: BaseException) -> str:
    if boto3 is not None and isinstance(exc, botocore.exceptions.ClientError):
        return str((exc.response.get("Error", {}) or {}).get("Code", "") or "")
    return ""
