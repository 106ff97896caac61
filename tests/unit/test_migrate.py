"""syncagent migrate's progress when stderr is not a terminal: a line now and then, and an estimate of the
time left once the first seconds of copying have measured the rate."""

from __future__ import annotations

import io
import time

from syncagent.cli import migrate
from syncagent.sync.report import Report


def test_progress_without_a_terminal_prints_an_estimate_and_regular_lines(monkeypatch):
    monkeypatch.setattr(migrate, "PROBE_SECONDS", 0.0)
    monkeypatch.setattr(migrate, "QUIET_REPORT_EVERY", 0.0)
    report = Report()
    err = io.StringIO()
    with migrate._Progress(report, expected_bytes=10 * 1024 * 1024, err=err):
        report.count("bytes_copied", 1024 * 1024)
        report.count("blobs_copied", 3)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not ("left for" in err.getvalue() and "3 blobs" in err.getvalue()):
            time.sleep(0.05)  # polling what the progress thread printed, with a deadline
    lines = err.getvalue().splitlines()
    estimates = [line for line in lines if "left for 10.0 MiB" in line]
    assert len(estimates) == 1 and "rate " in estimates[0]
    assert any("3 blobs (1.0 MiB)" in line for line in lines)
