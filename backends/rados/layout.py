"""The RADOS backend's own layout: the one place that names RADOS objects and omap keys, and that
encodes and decodes what they hold (heads, garbage records). See the package docstring.

Values read from the pool are JSON written by this backend, but anything may
have been written there: :func:`load_record` accepts only a flat JSON object,
and errors name a value by its length and a short hash, never by its bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ..errors import BackendError

INDEX_PREFIX = "index."
CHUNK_PREFIX = "chunk."
INLINE, PENDING, OBJECT, PREFIX, WRITER, GARBAGE = "i:", "m:", "o:", "p:", "t:", "x:"
UNMARKED = "u:"
"""In an index whose own marker a prune removes or is about to remove: puts that trust a marker they saw
earlier assert its absence (see ``RadosBackend._ensure_markers``). Not content; sorts between t: and x:."""
PREFIX_XATTR = "syncagent.prefix"  # on index objects: the prefix they index
KEY_XATTR = "syncagent.key"  # on chunk objects: the key they belong to

_MAX_BRACKETS = 8
"""More ``[`` and ``{`` than a record holds (one): nesting is bounded by this count, so ``json.loads``
never recurses deeper, whatever the value and however small the thread's stack."""


def index_oid(prefix: str) -> str:
    """The index object of ``prefix`` ("" or ending in "/")."""
    return INDEX_PREFIX + hashlib.sha1(prefix.encode("utf-8")).hexdigest()


def chunk_oid(gen: str, number: int) -> str:
    return f"{CHUNK_PREFIX}{gen}.{number}"


def parse_chunk_oid(oid: str) -> tuple[str, int] | None:
    gen, _, number = oid.removeprefix(CHUNK_PREFIX).partition(".")
    if not oid.startswith(CHUNK_PREFIX) or not number.isdigit():
        return None
    return gen, int(number)


def writer_key(name: str, gen: str) -> str:
    return f"{WRITER}{name}/{gen}"


def garbage_key(name: str, gen: str) -> str:
    return f"{GARBAGE}{name}/{gen}"


def split_key(key: str) -> tuple[str, str]:
    """``a/b/c`` -> (``a/b/``, ``c``): the prefix whose index holds the head, and the name."""
    parent, _, name = key.rpartition("/")
    return (parent + "/" if parent else ""), name


def split_prefix(prefix: str) -> tuple[str, str]:
    """``a/b/`` -> (``a/``, ``b``): the index holding the marker of ``prefix``, and its name."""
    return split_key(prefix[:-1])


def is_content(omap_key: str | None) -> bool:
    """Keys that make an index non-empty for listings (they sort before t: and x:; m: goes with an o:)."""
    return omap_key is not None and omap_key[:2] in (INLINE, PENDING, OBJECT, PREFIX)


def describe(raw: bytes) -> str:
    """A stored value as a report may name it: its length and a short hash, never its bytes."""
    return f"{len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:12]}"


def load_record(raw: bytes) -> dict[str, Any]:
    """The flat JSON object a record holds; ValueError for anything else (nested too deeply included)."""
    if raw.count(b"[") + raw.count(b"{") > _MAX_BRACKETS:
        raise ValueError("nested deeper than a record")
    fields = json.loads(raw)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    return fields


def count_field(fields: dict[str, Any], name: str) -> int:
    """A non-negative integer field (not a bool, a float or a string); ValueError otherwise."""
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} is not a count")
    return value


@dataclasses.dataclass(frozen=True)
class Head:
    """What ``o:<name>`` holds: a stored version of an object. ``chunks == 0``: inline in ``i:<name>``."""

    size: int
    gen: str
    chunk_size: int = 0
    chunks: int = 0

    def encode(self) -> bytes:
        fields = {"v": 1, "size": self.size, "gen": self.gen, "chunk_size": self.chunk_size, "chunks": self.chunks}
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode("ascii")

    @classmethod
    def decode(cls, raw: bytes, key: str) -> "Head":
        """Raises BackendError for a value that is not a head this backend wrote."""
        try:
            fields = load_record(raw)
            gen = fields.get("gen")
            if not isinstance(gen, str) or not gen:
                raise ValueError("gen is not a name")
            head = cls(count_field(fields, "size"), gen, count_field(fields, "chunk_size"), count_field(fields, "chunks"))
        except ValueError as exc:
            raise BackendError(f"{key}: unreadable head ({describe(raw)}): {exc}", key=key) from None
        if head.chunks and head.chunk_size * head.chunks < head.size:
            raise BackendError(f"{key}: head ({describe(raw)}) does not cover its size", key=key)
        return head


@dataclasses.dataclass
class EntryState:
    """One name's records in an index object, read together (``inline`` only when asked for)."""

    head_raw: bytes | None = None
    head: Head | None = None
    inline: bytes | None = None
    pending: bool = False
    unmarked: bool = False  # the index holds u: (read with the name's records)
    writers: dict[str, bytes] = dataclasses.field(default_factory=dict)
    garbage: dict[str, bytes] = dataclasses.field(default_factory=dict)


def garbage_value(chunks: int | None) -> bytes:
    """What ``x:<name>/<gen>`` holds: how many chunks the set has, None when unknown."""
    return json.dumps({"chunks": chunks}).encode("ascii")


def garbage_chunks(raw: bytes) -> int | None:
    """The chunk count of an ``x:`` record; None when unknown or unreadable (then the chunks are counted)."""
    try:
        fields = load_record(raw)
        return None if fields.get("chunks") is None else count_field(fields, "chunks")
    except ValueError:
        return None
