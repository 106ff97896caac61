"""Shared fixtures. Fixture modules for the Ceph cluster and its backends are plugins
under tests/support/ (loaded when present)."""

from __future__ import annotations

from pathlib import Path

_SUPPORT = Path(__file__).parent / "support"
pytest_plugins = [
    f"tests.support.{path.stem}" for path in sorted(_SUPPORT.glob("fixtures_*.py"))
]
