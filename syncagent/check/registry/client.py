"""Talking to a registry over HTTP: sessions, tokens on a 401, answers read within a size limit."""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from ...sync.jsonsafe import loads_bounded
from ...sync.manifest import MAX_MANIFEST_BYTES

from .errors import DEFAULT_TIMEOUT, TAG_PAGE_SIZE, _REFRESH_MARGIN, RegistryCheckError, RegistryUnreachable, RegistryAuthError
from .tokens import TokenMinter

log = logging.getLogger(__name__)


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


class RegistryClient:
    """HTTP to one registry: a session per thread, pull tokens minted per repository and renewed, pagination.

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

    def __enter__(self) -> "RegistryClient":
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

    # -- the walk


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
