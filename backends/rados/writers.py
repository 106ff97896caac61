"""Who is writing: the ``t:<name>/<gen>`` record a put of a large object leaves while it runs, and
telling a slow writer from a dead one."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time

from ..processes import boot_id, process_start
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
    """What ``t:<name>/<gen>`` holds."""

    host: str
    boot: str
    pid: int
    start: str
    since: float

    @classmethod
    def this_process(cls) -> "Writer":
        pid = os.getpid()
        return cls(socket.gethostname(), boot_id(), pid, process_start(pid) or "", time.time())

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def decode(cls, raw: bytes) -> "Writer | None":
        try:
            fields = load_record(raw)
            return cls(str(fields["host"]), str(fields["boot"]), int(fields["pid"]), str(fields["start"]), float(fields["since"]))
        except (ValueError, KeyError, TypeError, OverflowError):
            return None

    def abandoned(self, gen: str, abandoned_after: float) -> bool:
        """True when the put this record announces can no longer commit."""
        me = Writer.this_process()
        if self.host == me.host and self.boot and self.boot == me.boot:
            if self.pid == me.pid and self.start == me.start:
                return not running(gen)
            return process_start(self.pid) != self.start
        return time.time() - self.since > abandoned_after
