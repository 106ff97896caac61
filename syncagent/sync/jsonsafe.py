"""JSON from outside, parsed so that no shape of the input can crash the caller.

Everything syncagent reads as JSON comes from outside the process: manifests
and pass records in storage, the replica marker, notification bodies, a
registry's HTTP answers. ``json.loads`` recurses once per level of nesting: a
few hundred kilobytes of ``[[[...]]]`` raise ``RecursionError``, and on a
thread with a small stack (128 KiB, measured on CPython 3.11) they overflow the
C stack first and kill the process. A number of more than 4,300 digits raises a
plain ``ValueError``.

:func:`loads_bounded` measures the nesting first, with a linear scan that does
not recurse (strings skipped, brackets counted), and refuses a document nested
deeper than ``max_depth`` before ``json.loads`` sees it. Every way the input
can fail comes out as one typed error::

    ValueError
     └── MalformedJSON            not text, not JSON, a number too long, too large to parse
          └── JSONTooDeep         nested deeper than max_depth

Messages name positions and limits, never the content.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate

MAX_DEPTH = 128
"""Deeper than any document syncagent reads legitimately (a manifest nests about five levels),
far below where ``json.loads`` runs out of recursion (about 1,000)."""

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
"""A JSON string, or an unterminated one running to the end: it matches from every quote, so the
scan stays linear whatever the input."""

_BRACKETS_ONLY = bytes.maketrans(b"{}", b"[]"), bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [0] * 256
_DEPTH_STEP[ord("[")], _DEPTH_STEP[ord("]")] = 1, -1


class MalformedJSON(ValueError):
    """Not JSON text that can be used: not UTF-8/16/32, not JSON, a number too long, too large."""


class JSONTooDeep(MalformedJSON):
    """Arrays and objects nested deeper than the bound."""


def loads_bounded(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH) -> object:
    """``json.loads(data)``, refusing nesting deeper than ``max_depth``; raises MalformedJSON.

    Bytes are decoded as ``json.loads`` decodes them (UTF-8 with or without a
    BOM, UTF-16, UTF-32).
    """
    try:
        text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, (bytes, bytearray)) else data
        if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
            raise JSONTooDeep(f"arrays and objects nested deeper than {max_depth} levels")
        return json.loads(text)
    except MalformedJSON:
        raise
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"not UTF-8, UTF-16 or UTF-32 text (byte {exc.start} of {len(data)})") from None
    except json.JSONDecodeError as exc:
        raise MalformedJSON(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:
        raise MalformedJSON("not usable JSON: a number has too many digits") from None
    except RecursionError:
        raise MalformedJSON("arrays and objects nested too deeply to parse") from None
    except MemoryError:
        raise MalformedJSON(f"too large to parse ({len(data)} characters)") from None


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in ``text`` (brackets inside strings do not count).

    Linear in the length of ``text``, without recursion, and it needs no valid JSON.
    """
    raw = text.encode("utf-8", "surrogatepass")
    brackets = _STRING.sub(b"", raw).translate(*_BRACKETS_ONLY)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)
