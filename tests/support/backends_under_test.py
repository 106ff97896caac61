"""What the conformance suite needs from each backend's fixture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from backends import Backend


@dataclass
class BackendUnderTest:
    """A fresh, empty backend, and a way to find its private leftovers.

    ``leftovers()`` lists what a failed or finished put may have left outside
    the visible keys: staging files, incomplete multipart uploads, orphan
    chunk objects. It must return [] whenever no put is in progress.
    """

    backend: Backend
    leftovers: Callable[[], list[str]] = field(default=lambda: [])
