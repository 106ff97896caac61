"""registry_check: the libtrust key id, token claims, and the checker against a tiny fake registry.

The real proof (a docker-registry with ``auth: token`` accepting the minted
tokens) is tests/e2e/test_registry_check.py; here are the edge cases a real
registry does not produce on demand: a body that does not match its digest
header, a 401 with no minter, a blob redirect, pagination, a dead port.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from syncagent.check.registry import (
    MANIFEST_ACCEPT,
    RegistryAuthError,
    RegistryChecker,
    RegistryUnreachable,
    TokenConfigurationError,
    TokenMinter,
    check_published_tags,
    checker_from_options,
    libtrust_key_id,
    normalize_base_url,
)
from syncagent.sync.report import Report
from tests.support.token_registry import make_signer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


# --------------------------------------------------------------------------- key id


def _base32_by_hand(data: bytes) -> str:
    """RFC 4648 base32 without padding, bit by bit (independent of base64.b32encode)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(alphabet[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


def _expected_kid(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = _base32_by_hand(hashlib.sha256(der).digest()[:30])
    assert len(text) == 48
    return ":".join(text[i * 4 : i * 4 + 4] for i in range(12))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_key_id_is_libtrust_form(tmp_path, kind):
    signer = make_signer(tmp_path, "signer", kind=kind)
    key = serialization.load_pem_private_key(signer.key.read_bytes(), None)
    minter = TokenMinter("issuer", "service", signer.key, signer.cert)
    expected = _expected_kid(key.public_key())
    assert minter.key_id == expected == libtrust_key_id(key.public_key())
    assert re.fullmatch(r"[A-Z2-7]{4}(:[A-Z2-7]{4}){11}", minter.key_id)


def test_key_id_of_a_fixed_key():
    """A fixed P-256 public key (private scalar 1: the curve's generator G) and its key id, computed with
    ``openssl ec -pubout -outform DER | sha256sum | cut -c1-60 | xxd -r -p | base32`` grouped by four."""
    public = ec.derive_private_key(1, ec.SECP256R1()).public_key()
    assert libtrust_key_id(public) == _expected_kid(public) == "LTJF:F6YM:5CJS:INX2:7DGN:CBAJ:QG4J:5ZFN:NOP6:TYVC:W7TR:VLFS"
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert der.hex().startswith("3059301306072a8648ce3d020106082a8648ce3d030107034200046b17d1f2")  # SPKI of G


# --------------------------------------------------------------------------- claims


@pytest.mark.parametrize("kind,algorithm", [("rsa", "RS256"), ("ec", "ES256")])
def test_token_claims_and_header(tmp_path, kind, algorithm):
    signer = make_signer(tmp_path, "signer", kind=kind)
    minter = TokenMinter("syncagent-test", "registry.test", signer.key, signer.cert, ttl=90)
    token = minter.token("group/app", now=1_000_000)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == algorithm and header["kid"] == minter.key_id and "x5c" not in header
    public = serialization.load_pem_private_key(signer.key.read_bytes(), None).public_key()
    claims = jwt.decode(
        token, public, algorithms=[algorithm], audience="registry.test", issuer="syncagent-test",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert claims["sub"] == "syncagent"
    assert (claims["nbf"], claims["iat"], claims["exp"]) == (1_000_000, 1_000_000, 1_000_090)
    assert claims["access"] == [{"type": "repository", "name": "group/app", "actions": ["pull"]}]
    assert isinstance(claims["aud"], str)  # distribution 2.8 wants a string audience
    other = jwt.decode(minter.token("group/app", now=1_000_000), options={"verify_signature": False})
    assert len(claims["jti"]) >= 16 and other["jti"] != claims["jti"]


def test_x5c_header_carries_the_certificate(tmp_path):
    from cryptography import x509
    import base64

    signer = make_signer(tmp_path, "signer")
    minter = TokenMinter("i", "s", signer.key, signer.cert, include_x5c=True)
    header = jwt.get_unverified_header(minter.token("r"))
    cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    assert cert == x509.load_pem_x509_certificate(signer.cert.read_bytes())
    assert header["kid"] == minter.key_id


def test_minter_refuses_bad_configuration(tmp_path):
    signer, other = make_signer(tmp_path, "signer"), make_signer(tmp_path, "other")
    with pytest.raises(TokenConfigurationError, match="not for the key"):
        TokenMinter("i", "s", signer.key, other.cert)
    with pytest.raises(TokenConfigurationError, match="cannot read"):
        TokenMinter("i", "s", tmp_path / "absent.key")
    with pytest.raises(TokenConfigurationError, match="PEM private key"):
        TokenMinter("i", "s", signer.cert)
    p384 = tmp_path / "p384.key"
    p384.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(TokenConfigurationError, match="P-256"):
        TokenMinter("i", "s", p384)
    with pytest.raises(TokenConfigurationError, match="also needs --registry-token-service"):
        checker_from_options("127.0.0.1:5000", issuer="i", key_file=str(signer.key))


def test_secrets_stay_out_of_reprs(tmp_path):
    signer = make_signer(tmp_path, "signer")
    minter = TokenMinter("i", "s", signer.key, signer.cert)
    key_text = signer.key.read_text()
    body = "".join(key_text.strip().splitlines()[1:-1])
    for text in (repr(minter), repr(RegistryChecker("127.0.0.1:1", minter))):
        assert body[:40] not in text and "PRIVATE" not in text


def test_base_urls():
    assert normalize_base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert normalize_base_url("localhost:5000/") == "http://localhost:5000"
    assert normalize_base_url("registry.example") == "https://registry.example"
    assert normalize_base_url("http://registry.example:80/v2/") == "http://registry.example:80"
    with pytest.raises(ValueError):
        normalize_base_url("ftp://x")


# --------------------------------------------------------------------------- a fake registry


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class FakeRegistry:
    """Serves manifests and blobs from dicts; optionally requires a bearer token signed by ``public_key``."""

    def __init__(self, public_key=None, issuer="i", service="s") -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, dict]] = {}  # (repo, ref) -> (body, extra headers)
        self.blobs: dict[tuple[str, str], int] = {}  # (repo, digest) -> status
        self.tags: dict[str, list[str]] = {}
        self.errors: dict[tuple[str, str], dict] = {}  # (repo, ref) -> a 404 error body to answer
        self.public_key = public_key
        self.issuer, self.service = issuer, service
        self.requests: list[tuple[str, str, str | None]] = []
        self.tokens_seen: set[str] = set()
        self.accepts: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.handle(self, "GET")

            def do_HEAD(self):
                fake.handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def add_image(self, repo, tag=None, blobs=("config", "layer"), *, extra_layers=()):
        descriptors = {}
        for name in blobs:
            data = f"{repo}/{name}".encode()
            descriptors[name] = {"mediaType": "application/octet-stream", "digest": digest_of(data), "size": len(data)}
            self.blobs[(repo, descriptors[name]["digest"])] = 200
        body = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptors[blobs[0]],
            "layers": [descriptors[n] for n in blobs[1:]] + list(extra_layers),
        }).encode()
        self.put_manifest(repo, body, tag)
        return digest_of(body), {n: d["digest"] for n, d in descriptors.items()}

    def put_manifest(self, repo, body, tag=None, headers=None):
        digest = digest_of(body)
        headers = {"Docker-Content-Digest": digest, **(headers or {})}
        self.manifests[(repo, digest)] = (body, headers)
        if tag:
            self.manifests[(repo, tag)] = (body, headers)
            self.tags.setdefault(repo, []).append(tag)
        return digest

    def authorized(self, handler, repo) -> bool:
        if self.public_key is None:
            return True
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        token = auth[7:]
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256", "ES256"], audience=self.service, issuer=self.issuer)
        except jwt.PyJWTError:
            return False
        self.tokens_seen.add(token)
        return repo is None or {"type": "repository", "name": repo, "actions": ["pull"]} in claims["access"]

    def handle(self, handler, method):
        path = handler.path.split("?", 1)[0]
        self.requests.append((method, handler.path, handler.headers.get("Authorization")))
        parts = path.split("/")
        status, headers, body = 404, {}, json.dumps({"errors": [{"code": "NOT_FOUND", "message": "not found"}]}).encode()
        repo = None
        if "manifests" in parts:
            i = parts.index("manifests")
            repo, ref = "/".join(parts[2:i]), parts[i + 1]
        elif "blobs" in parts:
            i = parts.index("blobs")
            repo, ref = "/".join(parts[2:i]), parts[i + 1]
        elif path.endswith("/tags/list"):
            repo, ref = "/".join(parts[2:-2]), None
        if not self.authorized(handler, repo):
            status, body = 401, json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
            headers = {"WWW-Authenticate": f'Bearer realm="http://x/token",service="{self.service}",scope="repository:{repo}:pull"'
                       + (',error="invalid_token"' if handler.headers.get("Authorization") else "")}
        elif "manifests" in parts and (repo, ref) in self.errors:
            body = json.dumps(self.errors[(repo, ref)]).encode()
        elif "manifests" in parts and (repo, ref) in self.manifests:
            self.accepts.append(handler.headers.get("Accept", ""))
            body, extra = self.manifests[(repo, ref)]
            status, headers = 200, {"Content-Type": OCI_MANIFEST, **extra}
        elif "blobs" in parts and (repo, ref) in self.blobs:
            status = self.blobs[(repo, ref)]
            headers = {"Docker-Content-Digest": ref, "Content-Length": "10"}
            if status == 307:
                headers["Location"] = "http://storage.invalid/blob"
            body = b""
        elif path.endswith("/tags/list") and repo in self.tags:
            tags = sorted(self.tags[repo])
            query = handler.path.partition("?")[2]
            last = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("last")
            page = [t for t in tags if last is None or t > last][:2]
            status, body = 200, json.dumps({"name": repo, "tags": page}).encode()
            if page and page[-1] != tags[-1]:
                headers = {"Link": f'</v2/{repo}/tags/list?last={page[-1]}&n=2>; rel="next"'}
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if method == "GET":
            handler.send_header("Content-Length", str(len(body)))
        elif "Content-Length" not in headers:
            handler.send_header("Content-Length", "0")
        handler.end_headers()
        if method == "GET":
            handler.wfile.write(body)


@pytest.fixture
def fake():
    registry = FakeRegistry()
    yield registry
    registry.close()


def test_a_whole_image_is_servable_and_every_manifest_type_is_accepted(fake):
    digest, blobs = fake.add_image("group/app", "v1")
    checker = RegistryChecker(fake.url)
    assert checker.check_tag("group/app", "v1") == []
    assert checker.check_tag("group/app", "v1", digest) == []
    assert checker.check_digest("group/app", digest) == []
    for media_type in (OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json", OCI_MANIFEST,
                       "application/vnd.docker.distribution.manifest.v2+json",
                       "application/vnd.docker.distribution.manifest.v1+prettyjws"):
        assert media_type in fake.accepts[0]
    assert fake.accepts[0] == MANIFEST_ACCEPT
    heads = [path for method, path, _ in fake.requests if method == "HEAD"]
    assert set(heads) == {f"/v2/group/app/blobs/{d}" for d in blobs.values()}


def test_missing_blob_is_reported(fake):
    _, blobs = fake.add_image("group/app", "v1")
    del fake.blobs[("group/app", blobs["layer"])]
    reasons = RegistryChecker(fake.url).check_tag("group/app", "v1")
    assert len(reasons) == 1 and blobs["layer"] in reasons[0] and "HTTP 404" in reasons[0], reasons


def test_body_that_does_not_match_its_digest_header(fake):
    digest, _ = fake.add_image("group/app", "v1")
    body, headers = fake.manifests[("group/app", "v1")]
    fake.manifests[("group/app", "v1")] = (body + b" ", headers)
    reasons = RegistryChecker(fake.url).check_tag("group/app", "v1")
    assert len(reasons) == 1 and f"Docker-Content-Digest is {digest}" in reasons[0], reasons


def test_digest_request_served_with_another_manifest(fake):
    digest, _ = fake.add_image("group/app", "v1")
    other, _ = fake.add_image("group/app", "v2", blobs=("config2", "layer2"))
    fake.manifests[("group/app", digest)] = fake.manifests[("group/app", other)]
    reasons = RegistryChecker(fake.url).check_digest("group/app", digest)
    assert reasons == [f"manifest group/app@{digest}: served {other}, expected {digest}"]
    assert RegistryChecker(fake.url).check_tag("group/app", "v1", expected_digest=other) != []


def test_missing_or_unparseable_manifest(fake):
    checker = RegistryChecker(fake.url)
    reasons = checker.check_tag("group/app", "nope")
    assert reasons == ["manifest group/app:nope: HTTP 404 (NOT_FOUND: not found)"]
    fake.put_manifest("group/app", b'{"schemaVersion": 2, "mediaType": "text/plain"}', "odd")
    reasons = checker.check_tag("group/app", "odd")
    assert len(reasons) == 1 and "cannot be parsed" in reasons[0]


def test_a_tag_whose_revision_is_gone_is_told_from_an_unknown_tag(fake):
    """distribution's 404 detail names the tag when the tag is unknown, the revision when the tag's target is."""
    digest = "sha256:" + "ab" * 32
    fake.errors[("group/app", "v1")] = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                                                    "detail": {"Name": "group/app", "Revision": digest}}]}
    fake.errors[("group/app", "v2")] = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                                                    "detail": {"Tag": "v2"}}]}
    checker = RegistryChecker(fake.url)
    assert checker.check_tag("group/app", "v1") == [
        f"manifest group/app:v1: HTTP 404 (MANIFEST_UNKNOWN: manifest unknown (revision {digest}))"]
    assert checker.check_tag("group/app", "v2") == ["manifest group/app:v2: HTTP 404 (MANIFEST_UNKNOWN: manifest unknown (tag v2))"]


def test_index_children_are_fetched_by_digest(fake):
    one, _ = fake.add_image("group/multi", None, blobs=("c1", "l1"))
    two, two_blobs = fake.add_image("group/multi", None, blobs=("c2", "l2"))
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in (one, two)]}).encode()
    fake.put_manifest("group/multi", index, "v1")
    checker = RegistryChecker(fake.url)
    assert checker.check_tag("group/multi", "v1") == []
    del fake.manifests[("group/multi", one)]
    del fake.blobs[("group/multi", two_blobs["l2"])]
    reasons = checker.check_tag("group/multi", "v1")
    assert len(reasons) == 2
    assert reasons[0].startswith(f"manifest group/multi@{one}: HTTP 404")
    assert two_blobs["l2"] in reasons[1]


def test_foreign_layers_are_skipped_and_redirects_count_as_served(fake):
    foreign = {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
               "digest": digest_of(b"windows"), "size": 7, "urls": ["https://example.invalid/layer"]}
    _, blobs = fake.add_image("group/win", "v1", extra_layers=[foreign])
    fake.blobs[("group/win", blobs["layer"])] = 307
    assert RegistryChecker(fake.url).check_tag("group/win", "v1") == []
    assert not any(foreign["digest"] in path for _, path, _ in fake.requests)


def test_401_without_a_minter(tmp_path):
    signer = make_signer(tmp_path, "signer")
    fake = FakeRegistry(public_key=serialization.load_pem_private_key(signer.key.read_bytes(), None).public_key())
    try:
        fake.add_image("group/app", "v1")
        reasons = RegistryChecker(fake.url).check_tag("group/app", "v1")
        assert len(reasons) == 1 and "HTTP 401" in reasons[0] and "no token key is configured" in reasons[0], reasons
        assert "scope=repository:group/app:pull" in reasons[0]
        with pytest.raises(RegistryAuthError):
            RegistryChecker(fake.url).list_tags("group/app")
    finally:
        fake.close()


def test_tokens_are_minted_per_repository_and_cached(tmp_path):
    signer, other = make_signer(tmp_path, "signer"), make_signer(tmp_path, "other")
    fake = FakeRegistry(public_key=serialization.load_pem_private_key(signer.key.read_bytes(), None).public_key())
    try:
        fake.add_image("group/app", "v1")
        fake.add_image("group/app", "v2", blobs=("c2", "l2"))
        fake.add_image("group/other", "v1")
        checker = RegistryChecker(fake.url, TokenMinter("i", "s", signer.key, signer.cert))
        assert checker.check_tag("group/app", "v1") == []
        assert checker.check_tag("group/app", "v2") == []
        assert checker.check_tag("group/other", "v1") == []
        assert len(fake.tokens_seen) == 2  # one per repository, reused for every request
        unauthenticated = [path for _, path, auth in fake.requests if auth is None]
        assert len(unauthenticated) == 1  # only the very first request, which drew the challenge

        rejected = RegistryChecker(fake.url, TokenMinter("i", "s", other.key, other.cert)).check_tag("group/app", "v1")
        assert len(rejected) == 1 and "rejected the minted token" in rejected[0] and "error=invalid_token" in rejected[0]
        assert "eyJ" not in rejected[0]  # never the token itself
    finally:
        fake.close()


def test_an_expiring_token_is_minted_anew(tmp_path):
    signer = make_signer(tmp_path, "signer")
    fake = FakeRegistry(public_key=serialization.load_pem_private_key(signer.key.read_bytes(), None).public_key())
    try:
        fake.add_image("group/app", "v1")
        checker = RegistryChecker(fake.url, TokenMinter("i", "s", signer.key, signer.cert, ttl=60))
        assert checker.check_tag("group/app", "v1") == []
        token, _ = checker._tokens["group/app"]
        checker._tokens["group/app"] = (token, 0)  # as if it had expired
        assert checker.check_tag("group/app", "v1") == []
        assert len(fake.tokens_seen) == 2
    finally:
        fake.close()


def test_tag_listing_follows_pages(fake):
    for tag in ("a", "b", "c", "d", "e"):
        fake.add_image("group/app", tag)
    checker = RegistryChecker(fake.url)
    assert checker.list_tags("group/app") == ["a", "b", "c", "d", "e"]
    assert checker.list_tags("group/none") == []
    result = checker.check_repository_tags("group/app")
    assert result == {tag: [] for tag in "abcde"}


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_registry_is_a_clear_reason():
    checker = RegistryChecker(f"127.0.0.1:{_dead_port()}", timeout=2)
    reasons = checker.check_tag("group/app", "v1")
    assert len(reasons) == 1 and "cannot connect to http://127.0.0.1:" in reasons[0], reasons
    with pytest.raises(RegistryUnreachable):
        checker.ping()


def test_published_tags_are_checked_as_the_engine_announces_them(fake):
    digest, blobs = fake.add_image("group/app", "v1")
    fake.add_image("group/app", "v2", blobs=("c2", "l2"))
    del fake.blobs[("group/app", blobs["layer"])]
    report = Report()
    check_published_tags(report, RegistryChecker(fake.url))
    report.emit("tag-published", repository="group/app", tag="v1", digest=digest)
    report.emit("tag-published", repository="group/app", tag="v2", digest=None)
    assert report.counters["tags_checked"] == 2
    assert [(p.kind, p.tag) for p in report.problems] == [("not-servable", "v1")]
    assert blobs["layer"] in report.problems[0].reason
