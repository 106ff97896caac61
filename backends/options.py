"""Backend options declared as data: a frozen dataclass per backend, parsed from a URL query.

Each field has a default and a ``help`` entry in its metadata; values are
converted to the field's type (str, int, float, bool). Unknown keys are
rejected with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from .errors import ConfigurationError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option(default: Any, help: str) -> Any:
    """Declare an option field with its default and one line of help."""
    return dataclasses.field(default=default, metadata={"help": help})


def _convert(name: str, kind: Any, raw: str) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if "bool" in kind_name:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigurationError(f"option {name}: expected true or false, got {raw!r}")
    if "int" in kind_name:
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"option {name}: expected an integer, got {raw!r}") from None
    if "float" in kind_name:
        try:
            return float(raw)
        except ValueError:
            raise ConfigurationError(f"option {name}: expected a number, got {raw!r}") from None
    return raw


def parse_options(cls: type[T], query: Mapping[str, str], *, scheme: str) -> T:
    """Build ``cls`` from URL query parameters, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(query) - set(fields))
    if unknown:
        valid = ", ".join(sorted(fields)) or "none"
        raise ConfigurationError(f"{scheme}:// does not take option(s) {', '.join(unknown)}; valid options: {valid}")
    values = {name: _convert(name, fields[name].type, raw) for name, raw in query.items()}
    return cls(**values)


def describe_options(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) for each option, for documentation and --help."""
    return [(f.name, f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls)]
