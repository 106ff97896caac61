"""syncagent: ordered, verified replication of container registry storage.

Public API: :class:`Engine` and :class:`SyncOptions` run a sync pass,
:func:`verify_backend` checks the invariant, :class:`Report` and
:class:`Problem` describe what happened.
"""

from .engine import Engine, SyncOptions
from .report import Problem, Report
from .verify import verify_backend

__all__ = ["Engine", "SyncOptions", "Problem", "Report", "verify_backend"]
