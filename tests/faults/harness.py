"""The fault suite's machinery: a syncagent process to signal, kill points, an invariant sampler, a campaign.

A *campaign* runs *cases*. A case starts from an empty destination and runs
``syncagent sync SRC DST --json`` one to three times, signalling each run at a
:class:`KillPoint` drawn from a seeded RNG, then once more to completion. An
:class:`InvariantSampler` checks the destination from a thread the whole time,
and once more after each signal and after the completing run. The checks of a
case are in :meth:`Campaign.case`.

How "no complete blob was copied twice" is counted: a SIGKILLed run prints no
summary, so what a run copied is read off the destination -- the blob keys
present after it that were not before. Over a case these add up to the number
of blobs the source holds (each copied once), and for a run that prints a
summary they equal its ``blobs_copied``; a completing run over a still source
copies exactly the blobs its predecessors left missing. Besides the keys, each
blob's stored copy has an identity (filesystem: inode and ctime; S3, in a
versioned bucket: its version ids; RADOS: the head's generation) that a second
write would change: every blob keeps the identity it had when first seen, and
holds one copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Protocol

from backends import Backend, BackendError, NotFound
from syncagent.sync.report import Problem
from syncagent.check.verify import verify_backend

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 300.0
SIGNAL_NAMES = {signal.SIGKILL: "SIGKILL", signal.SIGINT: "SIGINT"}
EXIT_INTERRUPTED = 130
BLOBS = "docker/registry/v2/blobs"
SETTLE_INTERVAL = 0.1
SETTLE_ATTEMPTS = 100


# -- the CLI ------------------------------------------------------------------------------


@dataclass
class CliOutcome:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def summary(self) -> dict:
        """The ``--json`` object; fails the test when stdout is not one JSON object."""
        try:
            value = json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"--json printed no JSON object ({exc}):\n{self.describe()}") from None
        assert isinstance(value, dict), self.describe()
        return value

    def assert_no_traceback(self) -> None:
        assert "Traceback" not in self.stderr, f"a traceback reached the user:\n{self.describe()}"

    def describe(self) -> str:
        return (f"$ syncagent {' '.join(self.args)}\nexit status {self.returncode}\n"
                f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}")


class SyncagentProcess:
    """``python -m syncagent ARGS`` in the background, its output in files (a full pipe could block it)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = [str(a) for a in args]
        self._stdout = tempfile.TemporaryFile(mode="w+")
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncagent", *self.args], cwd=PROJECT_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr, text=True,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    def finish(self, timeout: float = RUN_TIMEOUT) -> CliOutcome:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self._outcome().describe()}\n(killed: still running after {timeout:.0f} s)") from None
        return self._outcome()

    def _outcome(self) -> CliOutcome:
        outputs = []
        for stream in (self._stdout, self._stderr):
            stream.seek(0)
            outputs.append(stream.read())
            stream.close()
        return CliOutcome(self.args, self.process.returncode, *outputs)


def run_syncagent(*args, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT) -> CliOutcome:
    return SyncagentProcess(list(args), env).finish(timeout)


def assert_in_sync(source: str, dest: str, env: dict[str, str] | None = None) -> None:
    """``syncagent verify SRC --against DST`` reports them in sync and the destination whole."""
    outcome = run_syncagent("verify", source, "--against", dest, "--json", env=env)
    outcome.assert_no_traceback()
    result = outcome.summary()
    assert outcome.returncode == 0, outcome.describe()
    assert result["comparison"]["differs"] is False and result["destination"]["ok"] is True, outcome.describe()


# -- destinations ---------------------------------------------------------------------------


class Destination(Protocol):
    """A destination under test, seen from outside syncagent's process."""

    url: str

    def open(self) -> Backend:
        """A backend on the destination for in-process checks (the caller closes it)."""

    def objects(self) -> int:
        """How many objects under ``docker/`` are complete (visible)."""

    def writes_in_flight(self) -> frozenset[str]:
        """Large blob writes under way, or abandoned by a killed run (a part file, a multipart
        upload with parts, a RADOS writer record with chunks)."""

    def blob_copies(self) -> dict[str, tuple]:
        """Blob data key -> the identities of its stored copies (a second write changes them)."""

    def leftovers(self) -> list[str]:
        """What a run that completed after killed ones should have cleaned up, but did not."""


@dataclass(frozen=True)
class Progress:
    objects: int
    in_flight: frozenset[str]

    @classmethod
    def of(cls, dest: Destination) -> "Progress":
        return cls(dest.objects(), dest.writes_in_flight())


# -- kill points -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    """When to signal a running sync: once ``count`` more objects are complete at the destination
    (``objects``), or as soon as the ``count``-th large blob is seen in the middle of its write
    (``mid-blob``)."""

    signal: int
    trigger: str
    count: int

    def __str__(self) -> str:
        what = f"{self.count} objects in" if self.trigger == "objects" else f"large blob #{self.count} in flight"
        return f"{SIGNAL_NAMES.get(self.signal, self.signal)} at {what}"


def choose_kill_point(rng: random.Random, sig: int, objects_left: int, big_blobs_left: int, *, mid_blob: bool = False) -> KillPoint:
    """``mid_blob``: in the middle of a large blob if one is left (else half the points are)."""
    if big_blobs_left and (mid_blob or rng.random() < 0.5):
        return KillPoint(sig, "mid-blob", rng.randint(1, big_blobs_left))
    return KillPoint(sig, "objects", rng.randint(1, max(1, objects_left - 1)))


def signal_at(point: KillPoint, process: SyncagentProcess, dest: Destination, before: Progress, poll: float) -> bool:
    """Watch the destination until ``point`` is reached, then signal the process; False if it ended first.

    The polling interval only sets how close to the point the signal lands.
    """
    seen: set[str] = set()
    deadline = time.monotonic() + RUN_TIMEOUT
    while process.running():
        if point.trigger == "objects":
            reached = dest.objects() - before.objects >= point.count
        else:
            seen |= dest.writes_in_flight() - before.in_flight
            reached = len(seen) >= point.count
        if reached:
            process.send(point.signal)
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"{point} not reached within {RUN_TIMEOUT:.0f} s")
        time.sleep(poll)
    return False


# -- the invariant sampler -----------------------------------------------------------------------


class InvariantSampler:
    """Checks the invariant on a destination again and again from a thread while syncs run and die.

    A check is :func:`syncagent.check.verify.verify_backend` without the hygiene scan:
    every tag the destination lists and every revision link it holds must
    have its whole closure (manifests present and matching their digests,
    every blob present, every link holding its digest); a tag directory
    without a current link is a violation too. A destination that does not
    exist yet passes. Problems of kind ``read-failed`` (the store did not
    answer, as in an RGW outage) are kept apart as ``unanswered``; every other
    problem is a violation, kept in ``found`` with the label of its check.
    """

    def __init__(self, open_backend: Callable[[], Backend], pause: float = 0.02) -> None:
        self._backend = open_backend()
        self._pause = pause
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="invariant-sampler", daemon=True)
        self.samples = 0
        self.found: list[tuple[str, Problem]] = []
        self.unanswered: list[str] = []
        self._crash: BaseException | None = None

    @property
    def violations(self) -> list[str]:
        return [f"{when}: {problem.describe()}" for when, problem in self.found]

    def __enter__(self) -> "InvariantSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._backend.close()
        if self._crash is not None and exc_info[0] is None:
            raise AssertionError(f"the invariant sampler crashed: {self._crash!r}") from self._crash

    def check(self, when: str) -> list[Problem]:
        """One check now; returns its violations (also recorded, labelled ``when``)."""
        with self._lock:
            self.samples += 1
            try:
                next(iter(self._backend.iter_children("")), None)
            except NotFound:
                return []  # no destination yet: nothing listed, nothing to break
            except BackendError as exc:
                self.unanswered.append(f"{when}: {exc}")
                return []
            report = verify_backend(self._backend, hygiene=False, jobs=1)
            found = [p for p in report.problems if not _unanswered(p)]
            self.found += [(when, p) for p in found]
            self.unanswered += [f"{when}: {p.describe()}" for p in report.problems if _unanswered(p)]
        return found

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.check("while syncing")
                self._stop.wait(self._pause)
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__
            self._crash = exc


def _unanswered(problem: Problem) -> bool:
    """A read that failed (the store did not answer): not a violation."""
    return problem.kind == "read-failed"


# -- counting blob copies ---------------------------------------------------------------------------


class BlobLedger:
    """The destination's blob copies, snapshot after snapshot: what each run added, and the identity
    each copy had when first seen.

    A snapshot is taken once the destination has settled -- two listings
    ``SETTLE_INTERVAL`` apart agree --, so that a write a killed process had in
    flight, which its server goes on to complete (an S3 PUT whose body had
    arrived), counts for the run that sent it, not for the next.
    """

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        self.first_seen: dict[str, tuple] = {}
        self.current: dict[str, tuple] = {}
        self.advance()

    def advance(self) -> int:
        """Take the next snapshot; the number of blob keys that appeared since the last one."""
        before = self.current
        snapshot = self.dest.blob_copies()
        for _ in range(SETTLE_ATTEMPTS):
            time.sleep(SETTLE_INTERVAL)
            again = self.dest.blob_copies()
            if again == snapshot:
                break
            snapshot = again
        else:
            raise AssertionError(f"the destination's blobs kept changing for {SETTLE_ATTEMPTS * SETTLE_INTERVAL:.0f} s with no sync running")
        self.current = snapshot
        for key, identity in snapshot.items():
            self.first_seen.setdefault(key, identity)
        return len(snapshot.keys() - before.keys())


# -- a campaign --------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One sync run of a case. ``copied``: blob keys that appeared at the destination during it;
    ``reported``: its summary's ``blobs_copied`` (None when it was killed)."""

    what: str
    returncode: int
    copied: int
    reported: int | None
    mid_blob: bool = False
    pid: int | None = None


@dataclass
class Campaign:
    """Cases of kills against one kind of destination; totals for the final assertions and the summary."""

    name: str
    source: Path
    seed: int
    rng: random.Random
    big_blobs: frozenset[str]
    poll: float
    env: dict[str, str] | None = None
    kills: int = 0
    interrupts: int = 0
    mid_blob_kills: int = 0
    samples: int = 0
    cases: int = 0
    violations: list[str] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)

    def source_blobs(self) -> set[str]:
        return {str(p.relative_to(self.source)) for p in (self.source / BLOBS).rglob("data")}

    def source_objects(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.source / "docker"))

    def case(self, dest: Destination, signals: list[int], *, meanwhile: Callable[[], ContextManager] | None = None) -> None:
        """Run ``signals`` against successive syncs into ``dest``, then one to completion; check it all.

        ``meanwhile``: a context (e.g. a writer pushing to the source) entered
        for the signalled runs and left before the completing one.
        """
        self.cases += 1
        records: list[RunRecord] = []
        ledger = BlobLedger(dest)
        with InvariantSampler(dest.open) as sampler:
            with meanwhile() if meanwhile is not None else contextlib.nullcontext():
                for sig in signals:
                    records.append(self._signalled_run(dest, sig, ledger, source_changes=meanwhile is not None))
                    sampler.check(f"case {self.cases}, after {records[-1].what}")
            missing = len(self.source_blobs() - ledger.current.keys())
            outcome = run_syncagent("sync", self.source, dest.url, "--json", env=self.env)
            outcome.assert_no_traceback()
            record = RunRecord("completion", outcome.returncode, ledger.advance(), None)
            self._check_completed(outcome, record, missing)
            records.append(record)
            sampler.check(f"case {self.cases}, after completion")
        self.samples += sampler.samples
        self.violations += sampler.violations + sampler.unanswered
        self.runs += records
        self._check_case(dest, records, ledger)

    def _signalled_run(self, dest: Destination, sig: int, ledger: "BlobLedger", *, source_changes: bool) -> RunRecord:
        progress = Progress.of(dest)
        missing = None if source_changes else len(self.source_blobs() - ledger.current.keys())
        point = choose_kill_point(self.rng, sig, self.source_objects() - progress.objects,
                                  len(self.big_blobs - ledger.current.keys()),
                                  mid_blob=sig == signal.SIGKILL and not self.mid_blob_kills)  # one at least
        process = SyncagentProcess(["sync", str(self.source), dest.url, "--json"], self.env)
        signalled = signal_at(point, process, dest, progress, self.poll)
        outcome = process.finish()
        outcome.assert_no_traceback()
        # A run that had ended as the signal went out exits 0; one that Ctrl-C reached as the interpreter
        # was exiting, once its summary was out (Python restores SIGINT's default then), dies of it.
        ended = (0, -signal.SIGINT) if sig == signal.SIGINT else (0,)
        delivered = signalled and outcome.returncode not in ended
        record = RunRecord(str(point) if delivered else f"{point} (not reached: the run ended first)",
                           outcome.returncode, ledger.advance(), None, pid=process.process.pid)
        if not delivered:
            self._check_completed(outcome, record, missing, exit_statuses=ended)
        elif sig == signal.SIGKILL:
            assert outcome.returncode == -signal.SIGKILL, outcome.describe()
            record.mid_blob = bool(dest.writes_in_flight() - progress.in_flight)
            self.kills += 1
            self.mid_blob_kills += record.mid_blob
        else:
            self._check_interrupted(outcome, record)
            self.interrupts += 1
        return record

    def _check_completed(self, outcome: CliOutcome, record: RunRecord, missing: int | None,
                         exit_statuses: tuple[int, ...] = (0,)) -> None:
        """A run that ended by itself; ``missing``: the blobs it had to copy (None: the source changed meanwhile)."""
        assert outcome.returncode in exit_statuses, outcome.describe()
        summary = outcome.summary()
        assert summary["problems"] == [], outcome.describe()
        record.reported = summary["blobs_copied"]
        assert record.reported == record.copied, f"{record}\n{outcome.describe()}"
        if missing is not None:
            assert record.copied == missing, f"{record}: {missing} blobs were missing\n{outcome.describe()}"

    def _check_interrupted(self, outcome: CliOutcome, record: RunRecord) -> None:
        assert outcome.returncode == EXIT_INTERRUPTED, outcome.describe()
        if "syncagent: interrupted" in outcome.stderr:
            return  # the Ctrl-C came once the pass was over, as its summary was printed
        summary = outcome.summary()
        assert summary["interrupted"] is True, outcome.describe()
        record.reported = summary["blobs_copied"]
        assert record.reported == record.copied, f"{record}\n{outcome.describe()}"

    def _check_case(self, dest: Destination, records: list[RunRecord], ledger: "BlobLedger") -> None:
        where = f"{self.name}, case {self.cases}: {records}"
        final = ledger.current
        assert set(final) == self.source_blobs(), where
        assert sum(r.copied for r in records) == len(final), f"blobs copied more than once: {where}"
        rewritten = sorted(key for key, identity in ledger.first_seen.items() if final.get(key) != identity)
        assert rewritten == [], f"complete blobs written again: {rewritten}; {where}"
        several = sorted(key for key, identity in final.items() if len(identity) != 1)
        assert several == [], f"blobs stored more than once: {several}; {where}"
        leftovers = dest.leftovers()
        assert leftovers == [], f"{leftovers}; {where}"
        assert_in_sync(str(self.source), dest.url, self.env)

    def summary(self) -> str:
        return (f"{self.name} (seed {self.seed}): {self.cases} cases, {self.kills} SIGKILLs ({self.mid_blob_kills} mid-blob), "
                f"{self.interrupts} SIGINTs, {len(self.runs)} runs, {self.samples} invariant samples, "
                f"{len(self.violations)} violations")

