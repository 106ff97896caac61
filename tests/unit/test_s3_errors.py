"""The S3 backend's error translation, on constructed botocore errors and against real RGW."""

from __future__ import annotations

import io
import json
import os
import socket

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)

from backends import BackendError, ConfigurationError, NotFound, PermissionDenied, TransientError, open_backend
from backends.s3 import S3Options, translate_error
from tests.support.fixtures_backend_s3 import ROOT, rgw_admin_client, rgw_url


def client_error(code: str, status: int, operation: str = "GetObject", message: str = "") -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


@pytest.mark.parametrize(
    "code, status, expected",
    [
        ("NoSuchKey", 404, NotFound),
        ("NoSuchBucket", 404, NotFound),
        ("404", 404, NotFound),  # HEAD has no body: the code is the status
        ("", 404, NotFound),
        ("AccessDenied", 403, PermissionDenied),
        ("403", 403, PermissionDenied),
        ("InvalidAccessKeyId", 403, PermissionDenied),
        ("SignatureDoesNotMatch", 403, PermissionDenied),
        ("SlowDown", 503, TransientError),
        ("503", 503, TransientError),
        ("ServiceUnavailable", 503, TransientError),
        ("InternalError", 500, TransientError),
        ("RequestTimeout", 400, TransientError),
        ("Throttling", 400, TransientError),
        ("TooManyRequests", 429, TransientError),
        ("SomethingNew", 502, TransientError),
        ("NoSuchUpload", 404, TransientError),
        ("InvalidArgument", 400, BackendError),
        ("EntityTooSmall", 400, BackendError),
    ],
)
def test_client_errors(code, status, expected):
    error = translate_error(client_error(code, status), "some/key")
    assert type(error) is expected
    assert error.key == "some/key"
    assert "some/key" in str(error)


@pytest.mark.parametrize(
    "exc, expected",
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), TransientError),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), TransientError),
        (ConnectionClosedError(endpoint_url="http://127.0.0.1:1"), TransientError),
        (ResponseStreamingError(error="connection reset"), TransientError),
        (IncompleteReadError(actual_bytes=1, expected_bytes=2), TransientError),
        (ConnectionResetError("reset by peer"), TransientError),
        (NoCredentialsError(), PermissionDenied),
        (SSLError(endpoint_url="https://x", error="certificate verify failed"), BackendError),
        (ParamValidationError(report="bad"), BackendError),
    ],
)
def test_botocore_errors(exc, expected):
    assert type(translate_error(exc, "k")) is expected


def test_message_of_a_client_error_names_operation_and_code():
    error = translate_error(client_error("AccessDenied", 403, "PutObject", "AccessDenied"), "a/b")
    assert str(error) == "a/b: PutObject failed: AccessDenied"
    error = translate_error(client_error("SlowDown", 503, "UploadPart", "Please reduce your request rate."), "a/b")
    assert str(error) == "a/b: UploadPart failed: SlowDown: Please reduce your request rate."


@pytest.mark.parametrize(
    "url, problem",
    [
        ("s3://AKIA:secret@bucket/root", "credentials"),
        ("s3:///root", "bucket"),
        ("s3://bucket/a/../b", "root directory"),
        ("s3://bucket/?addressing_style=dns", "addressing_style"),
        ("s3://bucket/?multipart_chunksize=1024", "multipart_chunksize"),
        ("s3://bucket/?endpoint_url=127.0.0.1:9000", "endpoint_url"),
        ("s3://bucket/?secret_key=x", "does not take"),
    ],
)
def test_bad_urls_are_configuration_errors(url, problem):
    with pytest.raises(ConfigurationError) as raised:
        open_backend(url)
    assert problem in str(raised.value)
    assert "secret" not in str(raised.value).replace("secret_key", "")


def test_url_keeps_options_and_no_secrets(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    backend = open_backend("s3://bucket/some/root/?endpoint_url=http://127.0.0.1:7480&addressing_style=path&verify=false")
    assert backend.url == "s3://bucket/some/root?endpoint_url=http://127.0.0.1:7480&addressing_style=path&verify=false"
    assert backend.root == "some/root"
    assert "very-secret" not in repr(backend) and "AKIDEXAMPLE" not in repr(backend)
    assert backend.capabilities.default_concurrency == S3Options().max_concurrency
    assert backend.capabilities.empty_prefixes is False
    backend.close()


# -- against the session's RGW -------------------------------------------------------


@pytest.mark.ceph
def test_wrong_credentials_are_permission_denied(s3_backend_factory, monkeypatch):
    made = s3_backend_factory()
    made.backend.put_bytes("x", b"1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    backend = open_backend(made.backend.url)
    for attempt in (lambda: backend.stat("x"), lambda: backend.read_bytes("x"), lambda: list(backend.iter_objects("")),
                    lambda: backend.put_bytes("y", b"2")):
        with pytest.raises(PermissionDenied):
            attempt()
    backend.close()


@pytest.mark.ceph
def test_bucket_policy_denial_is_permission_denied(s3_backend_factory, s3_credentials):
    made = s3_backend_factory()
    backend = made.backend
    backend.put_bytes("kept", b"1")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject", "s3:DeleteObject"],
                       "Resource": [f"arn:aws:s3:::{backend.bucket}/*"]}],
    }
    admin = rgw_admin_client(s3_credentials)
    admin.put_bucket_policy(Bucket=backend.bucket, Policy=json.dumps(policy))
    try:
        with pytest.raises(PermissionDenied):
            backend.put_bytes("new", b"2")
        with pytest.raises(PermissionDenied):
            backend.put("big", io.BytesIO(os.urandom(6 * 1024 * 1024)))
        with pytest.raises(PermissionDenied):
            backend.delete("kept")
        assert backend.read_bytes("kept") == b"1"
    finally:
        admin.delete_bucket_policy(Bucket=backend.bucket)
        admin.close()
    assert made.leftovers() == []


@pytest.mark.ceph
def test_missing_bucket_is_not_found(s3_credentials):
    backend = open_backend(rgw_url(s3_credentials, "syncagent-no-such-bucket"))
    with pytest.raises(NotFound):
        list(backend.iter_children(""))
    with pytest.raises(NotFound):
        list(backend.iter_objects(""))
    with pytest.raises(NotFound):
        backend.stat("x")
    backend.close()


def test_unreachable_endpoint_is_transient(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = unused.getsockname()[1]
        backend = open_backend(f"s3://bucket/root?endpoint_url=http://127.0.0.1:{port}&max_attempts=1&addressing_style=path")
        for attempt in (lambda: backend.stat("x"), lambda: list(backend.iter_children("")), lambda: backend.put_bytes("x", b"1")):
            with pytest.raises(TransientError) as raised:
                attempt()
            assert "very-secret" not in str(raised.value)
        backend.close()


# -- multipart: ordering and clean-up ----------------------------------------------------


@pytest.mark.ceph
def test_before_commit_runs_after_the_last_part_and_before_completion(s3_backend_factory):
    made = s3_backend_factory()
    backend = made.backend
    calls: list[str] = []
    backend._client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    data = os.urandom(11 * 1024 * 1024)
    backend.put("obj", io.BytesIO(data), before_commit=lambda: calls.append("before_commit"))
    assert calls == ["CreateMultipartUpload", "UploadPart", "UploadPart", "UploadPart", "before_commit", "CompleteMultipartUpload"]
    assert backend.read_bytes("obj") == data


@pytest.mark.ceph
def test_failed_part_aborts_the_upload(s3_backend_factory):
    made = s3_backend_factory()
    backend = made.backend

    def fail_second_part(params, **_):
        if params.get("PartNumber") == 2:
            raise client_error("SlowDown", 503, "UploadPart")

    backend._client.meta.events.register("provide-client-params.s3.UploadPart", fail_second_part)
    with pytest.raises(TransientError):
        backend.put("obj", io.BytesIO(os.urandom(16 * 1024 * 1024)), size=16 * 1024 * 1024)
    assert not backend.exists("obj")
    assert made.leftovers() == []
    assert list(backend.iter_objects("")) == []
    assert backend.url.startswith(f"s3://{backend.bucket}/{ROOT}?")
