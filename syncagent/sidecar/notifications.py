"""Registry notifications: the distribution event envelope, and which events mean work.

The registry POSTs ``{"events": [...]}`` with content type
``application/vnd.docker.distribution.events.v1+json`` (one event per POST on
distribution 2.8; more are accepted). Work is a manifest ``push`` or a
``delete``; blob pushes and mounts, ``pull`` events (a HEAD is one) and
unknown actions are ignored. An event whose repository, tag or digest does not
validate (see :mod:`syncagent.sync.layout`) is rejected and causes no work.

Distribution 2.8's sink retries an event it could not deliver (any answer
outside 200-399) for ever, one event at a time; so an authenticated body that
cannot be understood is answered 2xx and counted, never 4xx: see
``http_service``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime

from .journal import Change
from ..sync.jsonsafe import JSONTooDeep, MalformedJSON, loads_bounded
from ..sync.layout import Digest, InvalidPath, validate_repository, validate_tag
from ..sync.manifest import ALL_MANIFEST_TYPES

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
ACCEPTED_CONTENT_TYPES = (EVENTS_MEDIA_TYPE, "application/json")

MANIFEST_MEDIA_TYPES = frozenset(ALL_MANIFEST_TYPES)
WORK_ACTIONS = ("push", "delete")
MAX_EVENTS_PER_ENVELOPE = 1000


class MalformedEnvelope(ValueError):
    """The body is not an event envelope at all. ``reason`` labels it for the metrics:
    ``malformed``, or ``too-deep`` for JSON nested deeper than any envelope is."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class EnvelopeOutcome:
    """What one POST brought: changes to queue, events ignored (by kind), events rejected (by reason)."""

    changes: list[Change] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def parse_envelope(body: bytes, *, received: float | None = None) -> EnvelopeOutcome:
    """Classify every event of an envelope; raises MalformedEnvelope if the body is not one."""
    received = time.time() if received is None else received
    try:
        document = loads_bounded(body)
    except JSONTooDeep as exc:
        raise MalformedEnvelope(f"not an event envelope: {exc}", reason="too-deep") from None
    except MalformedJSON as exc:
        raise MalformedEnvelope(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise MalformedEnvelope('not an event envelope: expected {"events": [...]}')
    events = document["events"]
    if len(events) > MAX_EVENTS_PER_ENVELOPE:
        raise MalformedEnvelope(f"{len(events)} events in one envelope (at most {MAX_EVENTS_PER_ENVELOPE})")
    outcome = EnvelopeOutcome()
    for event in events:
        _classify(event, received, outcome)
    return outcome


def _classify(event: object, received: float, outcome: EnvelopeOutcome) -> None:
    if not isinstance(event, dict):
        outcome.rejected.append(("malformed-event", "an event is not a JSON object"))
        return
    action = event.get("action")
    if not isinstance(action, str):
        outcome.rejected.append(("malformed-event", "event without an action"))
        return
    if action == "pull":
        outcome.ignored.append("pull")
        return
    if action not in WORK_ACTIONS:
        outcome.ignored.append("blob" if action == "mount" else "other-action")
        return
    target = event.get("target")
    if not isinstance(target, dict):
        outcome.rejected.append(("malformed-event", f"{action} event without a target"))
        return
    repository = target.get("repository")
    if not isinstance(repository, str):
        outcome.rejected.append(("malformed-event", f"{action} event without a repository"))
        return
    if not _is_manifest_event(action, target):
        outcome.ignored.append("blob")
        return
    try:
        validate_repository(repository)
        tag = target.get("tag") or None
        if tag is not None:
            if not isinstance(tag, str):
                raise InvalidPath("tag is not a string")
            validate_tag(tag)
        digest = target.get("digest") or None
        if digest is not None:
            if not isinstance(digest, str):
                raise InvalidPath("digest is not a string")
            digest = str(Digest.parse(digest))
    except InvalidPath as exc:
        outcome.rejected.append(("invalid-name", str(exc)))
        return
    event_id = event.get("id") if isinstance(event.get("id"), str) else None
    outcome.changes.append(
        Change(
            repository=repository,
            source="notification",
            event_time=_event_time(event.get("timestamp"), received),
            action=action,
            tag=tag,
            digest=digest,
            event_id=event_id[:100] if event_id else None,
        )
    )


def _is_manifest_event(action: str, target: dict) -> bool:
    media_type = target.get("mediaType")
    if media_type in MANIFEST_MEDIA_TYPES or target.get("tag"):
        return True
    url = target.get("url")
    if isinstance(url, str):
        return "/manifests/" in url
    # Distribution 2.8 describes a manifest delete and a blob delete alike
    # (repository and digest only): a delete may concern a manifest.
    return action == "delete" and not media_type


_FRACTION = re.compile(r"\.(\d+)")


def _event_time(value: object, received: float) -> float:
    """The event's RFC 3339 timestamp as epoch seconds; the receive time if absent, unparseable or in the future."""
    if not isinstance(value, str) or len(value) > 64:
        return received
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)  # Go writes nanoseconds
    try:
        when = datetime.fromisoformat(text).timestamp()
    except ValueError:
        return received
    return when if when <= received else received
