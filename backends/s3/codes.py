"""S3 error responses, classified once for both of the S3 backend's HTTP clients (boto3 and the CRT).

An S3 error is an HTTP status and, usually, an XML body naming a code
(``AccessDenied``, ``SlowDown``, ...). :func:`response_error` turns the pair
into the backend's typed errors; the message names the key, the operation and
the code, never credentials.
"""

from __future__ import annotations

from ..errors import BackendError, NotFound, PermissionDenied, TransientError

NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "NotFound", "404"}
DENIED_CODES = {
    "AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired", "RequestTimeTooSkewed",
}
TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "TooManyRequests", "TooManyRequestsException", "RequestLimitExceeded", "ProvisionedThroughputExceededException",
    "BandwidthLimitExceeded", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeoutException",
    "PriorRequestNotComplete", "EC2ThrottledException", "500", "502", "503", "504",
    "NoSuchUpload",  # our multipart upload vanished (a lifecycle rule, a concurrent abort): the put can start over
}


def response_error(operation: str, code: str, status: int, detail: str, key: str | None) -> BackendError:
    """The typed error for an S3 error response.

    Throttling, 5xx and 429 -> TransientError; NoSuchKey/NoSuchBucket/404 ->
    NotFound; AccessDenied/403 and rejected credentials -> PermissionDenied;
    anything else -> BackendError.
    """
    where = key if key is not None else "S3"
    message = f"{where}: {operation} failed: {code or f'HTTP {status}'}" + (f": {detail}" if detail and detail != code else "")
    if code in TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientError(message, key=key)
    if code in NOT_FOUND_CODES or status == 404:
        return NotFound(message, key=key)
    if code in DENIED_CODES or status == 403:
        return PermissionDenied(message, key=key)
    return BackendError(message, key=key)
