"""Which notification events mean work: manifest pushes and deletes; not blobs, pulls, or invalid names."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from syncagent.sidecar.notifications import MalformedEnvelope, parse_envelope

SAMPLE = Path("/work/shared/samples/notification-push.json")
SAMPLE_EVENT = {
    "id": "650b1c08-40b2-4613-bcf8-f4c8cbec211d",
    "timestamp": "2026-11-28T17:50:18.847343974Z",
    "action": "push",
    "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 502,
        "digest": "sha256:f898505c0f4a2ec6967ae40885864ea36da7a1fc8bade12e83999de975cc5aaf",
        "length": 502,
        "repository": "group/app",
        "url": "http://127.0.0.1:5000/v2/group/app/manifests/sha256:f898505c0f4a2ec6967ae40885864ea36da7a1fc8bade12e83999de975cc5aaf",
        "tag": "v1",
    },
    "request": {"method": "PUT", "useragent": "skopeo/1.9.3"},
}


def envelope(*events) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def event(**target) -> dict:
    result = copy.deepcopy(SAMPLE_EVENT)
    result["target"].update(target)
    result["target"] = {k: v for k, v in result["target"].items() if v is not None}
    return result


def test_the_captured_registry_payload():
    body = SAMPLE.read_bytes() if SAMPLE.exists() else envelope(SAMPLE_EVENT)
    outcome = parse_envelope(body, received=1.9e9)
    assert [(c.repository, c.tag, c.digest, c.action, c.source) for c in outcome.changes] == [
        ("group/app", "v1", "sha256:f898505c0f4a2ec6967ae40885864ea36da7a1fc8bade12e83999de975cc5aaf", "push", "notification")
    ]
    change = outcome.changes[0]
    assert abs(change.event_time - 1795888218.847) < 0.01, "the registry's timestamp, nanoseconds and all"
    assert outcome.ignored == [] and outcome.rejected == []


def test_push_by_digest_without_tag_is_work():
    outcome = parse_envelope(envelope(event(tag=None)))
    assert len(outcome.changes) == 1 and outcome.changes[0].tag is None


def test_blob_and_pull_events_are_ignored():
    blob_push = event(tag=None, mediaType="application/octet-stream",
                      url="http://127.0.0.1:5000/v2/group/app/blobs/sha256:" + "a" * 64)
    pull = dict(copy.deepcopy(SAMPLE_EVENT), action="pull")
    mount = dict(copy.deepcopy(blob_push), action="mount")
    outcome = parse_envelope(envelope(blob_push, pull, mount))
    assert outcome.changes == []
    assert sorted(outcome.ignored) == ["blob", "blob", "pull"]


def test_deletes_are_work():
    tag_delete = {"action": "delete", "target": {"repository": "group/app", "tag": "old"}}
    manifest_delete = {"action": "delete", "target": {"repository": "group/app", "digest": "sha256:" + "b" * 64}}
    outcome = parse_envelope(envelope(tag_delete, manifest_delete))
    assert [(c.action, c.tag) for c in outcome.changes] == [("delete", "old"), ("delete", None)]


@pytest.mark.parametrize("repository", ["../../etc", "group/../x", "UPPER/case", "a//b", "", "/abs", "_hidden", "x" * 300])
def test_invalid_repository_names_are_rejected_and_cause_no_work(repository):
    outcome = parse_envelope(envelope(event(repository=repository)))
    assert outcome.changes == []
    assert [reason for reason, _ in outcome.rejected] == ["invalid-name"]


@pytest.mark.parametrize("target", [{"tag": "../evil"}, {"tag": "a" * 200}, {"digest": "sha256:xyz"}, {"digest": "md5:" + "a" * 32}])
def test_invalid_tags_and_digests_are_rejected(target):
    outcome = parse_envelope(envelope(event(**target)))
    assert outcome.changes == [] and outcome.rejected[0][0] == "invalid-name"


def test_malformed_events_are_rejected_one_by_one():
    good = event()
    outcome = parse_envelope(envelope("not an object", {"action": 3}, {"action": "push"}, {"action": "push", "target": {}}, good))
    assert len(outcome.changes) == 1
    assert [reason for reason, _ in outcome.rejected] == ["malformed-event"] * 4


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"events": {}}', b'{"other": []}', b"\xff\xfe"])
def test_a_body_that_is_not_an_envelope(body):
    with pytest.raises(MalformedEnvelope):
        parse_envelope(body)


def test_timestamps_in_the_future_or_unreadable_fall_back_to_the_receive_time():
    future = dict(copy.deepcopy(SAMPLE_EVENT), timestamp="2999-01-01T00:00:00Z")
    garbage = dict(copy.deepcopy(SAMPLE_EVENT), timestamp="yesterday")
    outcome = parse_envelope(envelope(future, garbage), received=1_800_000_000.0)
    assert [c.event_time for c in outcome.changes] == [1_800_000_000.0, 1_800_000_000.0]
