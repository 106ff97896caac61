"""Command line of ``syncagent watch SRC DST``: the parser, and running the service until a signal.

``syncagent/cli/__init__.py`` adds the parser (:func:`add_watch_parser`) and calls
:func:`run_watch` for the ``watch`` command.

Exit status: 0 after SIGTERM/SIGINT (running passes finished or were abandoned
safely), 2 for configuration errors (bad option, missing credentials, backend
URL, journal in use, address in use), 1 if the service failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from backends import BackendError

from ..sidecar.journal import JournalError
from ..sidecar.logformat import configure_logging
from ..sidecar.config import ConfigError, add_config_flags, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("syncagent.sidecar.service")

DESCRIPTION = (
    "Follow a primary registry's storage and keep DST a safe, always-pullable copy: registry notifications "
    "(POST /events), filesystem events on a file:// SRC and a periodic reconcile feed one work queue; "
    "each repository is synced by the ordered, verified engine. Flags override SYNCAGENT_* environment "
    "variables, which override the TOML file (--config). Secrets only from SYNCAGENT_TOKEN, "
    "SYNCAGENT_JWT_SECRET or files. See docs/sidecar.md."
)


def add_watch_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "watch", help="run as a sidecar: follow SRC continuously (notifications, fs events, reconcile)",
        description=DESCRIPTION, allow_abbrev=False,
    )
    add_config_flags(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncagent-watch", description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    add_config_flags(parser)
    return parser


def run_watch(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"syncagent watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_format, "debug" if getattr(args, "verbose", 0) else config.log_level)
    from ..sidecar.service import WatchService  # after logging is set up

    try:
        service = WatchService(config)
    except (ConfigError, JournalError, BackendError, ValueError) as exc:
        print(f"syncagent watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # binding the listener
        print(f"syncagent watch: cannot listen on {config.listen}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    log.info("starting: %s", json.dumps(config.describe(), default=str))
    if service.authenticator is not None:
        log.info("notifications accept %s", service.authenticator.settings.describe())

    def on_signal(signum, frame) -> None:
        abandon = service.stopping.is_set()
        log.info("received %s%s", signal.Signals(signum).name, ", abandoning running passes" if abandon else "")
        service.request_stop(abandon=abandon)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.start()
        service.wait_stopped()
    except Exception:
        log.exception("the service failed")
        service.request_stop(abandon=True)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run_watch(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
