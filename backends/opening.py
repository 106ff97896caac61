"""open_backend(url): choose and construct a backend from a URL.

Built-in schemes: ``memory://NAME``, ``file:///PATH`` (a plain path means the
same), ``s3://BUCKET/PREFIX?...``, ``rados://POOL/NAMESPACE?...``. Third-party
backends register a class under the entry-point group ``syncagent.backends``
with the scheme as the entry point's name; the class must offer
``from_url(url: urllib.parse.SplitResult, query: dict[str, str])``.
"""

from __future__ import annotations

import importlib
from urllib.parse import parse_qsl, urlsplit

from .base import Backend
from .errors import ConfigurationError

ENTRY_POINT_GROUP = "syncagent.backends"

_BUILTIN = {
    "memory": "backends.memory:MemoryBackend",
    "file": "backends.filesystem:FilesystemBackend",
    "s3": "backends.s3:S3Backend",
    "rados": "backends.rados:RadosBackend",
}


def _load(spec: str):
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def backend_class(scheme: str):
    """The class registered for ``scheme`` (built-in first, then entry points)."""
    if scheme in _BUILTIN:
        return _load(_BUILTIN[scheme])
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == scheme:
            return ep.load()
    known = sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
    raise ConfigurationError(f"unknown backend scheme {scheme!r}; known: {', '.join(known)}")


def open_backend(url: str) -> Backend:
    """Open the backend a URL names. Raises ConfigurationError or BackendUnavailable."""
    if not url:
        raise ConfigurationError("empty backend URL")
    if "://" not in url:
        if url.startswith("/") or url.startswith("."):
            url = "file://" + url if url.startswith("/") else "file://" + _absolute(url)
        else:
            url = "file://" + _absolute(url)
    parts = urlsplit(url)
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in query:
            raise ConfigurationError(f"option {key} given twice in {url!r}")
        query[key] = value
    cls = backend_class(parts.scheme)
    return cls.from_url(parts, query)


def open_for_run(url: str, *, max_requests_per_second: float | None = None, retry=None, observer=None):
    """The backend a URL names, wrapped as a run uses it: its operations retried on transient
    failures (``retry``, a RetryPolicy; the default one when None), when asked held to at most
    ``max_requests_per_second`` (a gateway shared with other users), and each request reported to
    ``observer`` (observed.py), retries included."""
    from .observed import ObservedBackend
    from .ratelimit import RateLimitedBackend, TokenBucket
    from .retry import RetryPolicy, retrying

    backend = open_backend(url)
    if observer is not None:
        backend = ObservedBackend(backend, observer)
    if max_requests_per_second:
        backend = RateLimitedBackend(backend, TokenBucket(max_requests_per_second))
    return retrying(backend, retry or RetryPolicy())


def _absolute(path: str) -> str:
    import os

    return os.path.abspath(path)
