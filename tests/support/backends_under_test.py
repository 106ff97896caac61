"""What the conformance suite needs from each backend's fixture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from backends import Backend


def _cannot_plant(key: str, data: bytes) -> bool:
    return False


@dataclass
class BackendUnderTest:
    """A fresh, empty backend, and a way to find its private leftovers.

    ``leftovers()`` lists what a failed or finished put may have left outside
    the visible keys: staging files, incomplete multipart uploads, orphan
    chunk objects. It must return [] whenever no put is in progress.
    ``plant(key, data)`` stores an object under a key the backend's put
    refuses (``a//b``, ``a/../b``, ``a\\b``), as another client of the store
    could; it returns False when the store cannot hold that key at all.
    """

    backend: Backend
    leftovers: Callable[[], list[str]] = field(default=lambda: [])
    plant: Callable[[str, bytes], bool] = field(default=_cannot_plant)
