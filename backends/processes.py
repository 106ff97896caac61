"""Telling a live process from a dead one, on this host: for records that writers leave behind."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path


def boot_id() -> str:
    """This boot's id ("" where the kernel does not say): a pid is only meaningful within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """Start time of a live process (clock ticks since boot), None if it is gone or a zombie.

    A pid and its start time name one process: a pid reused later has another start time.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def pid_namespace() -> str:
    """This process's pid namespace ("" where unknown): a pid means the same process only within one."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


_NAME_VERSION = "w1"
_NAME = re.compile(r"w1\.([0-9a-f]{16})\.([0-9a-f-]*)\.([0-9]*)\.([0-9]+)\.([0-9]*)")


def _host_digest(host: str) -> str:
    return hashlib.sha256(host.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True)
class WriterIdentity:
    """Who wrote something a writer leaves behind (a staging file, a pass record), and whether it still runs.

    A pid names one process only within one pid namespace of one boot of one
    host, and only while that process runs (its start time tells a reused pid
    apart). So :meth:`alive` judges a writer only on this host, boot and pid
    namespace; for any other (another machine or container sharing the volume
    or bucket) it cannot tell, and says None: the caller keeps what the writer
    left, or falls back on something else (a renewal time).

    ``host`` is the host name, or, for an identity read from a file name, the
    first 16 hex digits of its SHA-256 (a host name may hold characters a file
    name cannot).
    """

    host: str
    boot: str
    pidns: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> "WriterIdentity":
        pid = os.getpid()
        return cls(socket.gethostname(), boot_id(), pid_namespace(), pid, process_start(pid) or "")

    def alive(self) -> bool | None:
        """True or False for a writer of this host, boot and pid namespace; None for any other."""
        if not (self.boot and self.pidns and self.start):
            return None
        host = socket.gethostname()
        if self.host not in (host, _host_digest(host)) or self.boot != boot_id() or self.pidns != pid_namespace():
            return None
        return process_start(self.pid) == self.start

    def as_name(self) -> str:
        """A compact form for file names: letters, digits, ``-`` and ``.`` (read back by :meth:`from_name`)."""
        host = self.host if re.fullmatch(r"[0-9a-f]{16}", self.host) else _host_digest(self.host)
        return f"{_NAME_VERSION}.{host}.{self.boot}.{self.pidns}.{self.pid}.{self.start}"

    @classmethod
    def from_name(cls, name: str) -> "WriterIdentity | None":
        """The identity a name starts with (anything may follow after a ``.``), None if it carries none."""
        match = _NAME.match(name)
        if match is None or (len(name) > match.end() and name[match.end()] != "."):
            return None
        host, boot, pidns, pid, start = match.groups()
        return cls(host, boot, pidns, int(pid), start)

    def as_dict(self) -> dict:
        """The fields a JSON record holds (``host``, ``boot``, ``pidns``, ``pid``, ``start``)."""
        return {"host": self.host, "boot": self.boot, "pidns": self.pidns, "pid": self.pid, "start": self.start}

    @classmethod
    def from_dict(cls, fields: dict) -> "WriterIdentity":
        """Read back :meth:`as_dict`; raises ValueError for anything else."""
        try:
            host, boot, pidns, start = (str(fields[name]) for name in ("host", "boot", "pidns", "start"))
            pid = fields["pid"]
        except (KeyError, TypeError) as exc:
            raise ValueError("not a writer identity") from exc
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise ValueError("not a writer identity")
        return cls(host, boot, pidns, pid, start)


__all__ = ["WriterIdentity", "boot_id", "pid_namespace", "process_start"]
