"""Live progress on a terminal (rich), fed by the report's events."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ..sync.report import Report


class TerminalProgress:
    """Blobs and bytes done of those found so far (the total grows while discovery runs)."""

    def __init__(self, report: Report, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[blobs]} blobs, {task.fields[tags]} tags"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("syncing", total=0, blobs="0/0", tags=0)
        self._lock = threading.Lock()
        self._planned = 0
        self._done = 0
        self._tags = 0
        report.subscribe(self._on_event)

    def _on_event(self, event: str, data: dict) -> None:
        with self._lock:
            if event == "blob-planned":
                self._planned += 1
                self._progress.update(self._task, total=(self._progress.tasks[0].total or 0) + data["size"])
            elif event == "bytes":
                self._progress.advance(self._task, data["amount"])
                return
            elif event == "count" and data["name"] == "blobs_copied":
                self._done += 1
            elif event == "tag-published":
                self._tags += 1
            else:
                return
            self._progress.update(self._task, blobs=f"{self._done}/{self._planned}", tags=self._tags)

    def __enter__(self) -> "TerminalProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()
