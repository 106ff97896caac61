"""The S3 backend's CRT upload path: when it is chosen, its error translation, and that it is really used."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
from awscrt.exceptions import AwsCrtError
from awscrt.s3 import S3ResponseError

from backends import BackendError, ConfigurationError, NotFound, PermissionDenied, TransientError, open_backend
from backends.s3.crt import HandBack, crc32_header, translate_crt_error

ENDPOINT = "endpoint_url=http://127.0.0.1:7480&addressing_style=path"


@pytest.fixture
def fake_credentials(monkeypatch, tmp_path):
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")


def response_error(status: int, code: str, message: str = "") -> S3ResponseError:
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    return S3ResponseError(code=14343, name="AWS_ERROR_S3_INVALID_RESPONSE_STATUS", message="Invalid response status from request",
                           status_code=status, headers=[], body=body, operation_name="PutObject")


@pytest.mark.parametrize(
    "status, code, expected",
    [
        (403, "AccessDenied", PermissionDenied),
        (403, "SignatureDoesNotMatch", PermissionDenied),
        (404, "NoSuchBucket", NotFound),
        (503, "SlowDown", TransientError),
        (500, "InternalError", TransientError),
        (400, "InvalidArgument", BackendError),
    ],
)
def test_error_responses_are_classified_like_boto3s(status, code, expected):
    error = translate_crt_error(response_error(status, code, "the detail"), "a/b")
    assert type(error) is expected
    assert error.key == "a/b"
    assert str(error) == f"a/b: PutObject failed: {code}: the detail"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("AWS_IO_SOCKET_CONNECTION_REFUSED", TransientError),
        ("AWS_ERROR_HTTP_CONNECTION_CLOSED", TransientError),
        ("AWS_IO_DNS_QUERY_FAILED", TransientError),
        ("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", HandBack),
        ("AWS_AUTH_CREDENTIALS_PROVIDER_DELEGATE_FAILURE", PermissionDenied),
        ("AWS_ERROR_S3_INVALID_CONTENT_LENGTH_HEADER", BackendError),
    ],
)
def test_client_side_errors(name, expected):
    error = translate_crt_error(AwsCrtError(1, name, "what happened"), "k")
    assert type(error) is expected
    assert name in str(error)
    if "TLS" in name:
        assert "ca_bundle" in str(error)


@pytest.mark.parametrize("body", [b"", b"sha256:" + b"0" * 64, bytes(range(256)) * 4099])
def test_the_checksum_header_is_the_one_botocore_sends(body):
    from botocore.httpchecksum import Crc32Checksum

    expected = Crc32Checksum()
    expected.update(body)
    assert crc32_header(body) == expected.b64digest()


def test_auto_uses_the_crt_when_it_can(fake_credentials):
    backend = open_backend(f"s3://bucket/root?{ENDPOINT}")
    assert backend._crt is not None
    backend.close()


@pytest.mark.parametrize(
    "query, environment",
    [
        ("put_client=boto3", {}),
        ("max_attempts=1", {}),
        ("", {"HTTPS_PROXY": "http://proxy.example:3128"}),
        ("", {"http_proxy": "http://proxy.example:3128"}),
    ],
)
def test_auto_falls_back_to_boto3(fake_credentials, monkeypatch, query, environment):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    backend = open_backend(f"s3://bucket/root?{ENDPOINT}&{query}")
    assert backend._crt is None
    backend.close()


def test_auto_without_credentials_falls_back_to_boto3(fake_credentials, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = open_backend(f"s3://bucket/root?{ENDPOINT}")
    assert backend._crt is None
    with pytest.raises(PermissionDenied, match="no usable AWS credentials"):
        backend.put_bytes("k", b"1")
    backend.close()


def test_crt_demanded_but_impossible_is_a_configuration_error(fake_credentials, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    with pytest.raises(ConfigurationError, match="put_client=crt: a proxy is configured"):
        open_backend(f"s3://bucket/root?{ENDPOINT}&put_client=crt")
    with pytest.raises(ConfigurationError, match="put_client"):
        open_backend(f"s3://bucket/root?{ENDPOINT}&put_client=curl")


def test_unreachable_endpoint_is_transient(fake_credentials):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = unused.getsockname()[1]
        backend = open_backend(f"s3://bucket/root?endpoint_url=http://127.0.0.1:{port}&addressing_style=path&put_client=crt&max_attempts=2")
        with pytest.raises(TransientError) as raised:
            backend.put_bytes("x", b"1")
        assert "very-secret" not in str(raised.value)
        backend.close()


# -- against the session's RGW -------------------------------------------------------


@pytest.mark.ceph
@pytest.mark.parametrize("put_client, through_boto3", [("crt", []), ("boto3", ["PutObject"])])
def test_small_puts_take_the_chosen_path(s3_credentials, put_client, through_boto3):
    from tests.support.fixtures_backend_s3 import backend_factory

    factory = backend_factory(s3_credentials, put_client=put_client)
    made = next(factory)()
    backend = made.backend
    calls: list[str] = []
    backend._client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    backend.put_bytes("docker/registry/v2/repositories/a/b_c.d-e/_manifests/tags/v1.0/current/link", b"sha256:" + b"0" * 64)
    assert calls == through_boto3
    assert backend.read_bytes("docker/registry/v2/repositories/a/b_c.d-e/_manifests/tags/v1.0/current/link") == b"sha256:" + b"0" * 64
    backend.close()
    next(factory, None)


class _RedirectingCrt(http.server.BaseHTTPRequestHandler):
    """Answers the CRT's PUTs as S3 does for a bucket in another region; accepts boto3's."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        client = "crt" if "CRTS3NativeClient" in self.headers.get("User-Agent", "") else "boto3"
        self.seen.append(client)
        if client == "crt":
            body = b"<?xml version='1.0'?><Error><Code>PermanentRedirect</Code><Message>use eu-west-1</Message></Error>"
            self.send_response(301)
        else:
            body = b""
            self.send_response(200)
            self.send_header("ETag", '"0"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_redirect_hands_the_put_to_boto3_and_leaves_it_there(fake_credentials):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RedirectingCrt)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = open_backend(f"s3://bucket/root?endpoint_url=http://127.0.0.1:{server.server_address[1]}&addressing_style=path")
        assert backend._crt is not None
        backend.put_bytes("a", b"1")
        backend.put_bytes("b", b"2")
        assert _RedirectingCrt.seen == ["crt", "boto3", "boto3"]
        assert backend._crt is None
        backend.close()
    finally:
        server.shutdown()
        server.server_close()


# -- TLS: the same verification options on both upload paths ------------------------------


def _certificates(directory):
    """A CA and a server certificate it signs for 127.0.0.1, as PEM files: (ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject, issuer, public_key, signing_key, *, ca):
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncagent test CA")])
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    server = build(server_name, ca_name, server_key.public_key(), ca_key, ca=False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


class _AcceptingS3(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append("crt" if "CRTS3NativeClient" in self.headers.get("User-Agent", "") else "boto3")
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def https_s3(tmp_path):
    import ssl

    ca, cert, key = _certificates(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AcceptingS3)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _AcceptingS3.seen = []
    yield f"https://127.0.0.1:{server.server_address[1]}", ca
    server.shutdown()
    server.server_close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # verify=false, on purpose
@pytest.mark.parametrize("put_client", ["crt", "boto3"])
def test_tls_verification_options_apply_to_both_paths(fake_credentials, https_s3, put_client):
    endpoint, ca = https_s3
    url = f"s3://bucket/root?endpoint_url={endpoint}&addressing_style=path&put_client={put_client}"
    with_ca = open_backend(f"{url}&ca_bundle={ca}")
    with_ca.put_bytes("a", b"1")
    with_ca.close()
    unverified = open_backend(f"{url}&verify=false")
    unverified.put_bytes("c", b"3")
    unverified.close()
    assert _AcceptingS3.seen == [put_client, put_client]


def test_an_untrusted_certificate_is_a_clear_error(fake_credentials, https_s3):
    endpoint, _ = https_s3
    backend = open_backend(f"s3://bucket/root?endpoint_url={endpoint}&addressing_style=path&put_client=boto3")
    with pytest.raises(BackendError) as raised:
        backend.put_bytes("b", b"2")
    assert "ca_bundle" in str(raised.value)
    backend.close()
    assert _AcceptingS3.seen == []


def test_a_tls_failure_of_the_crt_hands_the_puts_to_boto3(fake_credentials, https_s3, monkeypatch):
    """The CRT's TLS library reports a failed handshake only after 10-30 s, so the failure itself
    is simulated here; boto3 then meets the same untrusted certificate and says so."""
    endpoint, _ = https_s3
    backend = open_backend(f"s3://bucket/root?endpoint_url={endpoint}&addressing_style=path&put_client=crt")

    def failing_handshake(key, object_key, body):
        raise translate_crt_error(AwsCrtError(1029, "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", "TLS (SSL) negotiation failed"), key)

    monkeypatch.setattr(backend._crt, "put", failing_handshake)
    with pytest.raises(BackendError) as raised:
        backend.put_bytes("b", b"2")
    assert "ca_bundle" in str(raised.value) and "AWS_IO_TLS" not in str(raised.value)
    assert backend._crt is None
    backend.close()
