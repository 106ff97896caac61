"""Loading the ``rados`` binding, and translating its exceptions into the typed errors of
``backends.errors``: the one place that does either.

``rados.OSError`` is not the built-in ``OSError``: every exception of the
binding is a ``rados.Error``, classified by its class and its ``errno``.
"""

from __future__ import annotations

import contextlib
import errno
from typing import Any, Iterator

from ..errors import BackendError, BackendUnavailable, NotFound, PermissionDenied, TransientError

INSTALL_HINT = (
    "apt-get install python3-rados (Debian's binding, built for Python 3.11), "
    "then scripts/venv-link-rados VENV to make it importable in a virtual environment"
)

_rados: Any = None

_TRANSIENT_ERRNOS = {
    errno.ETIMEDOUT, errno.ESHUTDOWN, errno.ENOTCONN, errno.EAGAIN, errno.EINTR, errno.ECONNRESET,
    errno.ECONNREFUSED, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EBUSY,
}
_HINTS = {
    errno.EFBIG: "object larger than the cluster's osd_max_object_size (lower ?chunk_size=)",
    errno.EMSGSIZE: "request larger than the cluster's osd_max_write_size",
    errno.EOPNOTSUPP: "the pool does not support omap: use a replicated pool, not an erasure-coded one",
    errno.ENOSPC: "the cluster or pool is full",
    errno.EDQUOT: "the pool's quota is exhausted",
}


def load_rados() -> Any:
    """The ``rados`` module; BackendUnavailable, saying how to install it, when it cannot be imported."""
    global _rados
    if _rados is None:
        try:
            import rados
        except ImportError as exc:
            raise BackendUnavailable(f"the RADOS backend needs the Python module 'rados' ({exc}): {INSTALL_HINT}") from exc
        _rados = rados
    return _rados


def errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    return abs(code) if isinstance(code, int) else None


def translate(exc: BaseException, key: str, *, missing: type[BackendError] = NotFound, what: str = "") -> BackendError:
    """The typed error for a rados exception. ``missing``: what ENOENT means here."""
    rados = load_rados()
    code = errno_of(exc)
    message = ": ".join(part for part in (key, what, str(exc)) if part)
    if isinstance(exc, rados.ObjectNotFound) or code == errno.ENOENT:
        return missing(message, key=key)
    if isinstance(exc, (rados.PermissionError, rados.PermissionDeniedError)) or code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(message, key=key)
    transient = (rados.TimedOut, rados.ConnectionShutdown, rados.NotConnected, rados.InterruptedOrTimeoutError)
    if isinstance(exc, transient) or code in _TRANSIENT_ERRNOS:
        return TransientError(message, key=key)
    if code in _HINTS:
        return BackendError(f"{message} ({_HINTS[code]})", key=key)
    return BackendError(message, key=key)


@contextlib.contextmanager
def translating(key: str, *, missing: type[BackendError] = NotFound, what: str = "") -> Iterator[None]:
    """Raise the rados exceptions of the block as typed errors (:func:`translate`); others pass untouched."""
    try:
        yield
    except Exception as exc:
        if _rados is not None and isinstance(exc, _rados.Error):
            raise translate(exc, key, missing=missing, what=what) from exc
        raise
