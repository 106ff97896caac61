"""The boto3 session and client of one S3 backend, and the URL it reports (options that differ from
their defaults; never credentials)."""

from __future__ import annotations

import collections
import dataclasses
import threading
from urllib.parse import urlencode

from ..errors import ConfigurationError
from .errors import boto3, botocore
from .options import S3Options


def make_session(options: S3Options):
    try:
        return boto3.session.Session(profile_name=options.profile or None)
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigurationError(f"option profile: {exc}") from None


def make_client(session, options: S3Options):
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},  # max_attempts would count retries only
        max_pool_connections=2 * options.max_concurrency,
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": options.addressing_style, "payload_signing_enabled": options.sign_payload},
    )
    verify: bool | str | None = None
    if not options.verify:
        verify = False
    elif options.ca_bundle:
        verify = options.ca_bundle
    try:
        return session.client(
            "s3",
            endpoint_url=options.endpoint_url or None,
            region_name=options.region or None,
            verify=verify,
            config=config,
        )
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        raise ConfigurationError(f"cannot set up the S3 client: {exc}") from None


def format_url(bucket: str, root: str, options: S3Options) -> str:
    """The backend's URL: bucket, root directory and the options that differ from their defaults."""
    changed = {
        field.name: getattr(options, field.name)
        for field in dataclasses.fields(options)
        if getattr(options, field.name) != field.default
    }
    query = urlencode({name: str(value).lower() if isinstance(value, bool) else value for name, value in changed.items()}, safe=":/")
    return f"s3://{bucket}/{root}" + (f"?{query}" if query else "")


class RequestCounter:
    """The HTTP requests one backend sent, by S3 operation (thread-safe).

    boto3's: every attempt, retries included (botocore's ``before-send`` event
    fires once per attempt). The CRT's PutObjects: one each (the CRT retries
    inside, unseen). Read with :meth:`counts`; the backend logs them when it
    closes (``syncagent -v``), which is how benchmarks count a run's requests.
    """

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def attach(self, client) -> None:
        client.meta.events.register("before-send.s3", self._sent)

    def _sent(self, event_name: str = "", **_) -> None:
        self.add(event_name.rsplit(".", 1)[-1] or "unknown")

    def add(self, operation: str) -> None:
        with self._lock:
            self._counts[operation] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def describe(self) -> str:
        counts = self.counts()
        detail = ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
        return f"{sum(counts.values())} requests" + (f" ({detail})" if detail else "")
