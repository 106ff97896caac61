"""Pullability through the registry API: would the destination registry serve this tag?

The storage checks (verify.py, the engine's read-back) prove the objects are
there; this module asks the registry itself, over HTTP, the way a client pulls:

1. ``GET /v2/<name>/manifests/<tag or digest>`` with an ``Accept`` header that
   lists every manifest type (OCI index, Docker manifest list, OCI manifest,
   Docker schema 2, OCI artifact, schema 1 signed and unsigned);
2. the body must hash to the ``Docker-Content-Digest`` the registry sent (and
   to the digest asked for, or expected for the tag);
3. the body is parsed with :func:`syncagent.manifest.parse_manifest`; for an
   index every child is fetched by digest, recursively; for an image every
   blob (config, layers, ...) is checked with ``HEAD /v2/<name>/blobs/<digest>``
   (optional, i.e. foreign/non-distributable layers are skipped).

Every check returns a list of human-readable reasons, ``[]`` when a client
could pull it. Connection failures become a reason too (and
:meth:`RegistryChecker.ping` raises :class:`RegistryUnreachable` for callers
that want to fail fast).

Registries that use token authentication (``auth: token`` in distribution's
configuration) answer 401 with a ``WWW-Authenticate: Bearer`` challenge. With
a :class:`TokenMinter` -- built from the registry's token issuer, service, and
the private key (plus certificate) whose certificate is in the registry's
``rootcertbundle`` -- the checker mints its own short-lived pull token per
repository and retries; no token server is involved. Distribution 2.8 finds
the verification key through the token's ``x5c`` header (a certificate chain
to ``rootcertbundle``), else ``jwk``, else ``kid`` in libtrust form
(:func:`libtrust_key_id`); the minter sends ``kid`` always and ``x5c`` when
asked (both are accepted by 2.8, see tests/e2e/test_registry_check.py).

Tokens and keys are never logged or put into a reason.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlsplit

import requests

from ..sync.jsonsafe import loads_bounded
from ..sync.layout import Digest
from ..sync.manifest import ALL_MANIFEST_TYPES, MAX_MANIFEST_BYTES, MalformedManifest, parse_manifest

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join(ALL_MANIFEST_TYPES)
DEFAULT_TTL = 60
DEFAULT_TIMEOUT = 10.0
MAX_INDEX_DEPTH = 8
TAG_PAGE_SIZE = 1000
_REFRESH_MARGIN = 10  # seconds before expiry at which a cached token is minted anew


class RegistryCheckError(Exception):
    """Base of this module's errors."""


class RegistryUnreachable(RegistryCheckError):
    """The registry could not be reached at all (connection refused, DNS, TLS, timeout)."""


class RegistryAuthError(RegistryCheckError):
    """The registry refused our credentials (or wants some and we have none)."""


class TokenConfigurationError(RegistryCheckError):
    """The token key or certificate cannot be used (unreadable, wrong type, not matching)."""


# --------------------------------------------------------------------------- tokens


def libtrust_key_id(public_key) -> str:
    """The key id distribution (via docker/libtrust) derives from a public key.

    SHA-256 of the DER-encoded SubjectPublicKeyInfo, first 30 bytes (240 bits),
    base32 without padding (48 characters), as 12 groups of 4 joined by ``:``.
    """
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenMinter:
    """Mints distribution-style registry bearer tokens (JWT) granting ``pull`` on one repository.

    ``key_file``: PEM private key, RSA (signs RS256) or EC P-256 (ES256).
    ``cert_file``: PEM certificate of that key, as listed in the registry's
    ``rootcertbundle``; the key id is computed from its public key, and it is
    the ``x5c`` header when ``include_x5c``. Without a certificate the key id
    is computed from the private key's public half.
    """

    def __init__(
        self,
        issuer: str,
        service: str,
        key_file: str | Path,
        cert_file: str | Path | None = None,
        ttl: int = DEFAULT_TTL,
        *,
        subject: str = "syncagent",
        include_x5c: bool = False,
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if not issuer or not service:
            raise TokenConfigurationError("a token needs both an issuer and a service")
        if ttl <= 0:
            raise TokenConfigurationError("the token lifetime must be positive")
        self.issuer = issuer
        self.service = service
        self.subject = subject
        self.ttl = int(ttl)
        self.key_file = str(key_file)
        self.cert_file = str(cert_file) if cert_file is not None else None
        try:
            key_pem = Path(key_file).read_bytes()
        except OSError as exc:
            raise TokenConfigurationError(f"cannot read the token key {key_file}: {exc.strerror or exc}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            # The message of cryptography's errors never includes key material.
            raise TokenConfigurationError(f"{key_file} is not an unencrypted PEM private key: {exc}") from None
        if isinstance(key, rsa.RSAPrivateKey):
            self.algorithm = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise TokenConfigurationError(f"{key_file}: EC key on {key.curve.name}; ES256 needs P-256")
            self.algorithm = "ES256"
        else:
            raise TokenConfigurationError(f"{key_file}: only RSA and EC P-256 keys can sign registry tokens")
        self._key = key
        public = key.public_key()
        self._x5c: list[str] | None = None
        if cert_file is not None:
            try:
                cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
            except OSError as exc:
                raise TokenConfigurationError(f"cannot read the token certificate {cert_file}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise TokenConfigurationError(f"{cert_file} is not a PEM certificate: {exc}") from None
            spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            if cert.public_key().public_bytes(*spki) != public.public_bytes(*spki):
                raise TokenConfigurationError(f"the certificate {cert_file} is not for the key {key_file}")
            self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        if include_x5c and self._x5c is None:
            raise TokenConfigurationError("x5c needs the certificate (cert_file)")
        self.include_x5c = include_x5c
        self.key_id = libtrust_key_id(public)

    def __repr__(self) -> str:  # never the key
        return f"TokenMinter(issuer={self.issuer!r}, service={self.service!r}, kid={self.key_id!r}, alg={self.algorithm})"

    def claims(self, repository: str, *, now: float | None = None) -> dict:
        now = int(time.time() if now is None else now)
        return {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.service,
            "exp": now + self.ttl,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [{"type": "repository", "name": repository, "actions": ["pull"]}],
        }

    def headers(self) -> dict:
        headers = {"kid": self.key_id, "typ": "JWT"}
        if self.include_x5c:
            headers["x5c"] = list(self._x5c)
        return headers

    def token(self, repository: str, *, now: float | None = None) -> str:
        """A signed pull token for ``repository``, valid for ``ttl`` seconds from ``now``."""
        import jwt

        return jwt.encode(self.claims(repository, now=now), self._key, algorithm=self.algorithm, headers=self.headers())


# --------------------------------------------------------------------------- the checker


@dataclass
class _Response:
    status: int
    headers: requests.structures.CaseInsensitiveDict
    body: bytes

    def error_text(self) -> str:
        """The registry's error codes and messages, or the start of the body."""
        try:
            errors = loads_bounded(self.body).get("errors") or []
            parts = [_error_part(e) for e in errors if isinstance(e, dict)]
            if parts:
                return "; ".join(parts)[:300]
        except (ValueError, AttributeError):
            pass
        text = self.body[:200].decode("utf-8", "replace").strip()
        return text


def _error_part(error: dict) -> str:
    """``CODE: message`` and, when distribution says which, the tag or revision it could not find.

    A manifest GET by tag answers 404 with ``detail: {"Tag": ...}`` when the tag
    is unknown, and with ``detail: {"Revision": ...}`` when the tag exists but the
    revision it points to does not (a broken tag, not a deleted one).
    """
    text = f"{error.get('code', '?')}: {error.get('message', '')}".strip()
    detail = error.get("detail")
    if isinstance(detail, dict):
        named = [f"{key.lower()} {detail[key]}" for key in ("Tag", "Revision") if isinstance(detail.get(key), str)]
        if named:
            text += f" ({', '.join(named)})"
    return text


def normalize_base_url(url: str) -> str:
    """``https://host:port`` from ``URL`` or ``host:port``.

    Without a scheme, loopback hosts get ``http`` (as Docker treats them) and
    every other host ``https``. A trailing ``/`` or ``/v2`` is dropped.
    """
    url = url.strip()
    if "://" not in url:
        host = urlsplit("//" + url).hostname or ""
        scheme = "http" if _is_loopback(host) else "https"
        url = f"{scheme}://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a registry URL: {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v2"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reference(repository: str, ref: str) -> str:
    return f"{repository}@{ref}" if ":" in ref else f"{repository}:{ref}"


class RegistryChecker:
    """Asks a registry whether it would serve tags and manifests, whole.

        checker = RegistryChecker("http://127.0.0.1:5000", minter)
        checker.check_tag("group/app", "v1")          # [] when a client could pull it
        checker.check_digest("group/app", "sha256:...")
        checker.check_repository_tags("group/app")    # {tag: reasons} for every listed tag

    Safe to share between threads (one HTTP session per thread).
    """

    def __init__(
        self,
        base_url: str,
        minter: TokenMinter | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        *,
        verify_tls: bool | str = True,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.minter = minter
        self.timeout = timeout
        self.verify_tls = verify_tls
        self._shared_session = session
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._needs_auth = False

    def __repr__(self) -> str:
        return f"RegistryChecker({self.base_url!r}, minter={self.minter!r})"

    # -- HTTP plumbing

    def _session(self) -> requests.Session:
        if self._shared_session is not None:
            return self._shared_session
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.verify = self.verify_tls
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> "RegistryChecker":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _token(self, repository: str, *, fresh: bool = False) -> str | None:
        if self.minter is None:
            return None
        now = time.time()
        with self._lock:
            cached = self._tokens.get(repository)
            if cached is not None and not fresh and now < cached[1] - min(_REFRESH_MARGIN, self.minter.ttl / 4):
                return cached[0]
        token = self.minter.token(repository, now=now)
        with self._lock:
            self._tokens[repository] = (token, now + self.minter.ttl)
        return token

    def _request(
        self, method: str, path: str, repository: str | None, *, headers: dict | None = None, params: dict | None = None,
        url: str | None = None, limit: int = MAX_MANIFEST_BYTES,
    ) -> _Response:
        """One request, answering a 401 challenge with a minted token once.

        Raises RegistryUnreachable for connection-level failures and
        RegistryAuthError when the registry rejects us (or wants credentials
        and we have no minter).
        """
        url = url or f"{self.base_url}/v2{path}"
        headers = dict(headers or {})
        token = self._token(repository or "") if self._needs_auth and self.minter is not None else None
        fresh_tried = False
        while True:
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            response = self._send(method, url, headers, params, limit)
            if response.status != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            if self.minter is None:
                raise RegistryAuthError(
                    f"HTTP 401 for {method} /v2{path}: the registry wants a token ({_challenge_summary(challenge)}) "
                    "and no token key is configured"
                )
            self._needs_auth = True
            if fresh_tried:
                raise RegistryAuthError(
                    f"HTTP 401 for {method} /v2{path}: the registry rejected the minted token "
                    f"({_challenge_summary(challenge)}; issuer {self.minter.issuer!r}, service {self.minter.service!r}, "
                    f"key id {self.minter.key_id})"
                )
            log.debug("HTTP 401 for %s /v2%s: minting a pull token for %r", method, path, repository or "")
            token = self._token(repository or "", fresh=True)
            fresh_tried = True

    def _send(self, method: str, url: str, headers: dict, params: dict | None, limit: int) -> _Response:
        try:
            with self._session().request(
                method, url, headers=headers, params=params, timeout=self.timeout, allow_redirects=False, stream=True
            ) as response:
                body = b""
                if method != "HEAD":
                    chunks = []
                    size = 0
                    for chunk in response.iter_content(65536):
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > limit:
                            break
                    body = b"".join(chunks)
                return _Response(response.status_code, response.headers, body)
        except requests.exceptions.SSLError as exc:
            raise RegistryUnreachable(f"TLS error talking to {self.base_url}: {_short(exc)}") from None
        except requests.exceptions.ConnectionError as exc:
            raise RegistryUnreachable(f"cannot connect to {self.base_url}: {_short(exc)}") from None
        except requests.exceptions.Timeout:
            raise RegistryUnreachable(f"{self.base_url} did not answer within {self.timeout:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise RegistryUnreachable(f"request to {self.base_url} failed: {_short(exc)}") from None

    # -- public API

    def ping(self) -> None:
        """``GET /v2/``: returns when the registry answers (with our token, if it wants one).

        Raises RegistryUnreachable, RegistryAuthError, or RegistryCheckError for
        anything else than 200.
        """
        response = self._request("GET", "/", None)
        if response.status != 200:
            raise RegistryCheckError(f"GET /v2/ answered HTTP {response.status}: {response.error_text()}")

    def check_tag(self, repository: str, tag: str, expected_digest: str | None = None) -> list[str]:
        """Why the registry would not serve ``repository:tag`` (whole); [] when it would.

        ``expected_digest``: the digest the tag should point to (e.g. what was
        just published); a different one is reported.
        """
        return self._check(repository, tag, expected_digest)

    def check_digest(self, repository: str, digest: str) -> list[str]:
        """Why the registry would not serve ``repository@digest`` (whole); [] when it would."""
        return self._check(repository, digest, digest)

    def _check(self, repository: str, ref: str, expected: str | None) -> list[str]:
        problems: list[str] = []
        try:
            self._check_manifest(repository, ref, expected, problems, depth=0)
        except (RegistryUnreachable, RegistryAuthError) as exc:
            problems.append(f"{_reference(repository, ref)}: {exc}")
        return problems

    def list_tags(self, repository: str) -> list[str]:
        """Every tag ``GET /v2/<name>/tags/list`` returns, across pages; [] for an unknown repository.

        Raises RegistryUnreachable, RegistryAuthError, or RegistryCheckError.
        """
        tags: list[str] = []
        url: str | None = None
        params: dict | None = {"n": TAG_PAGE_SIZE}
        while True:
            response = self._request("GET", f"/{repository}/tags/list", repository, params=params, url=url)
            if response.status == 404:
                return tags
            if response.status != 200:
                raise RegistryCheckError(f"tags/list of {repository}: HTTP {response.status}: {response.error_text()}")
            try:
                tags.extend(loads_bounded(response.body).get("tags") or [])
            except (ValueError, AttributeError) as exc:
                raise RegistryCheckError(f"tags/list of {repository}: not a JSON object: {exc}") from None
            following = _next_link(response.headers.get("Link", ""))
            if not following:
                return sorted(set(tags))
            url = requests.compat.urljoin(self.base_url + "/v2/", following)
            params = None

    def check_repository_tags(self, repository: str) -> dict[str, list[str]]:
        """Every tag the registry lists for ``repository`` -> why it would not be served ([] if it would).

        If the tag list itself cannot be read, the result is ``{"": [reason]}``.
        """
        try:
            tags = self.list_tags(repository)
        except RegistryCheckError as exc:
            return {"": [f"{repository}: {exc}"]}
        return {tag: self.check_tag(repository, tag) for tag in tags}

    # -- the walk

    def _check_manifest(self, repository: str, ref: str, expected: str | None, problems: list[str], depth: int) -> None:
        where = _reference(repository, ref)
        response = self._request(
            "GET", f"/{repository}/manifests/{quote(ref, safe=':')}", repository, headers={"Accept": MANIFEST_ACCEPT}
        )
        if response.status != 200:
            problems.append(f"manifest {where}: HTTP {response.status}{_detail(response)}")
            return
        body = response.body
        if len(body) > MAX_MANIFEST_BYTES:
            problems.append(f"manifest {where}: larger than {MAX_MANIFEST_BYTES} bytes")
            return
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        header = response.headers.get("Docker-Content-Digest")
        if header is None:
            problems.append(f"manifest {where}: the registry sent no Docker-Content-Digest")
        elif header != actual:
            problems.append(f"manifest {where}: Docker-Content-Digest is {header} but the body hashes to {actual}")
            return
        if expected is not None and actual != expected:
            problems.append(f"manifest {where}: served {actual}, expected {expected}")
            return
        try:
            manifest = parse_manifest(body)
        except MalformedManifest as exc:
            problems.append(f"manifest {where} ({actual}): cannot be parsed: {exc}")
            return
        for child in manifest.children:
            if depth >= MAX_INDEX_DEPTH:
                problems.append(f"manifest {where}: indexes nested deeper than {MAX_INDEX_DEPTH}")
                return
            self._check_manifest(repository, str(child.digest), str(child.digest), problems, depth + 1)
        for blob in manifest.blobs:
            if blob.optional:
                continue
            self._check_blob(repository, where, blob.digest, problems)

    def _check_blob(self, repository: str, where: str, digest: Digest, problems: list[str]) -> None:
        response = self._request("HEAD", f"/{repository}/blobs/{digest}", repository)
        if response.status == 200:
            header = response.headers.get("Docker-Content-Digest")
            if header is not None and header != str(digest):
                problems.append(f"manifest {where}: HEAD blob {digest} answered with Docker-Content-Digest {header}")
            return
        if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
            return  # storage redirect: the registry found the blob (it stats before redirecting)
        problems.append(f"manifest {where}: blob {digest}: HTTP {response.status}{_detail(response, head=True)}")


def _detail(response: _Response, *, head: bool = False) -> str:
    if head:
        return {404: " (not found)", 403: " (forbidden)"}.get(response.status, "")
    text = response.error_text()
    return f" ({text})" if text else ""


def _challenge_summary(challenge: str) -> str:
    """The parts of a Bearer challenge worth showing: its error (if any), service and scope."""
    if not challenge:
        return "no WWW-Authenticate challenge"
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    shown = [f"{name}={params[name]}" for name in ("error", "error_description", "service", "scope") if params.get(name)]
    return ", ".join(shown) if shown else challenge[:200]


def _next_link(link: str) -> str | None:
    # Link: </v2/name/tags/list?last=x&n=1000>; rel="next"
    for part in link.split(","):
        if 'rel="next"' in part and "<" in part and ">" in part:
            return part[part.index("<") + 1 : part.index(">")]
    return None


def _short(exc: BaseException) -> str:
    text = str(exc)
    # urllib3 messages nest the useful part inside long reprs: keep the innermost reason.
    for marker in ("Failed to establish a new connection: ", "] "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return text.rstrip("'\")")[:200]


# --------------------------------------------------------------------------- wiring helpers


def checker_from_options(
    url: str,
    *,
    issuer: str | None = None,
    service: str | None = None,
    key_file: str | None = None,
    cert_file: str | None = None,
    ttl: int = DEFAULT_TTL,
    timeout: float = DEFAULT_TIMEOUT,
) -> RegistryChecker:
    """A checker from command-line options; raises TokenConfigurationError when they are incomplete.

    Token options go together: issuer, service and key (the certificate is
    optional, recommended: the key id is then checked against it).
    """
    given = {"--registry-token-issuer": issuer, "--registry-token-service": service, "--registry-token-key": key_file}
    minter = None
    if any(v for v in given.values()) or cert_file:
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise TokenConfigurationError(f"token authentication also needs {', '.join(missing)}")
        minter = TokenMinter(issuer, service, key_file, cert_file, ttl)
    try:
        return RegistryChecker(url, minter, timeout=timeout)
    except ValueError as exc:
        raise TokenConfigurationError(str(exc)) from None


def checker_from_settings(settings) -> RegistryChecker | None:
    """A checker from anything with ``check_registry`` and ``registry_token_{issuer,service,key,cert}``
    attributes (the command line's namespace, the sidecar's configuration); None without a URL.
    Raises TokenConfigurationError for token options without a URL, or incomplete ones."""
    token_options = (
        settings.registry_token_issuer,
        settings.registry_token_service,
        settings.registry_token_key,
        settings.registry_token_cert,
    )
    if not settings.check_registry:
        if any(token_options):
            raise TokenConfigurationError("the --registry-token-* options need --check-registry URL")
        return None
    issuer, service, key_file, cert_file = token_options
    return checker_from_options(settings.check_registry, issuer=issuer, service=service, key_file=key_file, cert_file=cert_file)


def check_published_tags(report, checker: RegistryChecker, *, kind: str = "not-servable") -> None:
    """Subscribe to ``report``: check each tag as soon as the engine publishes it.

    A tag the registry would not serve becomes a problem of ``kind`` (so the
    run exits 1). The check runs in the publishing thread, right after the
    tag's ``current/link`` is written.
    """
    from ..sync.report import Problem

    def on_event(event: str, data: dict) -> None:
        if event != "tag-published":
            return
        reasons = checker.check_tag(data["repository"], data["tag"], data.get("digest"))
        report.count("tags_checked")
        if reasons:
            report.add_problem(
                Problem(kind, "; ".join(reasons[:5]), repository=data["repository"], tag=data["tag"], digest=data.get("digest"))
            )

    report.subscribe(on_event)


def check_backend_tags(
    backend,
    checker: RegistryChecker,
    report,
    *,
    repositories: Callable[[str], bool] | None = None,
    kind: str = "not-servable",
) -> None:
    """Ask the registry for every tag ``backend`` holds (the digest its ``current/link`` names).

    For ``syncagent verify TARGET --check-registry URL``: a tag not served, or
    served with another digest, becomes a problem of ``kind``.
    """
    from ..sync.discovery import iter_repositories, read_repository
    from ..sync.report import Problem

    for repository in iter_repositories(backend):
        if repositories is not None and not repositories(repository):
            continue
        state = read_repository(backend, repository)
        for tag, digest in sorted(state.tags.items()):
            reasons = checker.check_tag(repository, tag, str(digest))
            report.count("tags_checked")
            if reasons:
                report.add_problem(Problem(kind, "; ".join(reasons[:5]), repository=repository, tag=tag, digest=str(digest)))


__all__ = [
    "MANIFEST_ACCEPT",
    "RegistryAuthError",
    "RegistryCheckError",
    "RegistryChecker",
    "RegistryUnreachable",
    "TokenConfigurationError",
    "TokenMinter",
    "check_backend_tags",
    "check_published_tags",
    "checker_from_options",
    "checker_from_settings",
    "libtrust_key_id",
    "normalize_base_url",
]
