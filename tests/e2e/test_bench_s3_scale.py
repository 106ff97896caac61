"""scripts/bench-s3-scale at a tiny size, syncagent alone (CI has no AWS CLI or s5cmd): the script runs
each shape on a throwaway cluster of its own, and syncagent's own count of its requests (its -v log)
equals what RGW counted for every run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.components import require_tool

pytestmark = [pytest.mark.ceph]

ROOT = Path(__file__).resolve().parents[2]


def test_the_scale_benchmark_runs_tiny_and_the_request_counts_agree(tmp_path):
    for tool in ("ceph-mon", "ceph-osd", "radosgw"):
        require_tool(tool)
    results = tmp_path / "runs.jsonl"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench-s3-scale"), "--preset", "tiny", "--contenders", "syncagent",
                           "--workdir", str(tmp_path / "work"), "--results", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [json.loads(line) for line in results.read_text().splitlines()]
    assert [run["shape"] for run in runs] == ["full", "no-op", "one changed tag", "one changed tag, --repo"]
    for run in runs:
        assert run["client_requests"] == run["rgw_requests"] > 0, run
    full, noop, changed, repo = runs
    assert noop["rgw_requests"] < full["rgw_requests"] / 5  # listings, not a request per object
    assert repo["rgw_requests"] < changed["rgw_requests"]
    assert "| syncagent | full |" in done.stdout
    assert not (tmp_path / "work").exists()
