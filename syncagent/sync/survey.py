"""Surveying one repository: both sides' tags and revisions, and the source's closures the plan needs.

A survey only reads. It is everything the planner (plan.py) decides from:
the source's tags and revisions, the destination's (not read when the
destination was found empty as the pass began), and the closure of every root
:func:`plan.roots_to_resolve` names, resolved from the source's manifests
(each read once, its digest checked).
"""

from __future__ import annotations

from typing import Callable

from backends import Backend, NotFound

from .closure import Closure, ClosureError, read_manifest, resolve_closure
from .discovery import RepositoryState, read_repository
from .layout import Digest
from .manifest import Manifest
from .plan import PlanSettings, RepositorySurvey, roots_to_resolve
from .report import Problem

OnProblem = Callable[[Problem], None]


def survey_repository(
    source: Backend,
    dest: Backend,
    repository: str,
    settings: PlanSettings,
    *,
    on_problem: OnProblem,
    dest_empty: bool = False,
    check_history: bool = False,
) -> RepositorySurvey:
    """Read both sides of ``repository`` and the closures a plan needs. Raises BackendError when a side
    cannot be listed (problems with single entries go to ``on_problem``).

    ``dest_empty``: the destination held nothing when the pass began (it is not read).
    ``check_history``: every destination tag's history link is to be checked (a pass died).
    """
    src = read_repository(source, repository, on_problem)
    if dest_empty:
        dst = RepositoryState(repository)
    else:
        try:
            dst = read_repository(dest, repository, expected_tags=src.tags)
        except NotFound:
            dst = RepositoryState(repository)  # a destination that does not exist yet is empty
    survey = RepositorySurvey(repository, src, dst, dest_existed=bool(dst.tags or dst.revisions),
                              history_to_check=dict(dst.tags) if check_history else {})
    loader = _ManifestLoader(source, src)
    for root in roots_to_resolve(src, dst, settings):
        try:
            survey.closures[root] = resolve_closure(root, loader.load)
        except ClosureError as exc:
            survey.closures[root] = exc
    survey.manifests = loader.raw
    return survey


class _ManifestLoader:
    """Reads each manifest of the source once per survey, keeping its bytes for the copy."""

    def __init__(self, source: Backend, state: RepositoryState) -> None:
        self.source = source
        self.state = state
        self.raw: dict[Digest, bytes] = {}
        self._parsed: dict[Digest, Manifest | ClosureError] = {}

    def load(self, digest: Digest) -> Manifest:
        known = self._parsed.get(digest)
        if known is None:
            known = self._read(digest)
            self._parsed[digest] = known
        if isinstance(known, ClosureError):
            raise known
        return known

    def _read(self, digest: Digest) -> Manifest | ClosureError:
        if digest not in self.state.revisions:
            return ClosureError("missing-manifest", digest, "referenced manifest has no revision link at the source")
        try:
            data, manifest = read_manifest(self.source, digest)
        except ClosureError as exc:
            return exc
        self.raw[digest] = data
        return manifest


__all__ = ["Closure", "survey_repository"]
