"""Shards: the repositories one of N agents owns (``--shard I/N``).

Repository ``name`` belongs to shard ``I`` of ``N`` when the first 8 bytes of
SHA-256(name, UTF-8), read as a big-endian integer, are ``I`` modulo ``N``.
The rule depends on nothing but the name and N, so every agent, on any host and
in any version, draws the same line, and another tool can compute it:

    python3 -c 'import hashlib,sys; print(int.from_bytes(hashlib.sha256(sys.argv[1].encode()).digest()[:8], "big") % 3)' team1/app7

Shards are numbered from 0 (as a Kubernetes Indexed Job's
``JOB_COMPLETION_INDEX`` and a StatefulSet's pod ordinal are). docs/scale.md
says how to run N agents and what they share.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 4096


class InvalidShard(ValueError):
    """A shard that is not ``I/N`` with 0 <= I < N."""


def shard_of(repository: str, count: int) -> int:
    """The shard (0 .. count-1) that owns ``repository``."""
    return int.from_bytes(hashlib.sha256(repository.encode("utf-8")).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise InvalidShard(f"shard count must be between 1 and {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise InvalidShard(f"shard index must be between 0 and {self.count - 1} (shards are numbered from 0), got {self.index}")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``I/N``, e.g. ``0/3``; raises InvalidShard."""
        match = _SHARD.match(str(text))
        if not match:
            raise InvalidShard(f"expected I/N (e.g. 0/3: the first of three shards), got {str(text)[:40]!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def owns(self, repository: str) -> bool:
        return shard_of(repository, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


__all__ = ["InvalidShard", "MAX_SHARDS", "Shard", "shard_of"]
