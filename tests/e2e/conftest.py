"""Fixtures for end-to-end tests: real registries, real images, the real CLI.

- ``images``: an :class:`ImageFactory` (one OCI layout under tmp_path).
- ``primary``: a writable registry (delete enabled) on ``tmp_path/primary``.
- ``start_registry(root, read_only=...)``: more registries, all stopped at teardown.
- ``syncagent``: runs ``python -m syncagent ...`` and returns a :class:`CliResult`.

A missing docker-registry, skopeo or umoci skips these tests locally and fails
them in CI (tests/support/components.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.components import require_tool
from tests.support.images import ImageFactory
from tests.support.registry import Registry

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SYNCAGENT_TIMEOUT = 120


@pytest.fixture
def components() -> None:
    for tool in ("docker-registry", "skopeo", "umoci"):
        require_tool(tool)


@pytest.fixture
def images(tmp_path, components) -> ImageFactory:
    return ImageFactory(tmp_path / "oci")


@pytest.fixture
def start_registry(tmp_path, components):
    started: list[Registry] = []

    def start(root: Path, *, read_only: bool = False, delete: bool = False, name: str | None = None) -> Registry:
        workdir = tmp_path / "registries" / (name or f"registry-{len(started)}")
        registry = Registry(root=root, read_only=read_only, delete=delete, workdir=workdir)
        started.append(registry)
        return registry.start()

    yield start
    for registry in reversed(started):
        registry.stop()


@pytest.fixture
def primary(tmp_path, start_registry) -> Registry:
    return start_registry(tmp_path / "primary", delete=True, name="primary")


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"--json output is not one JSON object ({exc}):\n{self.describe()}") from None

    def describe(self) -> str:
        return (
            f"$ syncagent {' '.join(self.args)}\nexit status {self.returncode}\n"
            f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
        )


class RunningCli:
    """A syncagent process whose output goes to files (a pipe nobody reads could block it)."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self._stdout = tempfile.TemporaryFile(mode="w+")
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncagent", *args], cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr, text=True,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self, timeout: float = SYNCAGENT_TIMEOUT) -> CliResult:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self._result().describe()}\n(killed: still running after {timeout} s)") from None
        return self._result()

    def _result(self) -> CliResult:
        outputs = []
        for stream in (self._stdout, self._stderr):
            stream.seek(0)
            outputs.append(stream.read())
            stream.close()
        return CliResult(self.args, self.process.returncode, *outputs)


class SyncagentCli:
    """Runs ``[sys.executable, "-m", "syncagent", ...]`` from the project root."""

    def start(self, *args: str | os.PathLike) -> RunningCli:
        return RunningCli([str(arg) for arg in args])

    def __call__(self, *args: str | os.PathLike, timeout: float = SYNCAGENT_TIMEOUT) -> CliResult:
        return self.start(*args).finish(timeout)


@pytest.fixture
def syncagent() -> SyncagentCli:
    return SyncagentCli()
