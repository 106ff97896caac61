"""scripts/migrate-registry (a wrapper of syncagent migrate): bulk passes until nothing is new, then a final go/no-go."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from backends.filesystem import FilesystemBackend
from syncagent.sync.layout import BlobData, Digest, key_of
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "migrate-registry"


def run(*args):
    env = {**os.environ, "SYNCAGENT": str(Path(sys.executable).parent / "syncagent")}
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, env=env)


def test_bulk_then_final_go(tmp_path):
    write_tree(FilesystemBackend(tmp_path / "old"), TreeShape(repositories=2, tags_per_repository=2, layer_bytes=(10, 500)))
    bulk = run(str(tmp_path / "old"), str(tmp_path / "new"))
    assert bulk.returncode == 0, bulk.stderr
    assert "== pass 2" in bulk.stdout and "in sync" in bulk.stdout
    final = run(str(tmp_path / "old"), str(tmp_path / "new"), "--final")
    assert final.returncode == 0, final.stdout + final.stderr
    assert "GO:" in final.stdout and "NO-GO" not in final.stdout


def test_final_is_no_go_when_a_tag_cannot_be_moved(tmp_path):
    old = FilesystemBackend(tmp_path / "old")
    write_tree(old, TreeShape(repositories=1, tags_per_repository=1, layer_bytes=(10, 500)))
    assert run(str(tmp_path / "old"), str(tmp_path / "new")).returncode == 0
    TreeWriter(old).image("app0", [b"late push"], tag="late")
    layer = Digest("sha256", hashlib.sha256(b"late push").hexdigest())
    (tmp_path / "old" / key_of(BlobData(layer))).write_bytes(b"bit rot")
    final = run(str(tmp_path / "old"), str(tmp_path / "new"), "--final")
    assert final.returncode == 1
    assert "NO-GO" in final.stdout and "app0:late" in final.stdout


def test_a_configuration_error_passes_on_syncagents_exit_2_and_message(tmp_path):
    write_tree(FilesystemBackend(tmp_path / "old"), TreeShape(repositories=1, tags_per_repository=1, layer_bytes=(10, 500)))
    for extra in ((), ("--final",)):
        result = run(str(tmp_path / "old"), "s3://bucket/prefix?bogus=1", *extra)
        assert result.returncode == 2, (extra, result.stderr)
        assert "does not take option(s) bogus" in result.stderr
        assert "Traceback" not in result.stderr and "NO-GO" not in result.stdout


def test_the_wrapper_passes_on_syncagents_status_messages_and_arguments(tmp_path):
    stand_in = tmp_path / "stand-in-syncagent"
    stand_in.write_text("#!/bin/sh\necho \"args: $*\"\necho 'syncagent: something went wrong' >&2\nexit 1\n")
    stand_in.chmod(0o755)
    result = subprocess.run([str(SCRIPT), str(tmp_path / "old"), str(tmp_path / "new"), "--jobs", "3"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "SYNCAGENT": str(stand_in), "MAX_PASSES": "2"})
    assert result.returncode == 1
    assert f"args: migrate {tmp_path / 'old'} {tmp_path / 'new'} --jobs 3 --passes 2" in result.stdout
    assert "something went wrong" in result.stderr and "Traceback" not in result.stderr
