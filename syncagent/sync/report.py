"""What a run found and did: problems, counters, and events for subscribers (progress, metrics)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Problem:
    """One thing that could not be synced or that is wrong, named precisely.

    ``kind`` is one of: invalid-name, invalid-link, missing-link, missing-blob,
    missing-manifest, digest-mismatch, size-mismatch, manifest-too-large, malformed-manifest, read-failed,
    write-failed, verify-failed, revision-not-published, tag-not-published,
    delete-refused, delete-failed, delete-skipped, broken-tag, broken-revision,
    pass-record-failed, symlink-refused (a symbolic link in a filesystem tree,
    never followed; ``key`` names it).

    ``reason`` never quotes what a stored file holds: keys, names and digests
    may be named, content that does not parse only by its length and hash
    (``layout.describe_content``).
    """

    kind: str
    reason: str
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    key: str | None = None

    def as_dict(self) -> dict:
        """Every field, ``None`` (JSON null) where unknown, so consumers can rely on the keys."""
        return asdict(self)

    @property
    def where(self) -> str:
        """``repository:tag@digest`` as far as known, else the key."""
        where = self.repository or ""
        if self.tag:
            where += f":{self.tag}"
        if self.digest:
            where += f"@{self.digest}" if where else self.digest
        return where or self.key or ""

    def describe(self) -> str:
        return f"{self.kind:<18} {self.where}  {self.reason}"


Subscriber = Callable[[str, dict], None]

COUNTERS = (
    "repositories",
    "tags_published",
    "tags_up_to_date",
    "history_repaired",
    "revisions_published",
    "revisions_up_to_date",
    "links_written",
    "links_present",
    "blobs_copied",
    "blobs_skipped",
    "bytes_copied",
    "bytes_skipped",
    "tags_deleted",
    "revisions_deleted",
    "links_deleted",
    "blobs_deleted",
    "bytes_deleted",
)


@dataclass
class Report:
    """Thread-safe counters and problems of one pass; events go to subscribers."""

    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    problems: list[Problem] = field(default_factory=list)
    findings: list[Problem] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    interrupted: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _subscribers: list[Subscriber] = field(default_factory=list, repr=False)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: str, **data) -> None:
        for subscriber in self._subscribers:
            subscriber(event, data)

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + amount
        self.emit("count", name=name, amount=amount)

    def add_problem(self, problem: Problem) -> None:
        with self._lock:
            self.problems.append(problem)
        self.emit("problem", problem=problem)

    def add_finding(self, finding: Problem) -> None:
        """Something worth knowing that breaks nothing (reclaimable space, leftovers)."""
        with self._lock:
            self.findings.append(finding)

    def plan(self, line: str) -> None:
        with self._lock:
            self.planned.append(line)
        self.emit("plan", line=line)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.interrupted

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def as_dict(self) -> dict:
        result: dict = dict(self.counters)
        result["elapsed_seconds"] = round(self.elapsed, 3)
        result["interrupted"] = self.interrupted
        result["problems"] = [p.as_dict() for p in self.problems]
        if self.findings:
            result["findings"] = [p.as_dict() for p in self.findings]
        if self.planned:
            result["plan"] = list(self.planned)
        return result
