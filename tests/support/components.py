"""Finding the real components tests need, with CI's rule: missing means failure, never a skip."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_component(what: str) -> None:
    """Skip the test on a developer machine; fail it in CI (CI=true)."""
    message = f"{what} is not available (scripts/test installs it)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_component(f"the program {name!r}")
    return path
