"""Configuration of ``syncagent watch``: flags, a TOML file and environment variables, as one table.

Precedence: command-line flag > environment variable > TOML file > default.
Every option ``name`` is the TOML key ``name``, the flag ``--name`` (dashes for
underscores) and the variable ``SYNCAGENT_NAME``. Durations take seconds or a
unit (``250ms``, ``30s``, ``5m``, ``1h``); sizes take bytes or ``KiB``/``MiB``.

Secrets come only from the environment (``SYNCAGENT_TOKEN``,
``SYNCAGENT_JWT_SECRET``) or from files named by ``token_file`` /
``jwt_secret_file``; a TOML file or a flag holding a secret is refused (it
would sit in a world-readable file or in the process list). Secrets are never
logged: :meth:`WatchConfig.describe` says only whether they are set.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # PyJWT and cryptography load only when notifications are configured
    from ..sync.shard import Shard
    from .auth import AuthSettings

ENV_PREFIX = "SYNCAGENT_"
SECRET_ENV = {"token": "SYNCAGENT_TOKEN", "jwt_secret": "SYNCAGENT_JWT_SECRET"}
SECRET_KEYS = frozenset({"token", "tokens", "jwt_secret", "secret", "password"})


class ConfigError(ValueError):
    """A configuration value is missing, malformed or not allowed where it was given."""


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")
_SIZE = re.compile(r"^\s*([0-9]+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|M|G)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "k": 1024, "M": 1024**2, "G": 1024**3}


def parse_duration(value: object) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"not a duration (e.g. 30s, 5m, 250ms, 1h, 2d): {value!r}")
        seconds = float(match.group(1)) * {None: 1, "s": 1, "ms": 0.001, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"a duration cannot be negative: {value!r}")
    return seconds


def parse_size(value: object) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigError(f"not a size (e.g. 1MiB, 65536): {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"not a boolean (true/false): {value!r}")


def parse_positive_int(value: object) -> int:
    try:
        number = int(value) if not isinstance(value, bool) else -1
    except (TypeError, ValueError):
        raise ConfigError(f"not an integer: {value!r}") from None
    if number < 1:
        raise ConfigError(f"must be at least 1: {value!r}")
    return number


def parse_positive_float(value: object) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        raise ConfigError(f"not a number: {value!r}") from None
    if not number > 0:
        raise ConfigError(f"must be more than 0: {value!r}")
    return number


def parse_choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}: {value!r}")
        return text

    return parse


def parse_percentage(value: object) -> float:
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise ConfigError(f"not a percentage (e.g. 50 or 50%): {value!r}") from None
    if not 0 <= number <= 100:
        raise ConfigError(f"a percentage must be between 0 and 100: {value!r}")
    return number / 100


def parse_list(value: object) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(item) for item in value)
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def parse_shard(value: object) -> "Shard":
    from ..sync.shard import InvalidShard, Shard

    try:
        return Shard.parse(str(value))
    except InvalidShard as exc:
        raise ConfigError(str(exc)) from None


def _text(value: object) -> str:
    return str(value)


def default_journal() -> str:
    state = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
    return str(Path(state.split(":")[0]) / "journal.sqlite3") if state else "syncagent-journal.sqlite3"


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[object], Any]
    help: str
    metavar: str | None = None
    flag: bool = True


OPTIONS: tuple[Option, ...] = (
    Option("source", _text, "source backend URL (the primary registry's storage)", "URL", flag=False),
    Option("destination", _text, "destination backend URL (the secondary's storage)", "URL", flag=False),
    Option("listen", _text, "HOST:PORT for /events, /healthz, /livez and /metrics (default 127.0.0.1:5055)", "HOST:PORT"),
    Option("notifications", parse_bool, "accept registry notifications on POST /events (default true)", "BOOL"),
    Option("fs_events", parse_choice("auto", "on", "off"),
           "watch a file:// source for changes: auto (when the source is file://), on, off (default auto)", "MODE"),
    Option("reconcile_interval", parse_duration, "full comparison every DURATION; 0 disables (default 5m)", "DURATION"),
    Option("reconcile_at_start", parse_bool, "reconcile once at start (default true)", "BOOL"),
    Option("workers", parse_positive_int, "repositories synced in parallel (default 4)", "N"),
    Option("jobs", parse_positive_int, "parallel blob transfers within one pass (default 8)", "N"),
    Option("settle", parse_duration, "during a burst of changes, wait until a repository is quiet this long (default 250ms)", "DURATION"),
    Option("max_delay", parse_duration, "... but start a pass at most this long after the first change it covers (default 3s)", "DURATION"),
    Option("retry_base", parse_duration, "first retry delay after a failed pass, doubled each time (default 1s)", "DURATION"),
    Option("retry_cap", parse_duration, "longest retry delay (default 5m)", "DURATION"),
    Option("max_attempts", parse_positive_int, "failed passes before a repository is left to the next reconcile (default 10)", "N"),
    Option("max_body", parse_size, "largest accepted POST /events body (default 1MiB)", "SIZE"),
    Option("journal", _text, "SQLite journal path (default $STATE_DIRECTORY/journal.sqlite3 or ./syncagent-journal.sqlite3)", "PATH"),
    Option("token_file", _text, "file holding the static bearer token(s), one per line", "PATH"),
    Option("jwt_secret_file", _text, "file holding the HS256 shared secret for JWTs", "PATH"),
    Option("jwt_public_key_file", _text, "PEM public key (RSA for RS256, EC P-256 for ES256) for JWTs", "PATH"),
    Option("jwt_issuer", _text, "required JWT iss", "ISS"),
    Option("jwt_audience", _text, "required JWT aud", "AUD"),
    Option("jwt_leeway", parse_duration, "clock leeway for exp/nbf (default 30s)", "DURATION"),
    Option("shutdown_grace", parse_duration, "on SIGTERM, let running passes finish this long before abandoning them (default 30s)", "DURATION"),
    Option("ready_max_reconcile_age", parse_duration,
           "not ready when the last complete reconcile is older (default 2 x interval + 1m)", "DURATION"),
    Option("health_interval", parse_duration, "how often backends are probed for /healthz (default 5s)", "DURATION"),
    Option("delete", parse_bool, "also remove what the source no longer has, repository by repository, and repositories "
           "gone from the source at reconcile (default false; docs/deletes-and-reports.md)", "BOOL"),
    Option("max_delete", parse_percentage, "one delete pass (a reconcile, with the deletes that follow notifications "
           "until the next) removes at most this share of the destination's tags and revisions (default 50 percent; "
           "docs/deletes-and-reports.md)", "PERCENT"),
    Option("blobs", parse_choice("copy", "external"), "copy blob data (default), or 'external': the storage's own "
           "replication brings it and the agent publishes each link once its blobs have arrived (docs/supplement.md)", "MODE"),
    Option("external_timeout", parse_duration, "with blobs = external: how long a blob is awaited before its tags are "
           "reported and the repository retried (default 15m)", "DURATION"),
    Option("copy_after", parse_duration, "with blobs = external: copy a blob still missing after DURATION "
           "(default: never)", "DURATION"),
    Option("max_requests_per_second", parse_positive_float, "at most N requests a second to each backend "
           "(a gateway shared with other users; default: no ceiling)", "N"),
    Option("check_registry", _text, "after publishing a tag, ask this registry URL whether it serves it whole", "URL"),
    Option("registry_token_issuer", _text, "for an auth: token registry: its token issuer", "ISS"),
    Option("registry_token_service", _text, "... its token service (the audience)", "SVC"),
    Option("registry_token_key", _text, "... a PEM private key whose certificate is in its rootcertbundle", "PATH"),
    Option("registry_token_cert", _text, "... the PEM certificate of that key", "PATH"),
    Option("shard", parse_shard, "only the repositories of shard I of N (numbered from 0; e.g. SYNCAGENT_SHARD=2/3 "
           "for the third of three sidecars; docs/scale.md)", "I/N"),
    Option("repositories", parse_list, "only repositories matching these globs (comma-separated; flag repeatable)", "GLOB", flag=False),
    Option("log_format", parse_choice("text", "json"), "log lines as text or JSON objects (default text)", "FORMAT"),
    Option("log_level", parse_choice("debug", "info", "warning", "error"), "log level (default info)", "LEVEL"),
)
_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class WatchConfig:
    source: str = ""
    destination: str = ""
    listen: str = "127.0.0.1:5055"
    notifications: bool = True
    fs_events: str = "auto"
    reconcile_interval: float = 300.0
    reconcile_at_start: bool = True
    workers: int = 4
    jobs: int = 8
    settle: float = 0.25
    max_delay: float = 3.0
    retry_base: float = 1.0
    retry_cap: float = 300.0
    max_attempts: int = 10
    max_body: int = 1024 * 1024
    journal: str = field(default_factory=default_journal)
    token_file: str | None = None
    jwt_secret_file: str | None = None
    jwt_public_key_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway: float = 30.0
    shutdown_grace: float = 30.0
    ready_max_reconcile_age: float | None = None
    health_interval: float = 5.0
    repositories: tuple[str, ...] = ()
    shard: Shard | None = None
    delete: bool = False
    max_delete: float = 0.5
    max_requests_per_second: float | None = None
    blobs: str = "copy"
    external_timeout: float = 900.0
    copy_after: float | None = None
    check_registry: str | None = None
    registry_token_issuer: str | None = None
    registry_token_service: str | None = None
    registry_token_key: str | None = None
    registry_token_cert: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    token: str | None = field(default=None, repr=False)
    jwt_secret: bytes | None = field(default=None, repr=False)

    @property
    def reconcile_max_age(self) -> float | None:
        if self.ready_max_reconcile_age is not None:
            return self.ready_max_reconcile_age or None
        return 2 * self.reconcile_interval + 60 if self.reconcile_interval > 0 else None

    def fs_events_enabled(self) -> bool:
        if self.fs_events == "auto":
            return self.source.startswith("file://") or self.source.startswith("/") or "://" not in self.source
        return self.fs_events == "on"

    def auth_settings(self) -> AuthSettings:
        from .auth import AuthSettings

        tokens: list[str] = []
        if self.token:
            tokens.append(self.token)
        if self.token_file:
            tokens.extend(_read_token_lines(self.token_file))
        public_key = None
        if self.jwt_public_key_file:
            try:
                public_key = Path(self.jwt_public_key_file).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read jwt_public_key_file {self.jwt_public_key_file}: {exc.strerror}") from None
        secret = self.jwt_secret
        if self.jwt_secret_file:
            secret = _read_secret(self.jwt_secret_file)
        return AuthSettings(
            tokens=tuple(tokens), jwt_secret=secret, jwt_public_key=public_key,
            jwt_issuer=self.jwt_issuer, jwt_audience=self.jwt_audience, jwt_leeway=self.jwt_leeway,
        )

    def describe(self) -> dict:
        """Every setting, for the start-up log; secrets reduced to set/unset."""
        shown = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("token", "jwt_secret"):
                shown[item.name] = "set" if value else "unset"
            else:
                shown[item.name] = list(value) if isinstance(value, tuple) else value
        return shown

    def validate(self) -> "WatchConfig":
        if not self.source or not self.destination:
            raise ConfigError("give SRC and DST (arguments, SYNCAGENT_SOURCE/SYNCAGENT_DESTINATION or the TOML file)")
        if self.max_delay < self.settle:
            raise ConfigError("max_delay must be at least settle")
        if self.notifications and not self.auth_settings().configured:
            raise ConfigError(
                "notifications need credentials: SYNCAGENT_TOKEN, token_file, or JWT verification "
                "(jwt_secret_file / SYNCAGENT_JWT_SECRET or jwt_public_key_file, with jwt_issuer and jwt_audience); "
                "or disable them with --notifications false"
            )
        settings = self.auth_settings()
        if settings.jwt_enabled and not (settings.jwt_issuer and settings.jwt_audience):
            raise ConfigError("JWT verification needs jwt_issuer and jwt_audience")
        if self.copy_after is not None and self.blobs != "external":
            raise ConfigError("copy_after needs blobs = external")
        if not self.notifications and not self.fs_events_enabled() and self.reconcile_interval <= 0:
            raise ConfigError("every event source is off: enable notifications, fs_events or a reconcile_interval")
        return self


def _read_secret(path: str) -> bytes:
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc.strerror}") from None
    if not data:
        raise ConfigError(f"the secret file {path} is empty")
    return data


def _read_token_lines(path: str) -> list[str]:
    text = _read_secret(path).decode("utf-8", "replace")
    tokens = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise ConfigError(f"the token file {path} holds no token")
    return tokens


class _RefuseSecretFlag(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string}: secrets are not accepted on the command line (the process list shows them); "
                     f"use {SECRET_ENV.get(self.dest, 'SYNCAGENT_TOKEN')} or {option_string}-file")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every option (defaults None: unset flags do not override the file or environment).

    Create ``parser`` with ``allow_abbrev=False``: otherwise ``--token`` would
    be taken for ``--token-file``. ``--token`` and ``--jwt-secret`` exist only
    to refuse a secret on the command line with a clear message.
    """
    parser.add_argument("--token", dest="token", nargs="?", action=_RefuseSecretFlag, help=argparse.SUPPRESS)
    parser.add_argument("--jwt-secret", dest="jwt_secret", nargs="?", action=_RefuseSecretFlag, help=argparse.SUPPRESS)
    parser.add_argument("source", metavar="SRC", nargs="?", help="source backend URL or path (the primary's storage)")
    parser.add_argument("destination", metavar="DST", nargs="?", help="destination backend URL or path")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (or SYNCAGENT_CONFIG)")
    parser.add_argument("--repo", dest="repositories", action="append", metavar="GLOB",
                        help="only repositories matching GLOB (repeatable)")
    for option in OPTIONS:
        if not option.flag:
            continue
        parser.add_argument("--" + option.name.replace("_", "-"), dest=option.name, metavar=option.metavar,
                            help=option.help, default=None)


def load_config(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> WatchConfig:
    """Defaults, then the TOML file, then the environment, then flags; validated."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        values.update(_from_toml(Path(config_path)))
    for option in OPTIONS:
        raw = environ.get(ENV_PREFIX + option.name.upper())
        if raw is not None and raw != "":
            values[option.name] = _parse(option, raw, f"${ENV_PREFIX}{option.name.upper()}")
    if args is not None:
        for option in OPTIONS:
            raw = getattr(args, option.name, None)
            if raw is None:
                continue
            if option.name == "repositories":
                values[option.name] = tuple(raw)
            else:
                values[option.name] = _parse(option, raw, "--" + option.name.replace("_", "-"))
    token = environ.get(SECRET_ENV["token"]) or None
    secret = environ.get(SECRET_ENV["jwt_secret"])
    config = replace(WatchConfig(), **values, token=token, jwt_secret=secret.encode() if secret else None)
    return config.validate()


def _parse(option: Option, raw: object, where: str) -> Any:
    try:
        return option.parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if isinstance(document.get("watch"), dict):
        document = {**{k: v for k, v in document.items() if k != "watch"}, **document["watch"]}
    values: dict[str, Any] = {}
    for key, raw in document.items():
        name = key.replace("-", "_")
        if name in SECRET_KEYS:
            raise ConfigError(
                f"{path}: {key!r}: secrets are not read from the configuration file; use "
                f"{SECRET_ENV.get(name, 'SYNCAGENT_TOKEN')} or a *_file option"
            )
        option = _BY_NAME.get(name)
        if option is None:
            raise ConfigError(f"{path}: unknown option {key!r} (known: {', '.join(sorted(_BY_NAME))})")
        values[name] = _parse(option, raw, f"{path}: {key}")
    return values


__all__ = ["ConfigError", "OPTIONS", "WatchConfig", "add_config_flags", "load_config", "parse_duration", "parse_size"]
