"""``syncagent migrate SRC DST [--final]``: a one-shot migration with a safe cut-over (docs/migration.md).

Bulk phase (the registry stays live): the plan first -- repositories, tags,
revisions, blobs and bytes the destination lacks, read from both sides
without writing -- then sync passes until one finds nothing new (at most
``--passes``), with progress throughout and an estimate of the time left once
the first seconds of copying have measured the rate; then the comparison of
SRC with DST. ``--final`` (after the source registry was made read-only): one
more pass with deletes, then the deep comparison, and GO or NO-GO.

Every phase writes a Markdown report (``--report FILE``): what was copied,
how long it took, what was left and why. Exit status: 0 bulk done or GO,
1 problems or NO-GO, 2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from backends import Backend

from ..check.compare import Comparison, compare
from ..check.verify import verify_backend
from ..sync.engine import DEFAULT_JOBS, Engine, SyncOptions
from ..sync.report import Report

EXIT_OK, EXIT_PROBLEMS, EXIT_INTERRUPTED = 0, 1, 130
DEFAULT_PASSES = 5
PROBE_SECONDS = 5.0
QUIET_REPORT_EVERY = 30.0


def add_migrate_parser(commands, positive_int: Callable[[str], int], positive_float: Callable[[str], float]) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="one-shot migration with a safe cut-over: the plan, sync passes until nothing is new, the comparison; "
        "--final after the source was made read-only: deletes, deep comparison, GO or NO-GO (docs/migration.md)",
    )
    migrate.add_argument("source", metavar="SRC", help="the registry's storage now (backend URL or path)")
    migrate.add_argument("dest", metavar="DST", help="where it moves to")
    migrate.add_argument("--final", action="store_true", help="the cut-over: run it once the source registry is read-only")
    migrate.add_argument("--passes", type=positive_int, default=DEFAULT_PASSES, metavar="N",
                         help=f"bulk phase: at most N sync passes (default {DEFAULT_PASSES})")
    migrate.add_argument("--report", metavar="FILE", help="write the migration report (Markdown) to FILE")
    migrate.add_argument("--jobs", type=positive_int, default=DEFAULT_JOBS, metavar="N", help=f"parallel transfers (default {DEFAULT_JOBS})")
    migrate.add_argument("--repo", action="append", default=[], metavar="GLOB", help="only repositories matching GLOB (repeatable)")
    migrate.add_argument("--max-requests-per-second", type=positive_float, metavar="N",
                         help="at most N requests a second to each backend")


@dataclass
class PassSummary:
    name: str
    report: Report

    def row(self) -> str:
        c = self.report.counters
        return (f"| {self.name} | {c['tags_published']} | {c['revisions_published']} | {c['blobs_copied']} | "
                f"{_size(c['bytes_copied'])} | {c['tags_deleted']} | {self.report.elapsed:.1f} s | {len(self.report.problems)} |")


@dataclass
class Migration:
    """One run of ``syncagent migrate``: its passes, what it found, and the report it writes."""

    source: Backend
    dest: Backend
    final: bool
    jobs: int = DEFAULT_JOBS
    repositories: tuple[str, ...] = ()
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    started: float = field(default_factory=time.time)
    plan: Report | None = None
    passes: list[PassSummary] = field(default_factory=list)
    comparison: Comparison | None = None
    dest_check: Report | None = None
    verdict: str | None = None
    interrupted: bool = False

    # --- phases ------------------------------------------------------------------------------------

    def run_bulk(self, max_passes: int) -> int:
        self.plan = self._plan()
        for number in range(1, max_passes + 1):
            summary = self._pass(f"pass {number}")
            if summary.report.interrupted:
                return EXIT_INTERRUPTED
            c = summary.report.counters
            if not (c["tags_published"] or c["revisions_published"] or c["blobs_copied"]):
                break
        self._compare(deep=False)
        ok = not self._comparison_problems() and not any(p.report.problems for p in self.passes[-1:])
        self._say(f"bulk phase done: {self._differences()}")
        self._say("next: make the source registry read-only (storage.maintenance.readonly.enabled: true), restart it, "
                  "then run this command again with --final")
        return EXIT_OK if ok else EXIT_PROBLEMS

    def run_final(self) -> int:
        self.plan = self._plan()
        summary = self._pass("final pass (with deletes)", delete=True)
        if summary.report.interrupted:
            return EXIT_INTERRUPTED
        self._compare(deep=True)
        go = summary.report.ok and not self._comparison_problems()
        if go:
            self.verdict = "GO"
            self._say(f"GO: {self.dest.url} holds every tag and revision of {self.source.url}, whole and verified; "
                      "switch the registry to it")
        else:
            self.verdict = "NO-GO"
            self._say(f"NO-GO: {self._differences()}; fix the problems named above and run --final again")
        return EXIT_OK if go else EXIT_PROBLEMS

    def _plan(self) -> Report:
        """What the destination lacks, read from both sides (a dry run: nothing is written)."""
        self._say(f"== plan: {self.source.url} -> {self.dest.url}")
        report = Engine(self.source, self.dest, self._options(dry_run=True)).run()
        c = report.counters
        self._say(f"   {c['repositories']} repositories: {c['tags_published']} tags and {c['revisions_published']} "
                  f"revisions to publish ({c['tags_up_to_date']} tags up to date), at most {c['blobs_copied']} blobs "
                  f"({_size(c['bytes_copied'])}) to copy")
        for problem in report.problems[:10]:
            self._say(f"   problem: {problem.describe()}")
        return report

    def _pass(self, name: str, *, delete: bool = False) -> PassSummary:
        self._say(f"== {name}: syncagent sync {self.source.url} {self.dest.url}" + (" --delete" if delete else ""))
        engine = Engine(self.source, self.dest, self._options(delete=delete))
        expected = self.plan.counters["bytes_copied"] if self.plan is not None and not self.passes else 0
        with _Progress(engine.report, expected, self.err):
            try:
                engine.run()
            except KeyboardInterrupt:  # a second Ctrl-C while the pass winds down
                engine.report.interrupted = True
        summary = PassSummary(name, engine.report)
        self.passes.append(summary)
        c = engine.report.counters
        self._say(f"   {c['tags_published']} tags, {c['revisions_published']} revisions, {c['blobs_copied']} blobs "
                  f"({_size(c['bytes_copied'])}) in {engine.report.elapsed:.1f} s; {len(engine.report.problems)} problems")
        for problem in engine.report.problems[:20]:
            self._say(f"   problem: {problem.describe()}")
        if engine.report.interrupted:
            self.interrupted = True
            self._say("   interrupted: nothing was left half-published; run the same command again to resume")
        return summary

    def _compare(self, *, deep: bool) -> None:
        self._say(f"== comparing {self.source.url} with {self.dest.url}" + (" (every blob re-hashed)" if deep else ""))
        select = (lambda name: any(fnmatch.fnmatchcase(name, p) for p in self.repositories)) if self.repositories else None
        source_problems = Report()
        self.comparison = compare(self.source, self.dest, source_problems, repositories=select)
        self.dest_check = verify_backend(self.dest, repositories=select, deep=deep, jobs=self.jobs)
        self._say(f"   {self._differences()}")
        if self.comparison.differs:
            self._say(self.comparison.table())

    def _options(self, *, dry_run: bool = False, delete: bool = False) -> SyncOptions:
        return SyncOptions(jobs=self.jobs, repositories=self.repositories, dry_run=dry_run, delete=delete)

    def _comparison_problems(self) -> bool:
        return bool((self.comparison is not None and self.comparison.differs)
                    or (self.dest_check is not None and not self.dest_check.ok))

    def _differences(self) -> str:
        parts = []
        if self.comparison is not None:
            totals = self.comparison.totals()
            missing = {k: v for k, v in totals.items() if v and k != "extra_revisions"}
            parts.append("in sync" if not self.comparison.differs else
                         ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in missing.items()))
        if self.dest_check is not None and not self.dest_check.ok:
            parts.append(f"{len(self.dest_check.problems)} problems on the destination")
        return "; ".join(parts) or "not compared"

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # --- the report --------------------------------------------------------------------------------

    def markdown(self) -> str:
        phase = "cut-over (--final)" if self.final else "bulk phase"
        finished = time.time()
        lines = [
            f"# Registry migration: {phase}",
            "",
            f"- source: `{self.source.url}`",
            f"- destination: `{self.dest.url}`",
            f"- started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.started))}, "
            f"took {finished - self.started:.0f} s",
        ]
        if self.verdict:
            lines.append(f"- verdict: **{self.verdict}**")
        if self.interrupted:
            lines.append("- interrupted: nothing was left half-published; run the same command again to resume")
        if self.plan is not None:
            c = self.plan.counters
            lines += ["", "## Plan", "",
                      f"{c['repositories']} repositories; {c['tags_published']} tags and {c['revisions_published']} revisions "
                      f"to publish, {c['tags_up_to_date']} tags already up to date; at most {c['blobs_copied']} blobs "
                      f"({_size(c['bytes_copied'])}) to copy."]
        lines += ["", "## Passes", "",
                  "| pass | tags | revisions | blobs | bytes | tags deleted | time | problems |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [summary.row() for summary in self.passes]
        lines += ["", "## Comparison", "", self._differences()]
        if self.comparison is not None and self.comparison.differs:
            lines += ["", "```", self.comparison.table(), "```"]
        problems = [p for summary in self.passes for p in summary.report.problems]
        if self.dest_check is not None:
            problems += self.dest_check.problems
        lines += ["", "## What was left, and why", ""]
        if problems:
            lines += [_problem_line(p) for p in problems[:200]]
            if len(problems) > 200:
                lines.append(f"- ... and {len(problems) - 200} more (run `syncagent verify SRC --against DST --json`)")
        else:
            lines.append("Nothing: every tag and revision of the source is on the destination, whole.")
        return "\n".join(lines) + "\n"


class _Progress:
    """Progress while a pass runs: a bar on a terminal (rich), else a line every 30 s; after the first
    seconds of copying, the estimate of the time left from the measured rate."""

    def __init__(self, report: Report, expected_bytes: int, err: TextIO) -> None:
        self.report = report
        self.expected = expected_bytes
        self.err = err
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="migrate-progress", daemon=True)
        self._terminal = None

    def __enter__(self) -> "_Progress":
        if self.err.isatty():
            from rich.console import Console

            from .progress import TerminalProgress

            self._terminal = TerminalProgress(self.report, Console(file=self.err))
            self._terminal.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._terminal is not None:
            self._terminal.__exit__(*exc)

    def _watch(self) -> None:
        started = time.monotonic()
        estimated = False
        next_line = started + QUIET_REPORT_EVERY
        while not self._stop.wait(1.0):
            now = time.monotonic()
            copied = self.report.counters["bytes_copied"]
            if not estimated and self.expected and now - started >= PROBE_SECONDS and copied:
                estimated = True
                rate = copied / (now - started)
                left = max(0, self.expected - copied) / rate if rate else 0
                print(f"   rate {_size(int(rate))}/s over the first {now - started:.0f} s: about {_duration(left)} left "
                      f"for {_size(self.expected)}", file=self.err, flush=True)
            if self._terminal is None and now >= next_line:
                next_line = now + QUIET_REPORT_EVERY
                c = self.report.counters
                print(f"   ... {c['tags_published']} tags, {c['blobs_copied']} blobs ({_size(copied)}) after "
                      f"{now - started:.0f} s", file=self.err, flush=True)


def run_migrate(args: argparse.Namespace, source: Backend, dest: Backend) -> int:
    migration = Migration(source, dest, final=args.final, jobs=args.jobs, repositories=tuple(args.repo))
    try:
        status = migration.run_final() if args.final else migration.run_bulk(args.passes)
    except KeyboardInterrupt:
        migration.interrupted = True
        status = EXIT_INTERRUPTED
    finally:
        if args.report:
            Path(args.report).write_text(migration.markdown())
            print(f"report: {args.report}", file=migration.out)
    return EXIT_INTERRUPTED if migration.interrupted else status


def _problem_line(problem) -> str:
    return f"- `{problem.kind}` {problem.where}: {problem.reason}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["Migration", "add_migrate_parser", "run_migrate"]
