"""scripts/bench-rados at a tiny size: on a throwaway cluster of its own, syncagent's full sync and
scripts/rados-put-floor alternate, the floor stores one object per file of the tree, and the table
and the ratio per round come out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.components import require_tool

pytestmark = [pytest.mark.ceph]

ROOT = Path(__file__).resolve().parents[2]


def test_the_rados_benchmark_runs_tiny_beside_the_floor(tmp_path):
    for tool in ("ceph-mon", "ceph-osd", "rados"):
        require_tool(tool)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench-rados"), "--repositories", "2", "--tags", "2",
                           "--max-bytes", "65536", "--rounds", "2", "--floor-only", "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seconds = json.loads(done.stdout.strip().splitlines()[-2])["seconds"]
    assert [label.split(",")[0] for label in seconds] == [
        "syncagent sync (full", "syncagent sync (no-op re-sync)", "syncagent verify (the namespace)", "rados-put-floor",
        "syncagent sync (full", "rados-put-floor"]
    assert all(value > 0 for value in seconds.values())
    assert re.search(r"syncagent full / rados-put-floor, by round: [0-9.]+x, [0-9.]+x; median [0-9.]+x", done.stdout)
    assert not (tmp_path / "work").exists()

