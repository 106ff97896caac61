"""The command line writing into a pipe whose reader leaves early (``syncagent sync --dry-run | head -2``)."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from backends.filesystem import FilesystemBackend
from syncagent.testing.synthetic import TreeShape, write_tree

ROOT = Path(__file__).resolve().parents[2]


def test_a_dry_run_whose_reader_leaves_exits_141_without_a_traceback(tmp_path):
    # The plan of this tree is about 35 KB, more than a pipe of one page and Python's 8 KiB
    # buffer hold: the run is still writing (from its worker threads) when the reader goes away.
    write_tree(FilesystemBackend(tmp_path / "src"), TreeShape(repositories=4, tags_per_repository=5, layer_bytes=(1, 10)))
    command = [sys.executable, "-m", "syncagent", "sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--dry-run"]
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    with open(read_end, "rb", buffering=0) as reader:
        with subprocess.Popen(command, cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE) as process:
            os.close(write_end)
            first = [reader.readline() for _ in range(2)]
            reader.close()
            stderr = process.stderr.read().decode()
            status = process.wait(timeout=60)
    assert all(line.startswith(b"copy blob sha256:") for line in first), first
    assert status == 141
    assert stderr == "", "no traceback and no internal error for any repository"
    assert not (tmp_path / "dst").exists()


def test_a_summary_whose_reader_leaves_exits_141_without_a_traceback(tmp_path):
    write_tree(FilesystemBackend(tmp_path / "src"), TreeShape(repositories=2, tags_per_repository=2, layer_bytes=(1, 10)))
    command = [sys.executable, "-m", "syncagent", "sync", str(tmp_path / "src"), str(tmp_path / "dst")]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.close()
        stderr = process.stderr.read().decode()
        status = process.wait(timeout=60)
    assert status == 141
    assert stderr == ""
