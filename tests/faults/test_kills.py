"""Syncs killed (SIGKILL) and interrupted (SIGINT) at random points, into a directory, S3 (RGW) and RADOS.

Each case starts from an empty destination: one or two runs are signalled at
kill points drawn from a seeded RNG (after N more objects are complete at the
destination, or while the k-th large blob is being written: a part file, a
multipart upload, RADOS chunks), then a run completes. The invariant sampler
checks the destination throughout. See tests/faults/harness.py for what a case
checks and how blob copies are counted.
"""

from __future__ import annotations

import random
import shutil
import signal
import threading

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.testing.synthetic import TreeWriter
from tests.faults.conftest import MIB, SourceTree
from tests.faults.harness import Campaign

pytestmark = pytest.mark.faults

MAX_KILLS_PER_CASE = 2
POLL = {"filesystem": 0.001, "s3": 0.01, "rados": 0.01}


def campaign(name: str, source: SourceTree, settings) -> Campaign:
    return Campaign(name, source.root, settings.seed, settings.rng(name), source.big_blobs, POLL[name.split()[0]])


def run_kills(camp: Campaign, make_destination, kills: int, sig: int = signal.SIGKILL) -> None:
    """Cases until ``kills`` signals have been delivered (a point the run outlived does not count)."""

    def delivered() -> int:
        return camp.kills if sig == signal.SIGKILL else camp.interrupts

    for _ in range(3 * kills):
        if delivered() >= kills:
            break
        count = camp.rng.randint(1, min(MAX_KILLS_PER_CASE, kills - delivered()))
        camp.case(make_destination(), [sig] * count)
    print(camp.summary())
    assert camp.violations == [], f"{camp.summary()}\n" + "\n".join(camp.violations[:20])
    assert delivered() >= kills, camp.summary()


def test_sigkill_filesystem_to_filesystem(source_tree, fs_destinations, fault_settings):
    camp = campaign("filesystem", source_tree, fault_settings)
    run_kills(camp, fs_destinations, fault_settings.kills_for("filesystem"))
    assert camp.mid_blob_kills >= 1, camp.summary()


@pytest.mark.ceph
def test_sigkill_filesystem_to_s3_multipart(source_tree, s3_destinations, fault_settings):
    camp = campaign("s3", source_tree, fault_settings)
    run_kills(camp, s3_destinations, fault_settings.kills_for("s3"))
    assert camp.mid_blob_kills >= 1, camp.summary()


@pytest.mark.ceph
def test_sigkill_filesystem_to_rados_chunked(source_tree, rados_destinations, fault_settings):
    camp = campaign("rados", source_tree, fault_settings)
    run_kills(camp, rados_destinations, fault_settings.kills_for("rados"))
    assert camp.mid_blob_kills >= 1, camp.summary()


def test_ctrl_c_exits_130_and_the_next_run_resumes(source_tree, fs_destinations, fault_settings):
    camp = campaign("filesystem sigint", source_tree, fault_settings)
    run_kills(camp, fs_destinations, fault_settings.interrupts, signal.SIGINT)


class SourceWriter:
    """Pushes to the source while syncs run, in a registry's order -- blob data, layer links, revision
    link, then the tag's current link and history link (syncagent.testing.synthetic.TreeWriter) --: new tags,
    and existing tags moved to new images."""

    def __init__(self, root, seed: str, repositories: list[str]) -> None:
        self._backend = FilesystemBackend(root)
        self._writer = TreeWriter(self._backend)
        self._rng = random.Random(seed)
        self._repositories = repositories
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._push, name="source-writer", daemon=True)
        self.pushes = 0
        self.failure: BaseException | None = None

    def __enter__(self) -> "SourceWriter":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._backend.close()
        if self.failure is not None and exc_info[0] is None:
            raise AssertionError(f"the source writer failed: {self.failure!r}") from self.failure

    def _push(self) -> None:
        try:
            while not self._stop.is_set():
                repository = self._rng.choice(self._repositories)
                tag = self._rng.choice(["v0", "v1", f"w{self.pushes}"])  # moved, or new
                layers = [self._rng.randbytes(self._rng.randint(512, 256 * 1024)) for _ in range(2)]
                if self._rng.random() < 0.2:
                    layers.append(self._rng.randbytes(2 * MIB))
                self._writer.image(repository, layers, tag=tag)
                self.pushes += 1
                self._stop.wait(0.01)  # a steady trickle of pushes, not a flood
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__
            self.failure = exc


def test_source_changing_underneath_never_shows_a_tag_the_destination_cannot_serve(tmp_path, source_tree, fs_destinations, fault_settings):
    root = tmp_path / "live-source"
    shutil.copytree(source_tree.root, root)
    camp = campaign("filesystem live source", SourceTree(root, source_tree.big_blobs), fault_settings)
    writers: list[SourceWriter] = []

    def pushing() -> SourceWriter:
        repositories = ["app0", "team1/app1", "big/layers", f"pushed/case{camp.cases}"]
        writers.append(SourceWriter(root, f"{fault_settings.seed}:writer:{camp.cases}", repositories))
        return writers[-1]

    kills = max(2, fault_settings.kills_for("filesystem") // 2)
    for _ in range(3 * kills):
        if camp.kills >= kills:
            break
        camp.case(fs_destinations(), [signal.SIGKILL] * camp.rng.randint(1, MAX_KILLS_PER_CASE), meanwhile=pushing)
    pushes = [w.pushes for w in writers]
    print(f"{camp.summary()}; pushes at the source during each case's signalled runs: {pushes}")
    assert camp.violations == [], f"{camp.summary()}\n" + "\n".join(camp.violations[:20])
    assert camp.kills >= kills and all(pushes), camp.summary()
