"""Comparing a source with a destination: what is missing, stale or extra, per repository."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from backends import Backend, NotFound, SymlinkRefused

from ..sync.discovery import RepositoryState, iter_repositories, read_repository
from ..sync.layout import TagIndexLink, key_of
from ..sync.report import Report


@dataclass
class RepositoryDifference:
    repository: str
    missing_tags: list[str] = field(default_factory=list)
    stale_tags: list[dict] = field(default_factory=list)
    extra_tags: list[str] = field(default_factory=list)
    missing_revisions: list[str] = field(default_factory=list)
    extra_revisions: list[str] = field(default_factory=list)
    missing_history: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.missing_tags or self.stale_tags or self.extra_tags or self.missing_revisions or self.missing_history)

    def as_dict(self) -> dict:
        return {
            "missing_tags": self.missing_tags,
            "stale_tags": self.stale_tags,
            "extra_tags": self.extra_tags,
            "missing_revisions": self.missing_revisions,
            "extra_revisions": self.extra_revisions,
            "missing_history": self.missing_history,
        }


@dataclass
class Comparison:
    source: str
    dest: str
    repositories: dict[str, RepositoryDifference] = field(default_factory=dict)

    @property
    def differs(self) -> bool:
        return any(d.differs for d in self.repositories.values())

    def totals(self) -> dict[str, int]:
        names = ("missing_tags", "stale_tags", "extra_tags", "missing_revisions", "extra_revisions", "missing_history")
        return {n: sum(len(getattr(d, n)) for d in self.repositories.values()) for n in names}

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "destination": self.dest,
            "differs": self.differs,
            "totals": self.totals(),
            "repositories": {name: d.as_dict() for name, d in sorted(self.repositories.items()) if d.differs or d.extra_revisions},
        }

    def table(self) -> str:
        columns = ("missing_tags", "stale_tags", "extra_tags", "missing_revisions", "missing_history")
        rows = [("repository", "missing tags", "stale tags", "extra tags", "missing revisions", "missing history")]
        for name, d in sorted(self.repositories.items()):
            if d.differs:
                rows.append((name, *(str(len(getattr(d, c))) for c in columns)))
        totals = self.totals()
        rows.append(("TOTAL", *(str(totals[c]) for c in columns)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows]
        return "\n".join(lines)


def compare(source: Backend, dest: Backend, report: Report, *, repositories: Callable[[str], bool] | None = None) -> Comparison:
    """Tags and revisions of every repository on either side; source read problems go to ``report``."""
    comparison = Comparison(source.url, dest.url)
    names = set(iter_repositories(source, report.add_problem))
    try:
        names |= set(iter_repositories(dest))
    except NotFound:
        pass
    for name in sorted(names):
        if repositories is not None and not repositories(name):
            continue
        src = read_repository(source, name, report.add_problem)
        try:
            dst = read_repository(dest, name, expected_tags=src.tags)
        except NotFound:
            dst = RepositoryState(name)
        diff = difference(src, dst)
        diff.missing_history = missing_history(dest, dst, src)
        comparison.repositories[name] = diff
    return comparison


def missing_history(dest: Backend, dst: RepositoryState, src: RepositoryState) -> list[str]:
    """Up-to-date tags whose ``index`` link for their current digest is missing on the destination.

    Pulls never read it (it is the tag's history). A plain sync looks for it on
    tags it finds up to date only after a pass that did not finish
    (pass_records.py); ``--repair`` writes it whatever the cause.
    """
    lacking = []
    for tag, digest in sorted(dst.tags.items()):
        if src.tags.get(tag) != digest:
            continue
        try:
            dest.stat(key_of(TagIndexLink(dst.name, tag, digest)))
        except (NotFound, SymlinkRefused):  # a link in its place is no history link (a repair replaces it)
            lacking.append(tag)
    return lacking


def difference(src: RepositoryState, dst: RepositoryState) -> RepositoryDifference:
    diff = RepositoryDifference(src.name)
    for tag, digest in sorted(src.tags.items()):
        if tag not in dst.tags:
            diff.missing_tags.append(tag)
        elif dst.tags[tag] != digest:
            diff.stale_tags.append({"tag": tag, "source": str(digest), "destination": str(dst.tags[tag])})
    diff.extra_tags = sorted(set(dst.tags) - set(src.tags))
    diff.missing_revisions = sorted(str(d) for d in src.revisions - dst.revisions)
    diff.extra_revisions = sorted(str(d) for d in dst.revisions - src.revisions)
    return diff


__all__ = ["Comparison", "RepositoryDifference", "compare", "difference"]
