"""syncagent: ordered, verified replication of container registry storage.

Public API: :class:`Engine` and :class:`SyncOptions` run a sync pass,
:func:`verify_backend` checks the invariant, :class:`Report` and
:class:`Problem` describe what happened. They are imported on first use, so
that the command line starts quickly.
"""

from importlib import import_module

_EXPORTS = {
    "Engine": ".sync",
    "SyncOptions": ".sync",
    "Problem": ".sync",
    "Report": ".sync",
    "verify_backend": ".check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
