"""Typed errors every backend raises, whatever its SDK.

    BackendError                  base of everything a backend raises on purpose
    ├── NotFound                  the key does not exist
    ├── PermissionDenied          the store refused the operation (credentials, policy, read-only)
    ├── InvalidKey                the key is malformed: empty, absolute, "." or ".." components
    ├── SymlinkRefused            a path below the root is a symbolic link: never followed (filesystem)
    ├── TransientError            worth retrying: timeouts, throttling, connection loss, 5xx
    ├── CopyUnverifiable          a server-side copy the store cannot vouch for: nothing visible; stream the object
    ├── ConfigurationError        a bad URL or option; raised by open_backend and constructors
    └── BackendUnavailable        a required library or service is missing (how to fix it in the message)

Each backend translates its SDK's exceptions into these in one place, with
``raise ... from exc`` so the original stays in the traceback. An exception
raised by a caller's ``before_commit`` callback is never translated: the put is
aborted and that exception propagates unchanged.
"""

from __future__ import annotations


class BackendError(Exception):
    """Base class of every error a backend raises deliberately."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class NotFound(BackendError):
    """The key does not exist."""


class PermissionDenied(BackendError):
    """The store refused the operation."""


class InvalidKey(BackendError):
    """The key is not a well-formed relative path of non-empty components."""


class SymlinkRefused(BackendError):
    """A path below the backend's root is a symbolic link, which is never followed.

    ``key`` is the key (or prefix) asked for; ``keys`` names what was refused:
    the link itself where known. A listing yields everything else first, then
    raises this naming every link it met (``keys``), so that one link hides
    nothing and is never taken for an object or a prefix.
    """

    def __init__(self, message: str, *, key: str | None = None, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message, key=key)
        self.keys = keys or ((key,) if key is not None else ())


class TransientError(BackendError):
    """A failure that may succeed when retried (timeout, throttling, lost connection)."""


class CopyUnverifiable(BackendError):
    """A server-side copy could not be checked against the bytes the caller read (e.g. a store whose
    ETags are not MD5s, as with SSE-KMS): nothing was made visible; copy the object by streaming it."""


class ConfigurationError(BackendError):
    """A backend URL or option is wrong."""


class BackendUnavailable(BackendError):
    """A library or service the backend needs is missing; the message says how to get it."""
