"""Who is writing: the ``t:<name>/<gen>`` record a put of a large object leaves while it runs, and
telling a slow writer from a dead one.

A record names its writer with :class:`~backends.processes.WriterIdentity`
(host, boot, pid namespace, pid, process start) and says since when it
writes. Its put is abandoned when it can no longer commit: a put of this
process that is no longer running; a writer of this host, boot and pid
namespace whose process is gone; and any other writer (another host, another
pid namespace, or a record of an earlier version without ``pidns``, which is
never judged by its pid) once ``abandoned_after`` seconds have passed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time

from ..processes import WriterIdentity
from .layout import load_record

_ACTIVE_GENS: set[str] = set()  # puts in progress in this process
_ACTIVE_LOCK = threading.Lock()


def started(gen: str) -> None:
    """A put of this process that recorded ``gen`` runs."""
    with _ACTIVE_LOCK:
        _ACTIVE_GENS.add(gen)


def ended(gen: str) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE_GENS.discard(gen)


def running(gen: str) -> bool:
    with _ACTIVE_LOCK:
        return gen in _ACTIVE_GENS


@dataclasses.dataclass(frozen=True)
class Writer:
    """What ``t:<name>/<gen>`` holds: the writer's identity fields and ``since``."""

    identity: WriterIdentity
    since: float

    @classmethod
    def this_process(cls) -> "Writer":
        return cls(WriterIdentity.current(), time.time())

    def encode(self) -> bytes:
        fields = {**self.identity.as_dict(), "since": self.since}
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def decode(cls, raw: bytes) -> "Writer | None":
        """None for a value that is not a writer record (it is then never taken for abandoned)."""
        try:
            fields = load_record(raw)
            identity = WriterIdentity.from_dict({"pidns": "", **fields})  # records without pidns: older versions
            since = fields.get("since")
            if not isinstance(since, (int, float)) or isinstance(since, bool) or not math.isfinite(since):
                raise ValueError("since is not a time")
        except ValueError:
            return None
        return cls(identity, float(since))

    def abandoned(self, gen: str, abandoned_after: float) -> bool:
        """True when the put this record announces can no longer commit."""
        if self.identity == WriterIdentity.current():
            return not running(gen)
        alive = self.identity.alive()
        if alive is not None:
            return not alive
        return time.time() - self.since > abandoned_after
