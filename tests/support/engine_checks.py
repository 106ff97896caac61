"""Doubles and checks shared by the engine's unit tests: a destination that checks the whole invariant after
every write, one whose chosen puts fail, and small readers of what a pass did."""

from __future__ import annotations

import threading

from backends import BackendError
from backends.memory import MemoryBackend
from syncagent.check.verify import verify_backend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import TagCurrentLink, key_of, parse_link, tags_prefix


class InvariantCheckingBackend(MemoryBackend):
    """A destination that checks the whole invariant after every single write."""

    def __init__(self) -> None:
        super().__init__()
        self._serial = threading.Lock()
        self.writes: list[str] = []
        self.violations: list = []

    def put(self, key, data, **kwargs):
        with self._serial:
            info = super().put(key, data, **kwargs)
            self.writes.append(key)
            report = verify_backend(self, hygiene=False)
            if not report.ok:
                self.violations.append((key, [p.describe() for p in report.problems]))
        return info


class FailingPuts(MemoryBackend):
    """A destination whose puts of chosen keys fail like a full or broken disk."""

    def __init__(self, failing) -> None:
        super().__init__()
        self.failing = failing

    def put(self, key, data, **kwargs):
        if self.failing(key):
            data.read(100)
            raise BackendError(f"{key}: No space left on device", key=key)
        return super().put(key, data, **kwargs)


def sync(source, dest, **options):
    return Engine(source, dest, SyncOptions(**options)).run()


def kinds(report):
    return sorted(p.kind for p in report.problems)


def dest_tags(dest, repository):
    tags = {}
    for entry in dest.iter_children(tags_prefix(repository)):
        tags[entry.name] = str(parse_link(dest.read_bytes(key_of(TagCurrentLink(repository, entry.name)))))
    return tags
