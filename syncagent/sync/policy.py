"""When deleting on the destination is safe: one policy for ``sync --delete`` and ``watch --delete``.

A delete is refused (nothing is deleted, a ``delete-refused`` problem says why) when:

- the source could not be read completely: a source that cannot be read never counts as empty;
- unless ``force``: source and destination look swapped (the source carries a replica marker naming
  the destination as its own source);
- unless ``force``: the destination carries no replica marker (replica.py): it was not filled by
  syncagent and may be a primary;
- unless ``force``: the source holds no repositories while the destination does;

Each check is made within the pass's scope (``scope``: ``--repo`` patterns and ``--shard``): a pass over
one shard asks whether *its* repositories are gone from the source, and measures its share against the
tags and revisions of *its* repositories on the destination.
- unless ``force``: it would remove more than ``max_share`` of the destination's tags and revisions.

``--max-delete`` has one meaning everywhere: **one delete pass removes at most that share of the tags
and revisions the destination holds in the pass's scope.** ``sync --delete`` is one pass: its plans
are made for every repository first and refused together. In ``watch --delete`` a reconcile is one
pass: the deletes that follow notifications between two reconciles and the reconcile's own draw on one
:class:`DeleteAllowance`, measured over what the sidecar has seen of the destination and renewed when a
reconcile completes; repositories gone from the source are asked for all at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

from backends import Backend

from .discovery import iter_repositories
from .replica import read_marker


@dataclass(frozen=True)
class DeletePolicy:
    """The refusals above, for one source and destination."""

    source: Backend
    dest: Backend
    max_share: float
    force: bool = False
    scope: Callable[[str], bool] | None = None

    def pass_refusal(self, source_repositories: set[str] | None, source_listed: bool) -> str | None:
        """Why no delete may happen in this pass (before any plan), or None. ``source_repositories``:
        what the source holds (None: not known, e.g. one repository's pass)."""
        if not source_listed:
            return "the source could not be listed completely; a source that cannot be read never counts as empty"
        if self.force:
            return None
        source_marker = read_marker(self.source)
        if source_marker is not None and source_marker.get("source") == self.dest.url:
            return f"source and destination look swapped: {self.source.url} is a replica of {self.dest.url}"
        if read_marker(self.dest) is None:
            return (
                f"{self.dest.url} carries no syncagent replica marker (.syncagent/replica.json): it was not filled by "
                "syncagent and may be a primary; check SRC and DST, and pass --force to adopt it"
            )
        if source_repositories is not None and not any(map(self._in_scope, source_repositories)) \
                and any(map(self._in_scope, iter_repositories(self.dest))):
            return (f"the source {self.source.url} holds no repositories{self._scope_text} while the destination does; "
                    "refusing to empty it")
        return None

    def _in_scope(self, repository: str) -> bool:
        return self.scope is None or self.scope(repository)

    @property
    def _scope_text(self) -> str:
        return "" if self.scope is None else " in this pass's scope"

    def share_refusal(self, removing: int, holding: int) -> str | None:
        """Why removing ``removing`` of the ``holding`` tags and revisions is too much, or None."""
        if self.force or not holding or removing / holding <= self.max_share:
            return None
        return (
            f"the pass would delete {removing} of the destination's {holding} tags and revisions "
            f"({removing / holding:.0%}), more than the limit of {self.max_share:.0%}; "
            "check SRC and DST, then raise --max-delete or pass --force"
        )


class _Deferred:
    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED = _Deferred()


@dataclass
class DeleteAllowance:
    """The sidecar's share of deletes between two reconciles (see the module docstring). Thread-safe.

    ``held``: tags and revisions the destination holds per repository, as its passes surveyed them.
    Until a first reconcile has measured the whole destination (``established``), a request the
    share would refuse is *deferred* instead: asked again once the reconcile completes.
    """

    policy: DeletePolicy
    held: dict[str, int] = field(default_factory=dict)
    spent: int = 0
    established: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request(self, plans: Iterable) -> "str | _Deferred | None":
        """Spend the allowance on ``plans`` (DeletePlan: ``repository``, ``removing``, ``holding``) all
        together: None when granted; else ``DEFERRED``, or why not (nothing is spent)."""
        plans = list(plans)
        with self._lock:
            for plan in plans:
                self.held[plan.repository] = plan.holding
            removing = sum(plan.removing for plan in plans)
            if not removing:
                return None
            refusal = self.policy.share_refusal(self.spent + removing, sum(self.held.values()))
            if refusal is None:
                self.spent += removing
                return None
            return refusal if self.established else DEFERRED

    def forget(self, repository: str) -> None:
        """A repository the destination no longer holds."""
        with self._lock:
            self.held.pop(repository, None)

    def measured(self) -> None:
        """Every repository of the destination in scope has been surveyed (a reconcile's passes ended)."""
        with self._lock:
            self.established = True

    def renew(self) -> None:
        """A reconcile completed: it has measured the destination, and a new pass begins."""
        with self._lock:
            self.spent = 0
            self.established = True


__all__ = ["DEFERRED", "DeleteAllowance", "DeletePolicy"]
