"""Command line: ``syncagent sync SRC DST`` and ``syncagent verify TARGET``.

Exit status: 0 when everything was published (or verified), 1 when something
could not be (the report names each problem), 2 for usage or configuration
errors, 130 when interrupted (nothing half-published; the next run resumes).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import sys
import threading

from backends import BackendError, BackendUnavailable, ConfigurationError, open_for_run

from ..sync.engine import DEFAULT_EXTERNAL_TIMEOUT, DEFAULT_JOBS, DEFAULT_MAX_DELETE_SHARE, Engine, SyncOptions
from ..sync.layout import Digest
from ..sync.report import Report

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141
DEFAULT_UPLOAD_AGE, DEFAULT_UPLOAD_AGE_TEXT = 24 * 3600.0, "24h"


def build_parser(argv_command: str | None = "watch") -> argparse.ArgumentParser:
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
    _add_shard_option(sync)
    sync.add_argument("--jobs", type=_positive_int, default=DEFAULT_JOBS, metavar="N", help=f"parallel transfers (default {DEFAULT_JOBS})")
    sync.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")
    sync.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")
    sync.add_argument("--max-requests-per-second", type=_positive_float, metavar="N",
                        help="at most N requests a second to each backend (a gateway shared with other users)")
    supplement = sync.add_argument_group("supplement to bucket replication (docs/supplement.md)")
    supplement.add_argument(
        "--blobs", choices=("copy", "external"), default="copy",
        help="copy blob data (default), or 'external': the storage's own replication (S3 replication, Ceph RGW multisite) "
        "brings it, and each link is written once the blobs it needs have arrived at DST",
    )
    supplement.add_argument("--external-timeout", type=_duration, default=DEFAULT_EXTERNAL_TIMEOUT, metavar="DURATION",
                            help="with --blobs external: how long to wait for a blob before its tags are reported "
                            "(blob-not-replicated) (default 15m)")
    supplement.add_argument("--copy-after", type=_duration, metavar="DURATION",
                            help="with --blobs external: copy a blob still missing after DURATION (objects the replication "
                            "rule does not cover: written before it existed)")
    deletes = sync.add_argument_group("deletes")
    deletes.add_argument("--delete", action="store_true", help="also remove what the source no longer has, in reverse dependency order")
    deletes.add_argument("--prune-blobs", action="store_true", help="with --delete, also remove blob data no repository links any more")
    deletes.add_argument(
        "--max-delete",
        type=_percentage,
        default=DEFAULT_MAX_DELETE_SHARE,
        metavar="PERCENT",
        help=f"refuse to delete more than this share of the destination's tags and revisions (default {DEFAULT_MAX_DELETE_SHARE * 100:.0f}%%)",
    )
    deletes.add_argument("--force", action="store_true", help="skip the delete safety checks (and adopt an unmarked destination)")
    _add_registry_check_options(sync, "DST")

    verify = commands.add_parser(
        "verify",
        help="check the invariant on TARGET (every tag and revision has its whole closure), report damage and leftovers; "
        "with --against DST, compare TARGET as the source with DST",
    )
    verify.add_argument("target", metavar="TARGET", help="backend URL or path (the source, with --against)")
    verify.add_argument("--against", metavar="DST", help="compare with this destination: missing, stale and extra tags, missing revisions")
    verify.add_argument("--deep", action="store_true", help="re-hash all blob data and report any that does not match its digest")
    verify.add_argument("--repair", action="store_true", help="with --against: re-sync what is missing, stale or broken on DST, then check again")
    verify.add_argument(
        "--abort-uploads-older-than",
        type=_duration,
        metavar="AGE",
        help="with --repair: abort DST's incomplete multipart uploads started at least AGE ago (e.g. 30m, 1h, 2d; 0: all); "
        f"younger ones may be a live sync's (default {DEFAULT_UPLOAD_AGE_TEXT})",
    )
    verify.add_argument("--jobs", type=_positive_int, default=DEFAULT_JOBS, metavar="N", help=f"parallel reads (default {DEFAULT_JOBS})")
    verify.add_argument("--repo", action="append", default=[], metavar="GLOB", help="only repositories matching GLOB (repeatable)")
    _add_shard_option(verify)
    verify.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")
    verify.add_argument("--max-requests-per-second", type=_positive_float, metavar="N",
                        help="at most N requests a second to each backend (a gateway shared with other users)")
    _add_registry_check_options(verify, "TARGET (DST with --against)")
    from .migrate import add_migrate_parser

    add_migrate_parser(commands, _positive_int, _positive_float)
    if argv_command == "watch":
        from .watch import add_watch_parser

        add_watch_parser(commands)
    else:  # a stand-in, so that --help lists it; the real parser loads only for `watch`
        commands.add_parser("watch", help="the sidecar: follow a primary registry within seconds (see docs/sidecar.md)", add_help=False)
    return parser


def _add_shard_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard", type=_shard, metavar="I/N",
                        help="only the repositories of shard I of N (numbered from 0; a stable hash of each name, docs/scale.md)")


def _add_registry_check_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("registry check")
    group.add_argument(
        "--check-registry",
        metavar="URL",
        help=f"ask the registry that serves {what} over HTTP whether it serves each tag whole "
        "(manifest with every Accept type, index children, HEAD of every blob); failures are 'not-servable' problems",
    )
    group.add_argument("--registry-token-issuer", metavar="ISS", help="for an auth: token registry: its token issuer")
    group.add_argument("--registry-token-service", metavar="SVC", help="its token service (the tokens' audience)")
    group.add_argument("--registry-token-key", metavar="FILE", help="a PEM private key (RSA or EC P-256) whose certificate is in its rootcertbundle")
    group.add_argument("--registry-token-cert", metavar="FILE", help="the PEM certificate of that key")


def _registry_checker(args):
    """A RegistryChecker from the options, or None; raises ConfigurationError (exit 2).

    registry_check (requests, PyJWT, cryptography) is imported only when asked for.
    """
    if not (args.check_registry or args.registry_token_issuer or args.registry_token_service
            or args.registry_token_key or args.registry_token_cert):
        return None
    from ..check.registry import TokenConfigurationError, checker_from_settings

    try:
        return checker_from_settings(args)
    except TokenConfigurationError as exc:
        raise ConfigurationError(str(exc)) from None


def _command_of(arguments: list[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is not an option)."""
    return next((a for a in arguments if not a.startswith("-")), None)


def _percentage(text: str) -> float:
    value = float(text.rstrip("%"))
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 0 and 100")
    return value / 100


def _duration(text: str) -> float:
    from ..sidecar.config import ConfigError, parse_duration

    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _shard(text: str):
    from ..sync.shard import InvalidShard, Shard

    try:
        return Shard.parse(text)
    except InvalidShard as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_of(arguments))
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "watch":
            from .watch import run_watch

            return run_watch(args)
        if args.command == "migrate":
            status = _migrate(args)
        else:
            status = _sync(args) if args.command == "sync" else _verify(args)
        sys.stdout.flush()  # here, not at exit, where a reader that left would cost a traceback
        return status
    except (ConfigurationError, BackendUnavailable) as exc:
        print(f"syncagent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("syncagent: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of stdout left (``| head``): exit 141, as a shell reports SIGPIPE, and send what
    is still buffered to /dev/null, so that flushing it at exit raises nothing."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


class _PlanPrinter:
    """Prints a dry run's plan lines on stdout as the engine's worker threads announce them.

    When the reader of stdout goes away (``| head``), the first write that meets
    the broken pipe cancels the engine: the run stops cleanly, and no worker
    meets the broken pipe (each would report an internal error).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reader_gone = False
        self._lock = threading.Lock()

    def __call__(self, event: str, data: dict) -> None:
        if event != "plan":
            return
        with self._lock:
            if self.reader_gone:
                return
            try:
                sys.stdout.write(data["line"] + "\n")
            except BrokenPipeError:
                self.reader_gone = True
                self.engine.cancel()


def _migrate(args) -> int:
    from ..sync.discovery import require_registry
    from .migrate import run_migrate

    source = open_for_run(args.source, max_requests_per_second=args.max_requests_per_second)
    dest = open_for_run(args.dest, max_requests_per_second=args.max_requests_per_second)
    try:
        require_registry(source)
        return run_migrate(args, source, dest)
    finally:
        source.close()
        dest.close()


def _sync(args) -> int:
    from ..sync.discovery import require_registry

    source = open_for_run(args.source, max_requests_per_second=args.max_requests_per_second)
    require_registry(source)
    dest = open_for_run(args.dest, max_requests_per_second=args.max_requests_per_second)
    if args.prune_blobs and not args.delete:
        print("syncagent: --prune-blobs needs --delete", file=sys.stderr)
        return EXIT_USAGE
    if args.prune_blobs and args.shard is not None:
        print("syncagent: --prune-blobs does not go with --shard: only a pass over every repository may decide that "
              "no repository links a blob any more (run one unsharded sync --delete --prune-blobs for that)", file=sys.stderr)
        return EXIT_USAGE
    if args.copy_after is not None and args.blobs != "external":
        print("syncagent: --copy-after needs --blobs external", file=sys.stderr)
        return EXIT_USAGE
    if args.prune_blobs and args.blobs == "external":
        print("syncagent: --prune-blobs does not go with --blobs external: the storage's replication owns blob data "
              "at DST (it deletes what the primary's garbage collection deletes)", file=sys.stderr)
        return EXIT_USAGE
    options = SyncOptions(
        jobs=args.jobs,
        repositories=tuple(args.repo),
        dry_run=args.dry_run,
        delete=args.delete,
        prune_blobs=args.prune_blobs,
        max_delete_share=args.max_delete,
        force=args.force,
        blobs=args.blobs,
        copy_after=args.copy_after,
        external_timeout=args.external_timeout,
        shard=args.shard,
    )
    report = Report()
    checker = _registry_checker(args)
    if checker is not None and not args.dry_run:
        from ..check.registry import check_published_tags

        check_published_tags(report, checker)
    advise = args.blobs == "external" and args.copy_after is None and not args.dry_run
    if advise:
        _advise_first_run(source, dest, report)
    engine = Engine(source, dest, options, report)
    show_progress = not args.json and sys.stderr.isatty()
    printer = None
    if args.dry_run and not args.json:
        printer = _PlanPrinter(engine)
        report.subscribe(printer)
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
    if printer is not None and printer.reader_gone:
        return _reader_gone()
    if advise and not report.interrupted:
        from ..sync.replication import copy_after_advice

        advice = copy_after_advice(report.problems, first_run=False)
        if advice is not None:
            report.findings[:] = [f for f in report.findings if f.kind != advice.kind] + [advice]
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_sync_summary(report, source.url, dest.url, args.dry_run)
    return _exit_status(report)


def _advise_first_run(source, dest, report: Report) -> None:
    """--blobs external into a destination without blob data (a source with some): say now, before tags
    wait for blobs the replication may never bring, that --copy-after exists (stderr and a finding)."""
    from ..sync.replication import copy_after_advice, holds_blobs

    advice = copy_after_advice([], first_run=not holds_blobs(dest) and holds_blobs(source))
    if advice is not None:
        print(f"syncagent: {advice.reason}", file=sys.stderr)
        report.add_finding(advice)


def _verify(args) -> int:
    from ..check.verify import verify_backend

    if args.repair and not args.against:
        print("syncagent: --repair needs --against DST", file=sys.stderr)
        return EXIT_USAGE
    if args.abort_uploads_older_than is not None and not args.repair:
        print("syncagent: --abort-uploads-older-than needs --repair", file=sys.stderr)
        return EXIT_USAGE
    select = _selector(args.repo, args.shard)
    checker = _registry_checker(args)
    target = open_for_run(args.target, max_requests_per_second=args.max_requests_per_second)
    dest = open_for_run(args.against, max_requests_per_second=args.max_requests_per_second) if args.against else None
    try:
        if dest is None:
            report = verify_backend(target, repositories=select, deep=args.deep, jobs=args.jobs, require_registry=True)
            if checker is not None:
                from ..check.registry import check_backend_tags

                check_backend_tags(target, checker, report, repositories=select)
            _print_verify(args, report, target.url)
            return _exit_status(report)
        return _verify_against(args, target, dest, select, checker)
    finally:
        target.close()
        if dest is not None:
            dest.close()


def _verify_against(args, source, dest, select, checker=None) -> int:
    from ..check.compare import compare
    from ..sync.discovery import require_registry
    from ..check.verify import verify_backend

    require_registry(source)

    def check_dest(comparison) -> Report:
        report = verify_backend(dest, repositories=select, deep=args.deep, jobs=args.jobs)
        if checker is not None:
            from ..check.registry import check_backend_tags

            check_backend_tags(dest, checker, report, repositories=select)
        _check_replica_of(source, dest, report, comparison)
        return report

    source_report = Report()
    comparison = compare(source, dest, source_report, repositories=select)
    dest_report = check_dest(comparison)
    before = comparison
    result: dict = {"comparison": comparison.as_dict(), "destination": _verify_summary(dest_report)}
    if source_report.problems:
        result["source_problems"] = [p.as_dict() for p in source_report.problems]
    repaired = cleaned = None
    if args.repair and (comparison.differs or not dest_report.ok):
        repaired = _repair(source, dest, comparison, dest_report, args.jobs)
        result["repair"] = repaired.as_dict()
    if args.repair and dest_report.counters.get("incomplete_uploads"):
        cleaned = _abort_uploads(dest, args)
        result["uploads"] = {k: cleaned.counters.get(k, 0) for k in ("uploads_aborted", "upload_bytes_freed", "uploads_kept")}
        result["uploads"]["problems"] = [p.as_dict() for p in cleaned.problems]
    if repaired is not None or cleaned is not None:
        comparison = compare(source, dest, Report(), repositories=select)
        dest_report = check_dest(comparison)
        result["after_repair"] = {"comparison": comparison.as_dict(), "destination": _verify_summary(dest_report)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"compare {source.url} -> {dest.url}: {_differences(before)}")
        if before.differs:
            print(before.table())
        if source_report.problems:
            print(f"source problems ({len(source_report.problems)}):")
            for problem in source_report.problems:
                print(f"  {problem.describe()}")
        if repaired is not None:
            c = repaired.counters
            print(
                f"repair: {c['tags_published']} tags published, {c.get('revisions_repaired', 0) + c['revisions_published']} revisions written, "
                f"{c['blobs_copied']} blobs copied ({_size(c['bytes_copied'])}); {len(repaired.problems)} problems"
            )
        if cleaned is not None:
            c = cleaned.counters
            print(
                f"incomplete uploads: {c.get('uploads_aborted', 0)} aborted ({_size(c.get('upload_bytes_freed', 0))}), "
                f"{c.get('uploads_kept', 0)} kept (younger than {_age_text(_upload_age(args))}, or a registry's own)"
            )
            for problem in cleaned.problems:
                print(f"  {problem.describe()}")
        if repaired is not None or cleaned is not None:
            print(f"after repair: {_differences(comparison)}")
            if comparison.differs:
                print(comparison.table())
        _print_verify(args, dest_report, dest.url, heading="destination")
    differs = comparison.differs or not dest_report.ok or any(r is not None and not r.ok for r in (repaired, cleaned))
    return EXIT_PROBLEMS if differs else EXIT_OK


def _check_replica_of(source, dest, report: Report, comparison) -> None:
    """What a replica kept by the storage's own replication (--blobs external) can show: broken tags and
    revisions the source deleted and collected (deleted-at-source), and a replication rule that carries
    more than blobs/ (replication-too-wide)."""
    from ..check.deleted import classify_deleted_at_source
    from ..sync.replication import replication_too_wide

    classify_deleted_at_source(source, dest, report, comparison)
    try:
        too_wide = replication_too_wide(dest)
    except BackendError as exc:
        logging.getLogger(__name__).warning("cannot look for the replication canary on %s: %s", dest.url, exc)
        return
    if too_wide is not None:
        report.add_problem(too_wide)


def _selector(patterns: list[str], shard):
    """Which repositories a verify looks at: None for all; else those ``patterns`` match, of ``shard``."""
    if not patterns and shard is None:
        return None
    return lambda name: ((shard is None or shard.owns(name))
                         and (not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)))


def _upload_age(args) -> float:
    return DEFAULT_UPLOAD_AGE if args.abort_uploads_older_than is None else args.abort_uploads_older_than


def _abort_uploads(dest, args) -> Report:
    from ..check.verify import abort_incomplete_uploads

    report = Report()
    abort_incomplete_uploads(dest, _upload_age(args), report)
    return report


def _age_text(seconds: float) -> str:
    for unit, length in (("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds / length:.0f}{unit}"
    return f"{seconds:.0f}s"


def _differences(comparison) -> str:
    if not comparison.differs:
        return "in sync"
    totals = comparison.totals()
    return f"{sum(totals[k] for k in ('missing_tags', 'stale_tags', 'extra_tags', 'missing_revisions', 'missing_history'))} differences"


def _repair(source, dest, comparison, dest_report: Report, jobs: int) -> Report:
    """Re-sync the repositories the comparison or the check found wanting, re-reading existing closures."""
    affected = {name for name, d in comparison.repositories.items() if d.differs}
    affected |= {p.repository for p in dest_report.problems if p.repository}
    corrupt = frozenset(Digest.parse(p.digest) for p in dest_report.problems
                        if p.kind in ("digest-mismatch", "size-mismatch") and p.digest)
    if corrupt:
        affected |= set(comparison.repositories)  # a corrupt blob names no repository: any may need it
    options = SyncOptions(jobs=jobs, repositories=tuple(sorted(affected)), verify_existing=True, recopy=corrupt)
    return Engine(source, dest, options).run()


def _verify_summary(report: Report) -> dict:
    summary = report.as_dict()
    keys = ("repositories", "tags_whole", "revisions_whole", "blobs", "unlinked_blobs", "reclaimable_bytes",
            "abandoned_uploads", "upload_bytes", "temporary_files", "incomplete_uploads", "incomplete_upload_bytes",
            "blobs_hashed", "bytes_hashed", "tags_checked")
    result = {"ok": report.ok, **{k: summary.get(k, 0) for k in keys}, "problems": summary["problems"]}
    result["findings"] = summary.get("findings", [])
    return result


def _print_verify(args, report: Report, url: str, heading: str = "verify") -> None:
    if args.json and heading == "verify":
        print(json.dumps(_verify_summary(report), indent=2))
        return
    c = report.counters
    storage = [p for p in report.problems if p.kind != "not-servable"]
    verdict = "holds" if not storage else f"is broken ({len(storage)} problems)"
    print(f"{heading} {url}: invariant {verdict}")
    if c.get("tags_checked"):
        refused = len(report.problems) - len(storage)
        print(f"  registry asked for {c['tags_checked']} tags: {'all served' if not refused else f'{refused} not servable'}")
    print(f"  repositories {c.get('repositories', 0)}, tags whole {c.get('tags_whole', 0)}, revisions whole {c.get('revisions_whole', 0)}")
    if args.deep:
        print(f"  blobs re-hashed {c.get('blobs_hashed', 0)} ({_size(c.get('bytes_hashed', 0))})")
    if c.get("unlinked_blobs"):
        print(f"  unlinked blobs {c['unlinked_blobs']} ({_size(c['reclaimable_bytes'])} reclaimable with sync --delete --prune-blobs)")
    if c.get("abandoned_uploads"):
        print(f"  abandoned uploads {c['abandoned_uploads']} objects ({_size(c['upload_bytes'])})")
    if c.get("temporary_files"):
        print(f"  leftover temporary files {c['temporary_files']}")
    if c.get("incomplete_uploads"):
        print(f"  incomplete uploads {c['incomplete_uploads']} ({_size(c['incomplete_upload_bytes'])}; "
              f"verify SRC --against DST --repair aborts those older than {DEFAULT_UPLOAD_AGE_TEXT})")
    _print_problems(report)


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
    history = f", {c['history_repaired']} history links written after an unfinished pass" if c["history_repaired"] else ""
    print(f"  tags         {c['tags_published']} published, {c['tags_up_to_date']} up to date{history}")
    print(f"  revisions    {c['revisions_published']} published, {c['revisions_up_to_date']} up to date")
    print(f"  blobs        {c['blobs_copied']} copied ({_size(c['bytes_copied'])}), {c['blobs_skipped']} already present ({_size(c['bytes_skipped'])})")
    print(f"  links        {c['links_written']} written, {c['links_present']} already present")
    if c["tags_deleted"] or c["revisions_deleted"] or c["links_deleted"] or c["blobs_deleted"]:
        print(
            f"  deleted      {c['tags_deleted']} tags, {c['revisions_deleted']} revisions, "
            f"{c['links_deleted']} links, {c['blobs_deleted']} blobs ({_size(c['bytes_deleted'])})"
        )
    if c.get("tags_unpublished") or c.get("revisions_unpublished"):
        print(f"  unpublished  {c.get('tags_unpublished', 0)} tags, {c.get('revisions_unpublished', 0)} revisions whose "
              "blobs the primary's garbage collection deleted (deleted-at-source)")
    if c.get("blobs_replicated") or c.get("blobs_copied_after_wait"):
        print(f"  replicated   {c.get('blobs_replicated', 0)} blobs arrived through the storage's replication, "
              f"{c.get('blobs_copied_after_wait', 0)} copied after --copy-after")
    if report.interrupted:
        print("  nothing was left half-published; run the same command again to resume")
    _print_problems(report)
    for hint in (f for f in report.findings if f.kind == "copy-after-suggested"):
        print(f"hint: {hint.reason}")


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
