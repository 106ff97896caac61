"""Telling a live process from a dead one, on this host: for records that writers leave behind."""

from __future__ import annotations

import os
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


__all__ = ["boot_id", "pid_namespace", "process_start"]
