"""Command line: ``syncagent sync SRC DST`` and ``syncagent verify TARGET``.

Exit status: 0 when everything was published (or verified), 1 when something
could not be (the report names each problem), 2 for usage or configuration
errors, 130 when interrupted (nothing half-published; the next run resumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from backends import BackendUnavailable, ConfigurationError, open_backend

from .engine import DEFAULT_JOBS, DEFAULT_MAX_DELETE_SHARE, Engine, SyncOptions
from .report import Report
from .verify import verify_backend

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncagent",
        description="Replicate container registry storage safely: blobs first, tags last, everything verified.",
        epilog="Backends: file:///ROOT (or a plain path: the registry's rootdirectory, holding docker/), "
        "s3://BUCKET/PREFIX?endpoint_url=..., rados://POOL/NAMESPACE?conf=..., memory://NAME. "
        "Exit status: 0 ok, 1 problems (reported), 2 usage or configuration error, 130 interrupted.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="copy what the destination lacks, in dependency order, then publish tags")
    sync.add_argument("source", metavar="SRC", help="source backend URL or path")
    sync.add_argument("dest", metavar="DST", help="destination backend URL or path")
    sync.add_argument("--repo", action="append", default=[], metavar="GLOB", help="only repositories matching GLOB (repeatable)")
    sync.add_argument("--jobs", type=_positive_int, default=DEFAULT_JOBS, metavar="N", help=f"parallel transfers (default {DEFAULT_JOBS})")
    sync.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")
    sync.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")
    deletes = sync.add_argument_group("deletes")
    deletes.add_argument("--delete", action="store_true", help="also remove what the source no longer has, in reverse dependency order")
    deletes.add_argument("--prune-blobs", action="store_true", help="with --delete, also remove blob data no repository links any more")
    deletes.add_argument(
        "--max-delete",
        type=_percentage,
        default=DEFAULT_MAX_DELETE_SHARE,
        metavar="PERCENT",
        help=f"refuse to delete more than this share of the destination's tags and revisions (default {DEFAULT_MAX_DELETE_SHARE:.0%})",
    )
    deletes.add_argument("--force", action="store_true", help="skip the delete safety checks (and adopt an unmarked destination)")

    verify = commands.add_parser("verify", help="check that every tag and revision on TARGET has its whole closure")
    verify.add_argument("target", metavar="TARGET", help="backend URL or path")
    verify.add_argument("--repo", action="append", default=[], metavar="GLOB", help="only repositories matching GLOB (repeatable)")
    verify.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")
    return parser


def _percentage(text: str) -> float:
    value = float(text.rstrip("%"))
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return value / 100


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "sync":
            return _sync(args)
        return _verify(args)
    except (ConfigurationError, BackendUnavailable) as exc:
        print(f"syncagent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("syncagent: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _sync(args) -> int:
    source = open_backend(args.source)
    dest = open_backend(args.dest)
    if args.prune_blobs and not args.delete:
        print("syncagent: --prune-blobs needs --delete", file=sys.stderr)
        return EXIT_USAGE
    options = SyncOptions(
        jobs=args.jobs,
        repositories=tuple(args.repo),
        dry_run=args.dry_run,
        delete=args.delete,
        prune_blobs=args.prune_blobs,
        max_delete_share=args.max_delete,
        force=args.force,
    )
    report = Report()
    engine = Engine(source, dest, options, report)
    show_progress = not args.json and sys.stderr.isatty()
    if args.dry_run and not args.json:
        report.subscribe(lambda event, data: event == "plan" and print(data["line"]))
    try:
        if show_progress:
            from rich.console import Console

            from .progress import TerminalProgress

            with TerminalProgress(report, Console(stderr=True)):
                engine.run()
        else:
            engine.run()
    finally:
        source.close()
        dest.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_sync_summary(report, source.url, dest.url, args.dry_run)
    return _exit_status(report)


def _verify(args) -> int:
    target = open_backend(args.target)
    import fnmatch

    select = (lambda name: any(fnmatch.fnmatchcase(name, p) for p in args.repo)) if args.repo else None
    try:
        report = verify_backend(target, repositories=select)
    finally:
        target.close()
    if args.json:
        summary = report.as_dict()
        result = {
            "ok": report.ok,
            "repositories": summary["repositories"],
            "tags_ok": summary["tags_up_to_date"],
            "revisions_ok": summary["revisions_up_to_date"],
            "problems": summary["problems"],
        }
        print(json.dumps(result, indent=2))
    else:
        c = report.counters
        verdict = "holds" if report.ok else f"is broken ({len(report.problems)} problems)"
        print(f"verify {target.url}: invariant {verdict}")
        print(f"  repositories {c['repositories']}, tags whole {c['tags_up_to_date']}, revisions whole {c['revisions_up_to_date']}")
        _print_problems(report)
    return _exit_status(report)


def _exit_status(report: Report) -> int:
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _print_sync_summary(report: Report, source: str, dest: str, dry_run: bool) -> None:
    c = report.counters
    head = "would sync" if dry_run else "synced"
    if report.interrupted:
        head = "interrupted while syncing"
    print(f"{head} {source} -> {dest} in {report.elapsed:.1f}s")
    print(f"  repositories {c['repositories']}")
    print(f"  tags         {c['tags_published']} published, {c['tags_up_to_date']} up to date")
    print(f"  revisions    {c['revisions_published']} published, {c['revisions_up_to_date']} up to date")
    print(f"  blobs        {c['blobs_copied']} copied ({_size(c['bytes_copied'])}), {c['blobs_skipped']} already present ({_size(c['bytes_skipped'])})")
    print(f"  links        {c['links_written']} written, {c['links_present']} already present")
    if c["tags_deleted"] or c["revisions_deleted"] or c["links_deleted"] or c["blobs_deleted"]:
        print(
            f"  deleted      {c['tags_deleted']} tags, {c['revisions_deleted']} revisions, "
            f"{c['links_deleted']} links, {c['blobs_deleted']} blobs ({_size(c['bytes_deleted'])})"
        )
    if report.interrupted:
        print("  nothing was left half-published; run the same command again to resume")
    _print_problems(report)


def _print_problems(report: Report) -> None:
    if not report.problems:
        return
    print(f"problems ({len(report.problems)}):")
    for problem in sorted(report.problems, key=lambda p: (p.repository or "", p.tag or "", p.kind)):
        print(f"  {problem.describe()}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


__all__ = ["main", "build_parser"]
