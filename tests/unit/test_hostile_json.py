"""JSON from outside, nested absurdly deep or otherwise hostile: every parser refuses it with its
typed error, and a sync or a verification goes on around it.

A manifest blob of about 400 KB with a correct digest and ``annotations`` nested 200,000 deep
used to raise RecursionError out of the parser: the whole repository was lost to one
``internal-error`` and ``verify`` died with a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from backends.memory import MemoryBackend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.jsonsafe import MAX_DEPTH, JSONTooDeep, MalformedJSON, loads_bounded, nesting_depth
from syncagent.sync.layout import TagCurrentLink, key_of, parse_link
from syncagent.sync.manifest import OCI_MANIFEST, MalformedManifest, parse_manifest
from syncagent.sidecar.notifications import MalformedEnvelope, parse_envelope
from syncagent.sync.records import RECORDS_PREFIX, read_records
from syncagent.check.registry import RegistryChecker, RegistryCheckError
from syncagent.check.registry.client import _Response
from syncagent.sync.replica import MARKER_KEY, read_marker
from syncagent.testing.synthetic import TreeWriter
from syncagent.check.verify import verify_backend

ROOT = Path(__file__).resolve().parents[2]
DEPTH = 200_000


def deep_manifest(depth: int = DEPTH) -> bytes:
    return (b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "annotations": {"x": '
            + b"[" * depth + b"]" * depth + b"}}")


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --------------------------------------------------------------------------- loads_bounded


def test_nesting_up_to_the_bound_parses_and_one_level_more_is_refused():
    assert loads_bounded(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    with pytest.raises(JSONTooDeep):
        loads_bounded(nested(MAX_DEPTH + 1))
    with pytest.raises(JSONTooDeep):
        loads_bounded(b'{"a": ' * 10 + b"1" + b"}" * 10, max_depth=9)
    assert loads_bounded(b'{"a": ' * 10 + b"1" + b"}" * 10, max_depth=10)


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"a": "[" * 10_000, "b": '\\"[{' * 1_000, "c": [[["]]]]]"]]]})
    assert nesting_depth(text) == 4
    assert loads_bounded(text.encode()) == json.loads(text)


def test_an_unclosed_deep_document_is_refused_before_json_recurses():
    with pytest.raises(JSONTooDeep):
        loads_bounded(b"[" * DEPTH)
    with pytest.raises(JSONTooDeep):
        loads_bounded(b'{"x":' * DEPTH)


@pytest.mark.parametrize("data", [
    b"\xff\xfe\x00\xd8",  # UTF-16 with a lone surrogate: decodes (surrogatepass), then is not JSON
    b"\x80abc",
    b"1" * 5000,  # past Python's int conversion limit: a plain ValueError from json.loads
    b'{"a": 1',
    b"",
    "[1, 2".encode("utf-16"),
])
def test_everything_else_that_fails_is_malformed_json(data):
    with pytest.raises(MalformedJSON):
        loads_bounded(data)


def test_encodings_json_accepts_are_accepted():
    document = {"mediaType": "x", "size": 1}
    for encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"):
        assert loads_bounded(json.dumps(document).encode(encoding)) == document


def test_messages_do_not_echo_the_content():
    for data in (b'{"secret-value": nope}', b'"secret-value', b"\xffsecret-value", b'{"secret-value": ' + nested(500) + b"}"):
        with pytest.raises(MalformedJSON) as caught:
            loads_bounded(data)
        assert "secret" not in str(caught.value)


SMALL_STACK_PROGRAM = """
import sys, threading
from syncagent.sync.manifest import MalformedManifest, parse_manifest
deep = sys.stdin.buffer.read()
def parse():
    try:
        parse_manifest(deep)
    except MalformedManifest as exc:
        print(exc)
threading.stack_size(128 * 1024)
thread = threading.Thread(target=parse)
thread.start()
thread.join()
"""


def test_a_thread_with_a_small_stack_survives_a_deep_document():
    """On a 128 KiB thread stack, json.loads of this manifest kills the process (SIGSEGV) before
    it can raise RecursionError; the bound holds before json.loads recurses. In a child process,
    so that a crash fails this test alone."""
    child = subprocess.run([sys.executable, "-c", SMALL_STACK_PROGRAM], cwd=ROOT, input=deep_manifest(),
                           capture_output=True, timeout=60)
    assert child.returncode == 0, child.stderr.decode()[-500:]
    assert child.stdout.decode() == f"arrays and objects nested deeper than {MAX_DEPTH} levels\n"


# --------------------------------------------------------------------------- every parser of outside JSON


def test_every_parser_of_outside_json_refuses_deep_nesting_with_its_typed_error():
    with pytest.raises(MalformedManifest):
        parse_manifest(deep_manifest())
    with pytest.raises(MalformedEnvelope) as envelope:
        parse_envelope(b'{"events": ' + nested(DEPTH) + b"}")
    assert envelope.value.reason == "too-deep"
    with pytest.raises(MalformedEnvelope) as garbage:
        parse_envelope(b"{nope")
    assert garbage.value.reason == "malformed"

    backend = MemoryBackend()
    for key in (MARKER_KEY, RECORDS_PREFIX + "deep.json"):
        backend.put(key, io.BytesIO(nested(30_000)), size=60_000)
    assert read_marker(backend) is None
    assert [(record.scope, record.dead) for record in read_records(backend)] == [(("*",), True)]

    deep_error = b'{"errors": ' + nested(DEPTH) + b"}"
    assert _Response(404, {}, deep_error).error_text() == deep_error[:200].decode()


class _DeepAnswers:
    """An HTTP server that answers every GET with a deeply nested JSON body (status 200)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = b'{"tags": ' + nested(DEPTH) + b"}"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_registry_answers_nested_deep_are_check_errors():
    registry = _DeepAnswers()
    try:
        checker = RegistryChecker(registry.url)
        with pytest.raises(RegistryCheckError, match="not a JSON object"):
            checker.list_tags("group/app")
        problems = checker.check_tag("group/app", "v1")
        assert len(problems) == 1 and "cannot be parsed" in problems[0] and "nested deeper" in problems[0]
    finally:
        registry.close()


# --------------------------------------------------------------------------- a sync around a hostile manifest


def tree_with_a_deep_manifest(backend) -> tuple[dict[str, str], str]:
    """Two good tags around one whose manifest is nested 200,000 deep; (good tags, deep digest)."""
    writer = TreeWriter(backend)
    good = {"before": str(writer.image("group/app", [b"layer one"], tag="before")[0])}
    deep, _ = writer.manifest("group/app", deep_manifest(), [], tag="deep")
    good["after"] = str(writer.image("group/app", [b"layer two"], tag="after")[0])
    writer.image("other", [b"layer three"], tag="v1")
    assert hashlib.sha256(deep_manifest()).hexdigest() == deep.hex
    return good, str(deep)


def current_tags(backend, repository: str) -> dict[str, str]:
    prefix = f"docker/registry/v2/repositories/{repository}/_manifests/tags/"
    return {e.name: str(parse_link(backend.read_bytes(key_of(TagCurrentLink(repository, e.name)))))
            for e in backend.iter_children(prefix)}


def test_a_deep_manifest_is_malformed_and_the_rest_of_its_repository_syncs():
    source, dest = MemoryBackend(), MemoryBackend()
    good, deep = tree_with_a_deep_manifest(source)
    report = Engine(source, dest, SyncOptions()).run()
    assert current_tags(dest, "group/app") == good
    assert list(current_tags(dest, "other")) == ["v1"]
    assert {(p.kind, p.digest) for p in report.problems} == {
        ("malformed-manifest", deep), ("revision-not-published", deep), ("tag-not-published", deep)}
    assert "internal-error" not in {p.kind for p in report.problems}

    checked = verify_backend(source)
    assert {(p.kind, p.tag) for p in checked.problems} == {("broken-revision", None), ("broken-tag", "deep")}
    assert all("nested deeper" in p.reason for p in checked.problems)
    assert verify_backend(dest).ok


def syncagent(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncagent", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_cli_syncs_and_verifies_around_a_deep_manifest_without_a_traceback(tmp_path):
    good, deep = tree_with_a_deep_manifest(FilesystemBackend(tmp_path / "src"))
    synced = syncagent("sync", str(tmp_path / "src"), str(tmp_path / "dst"), "--json")
    assert synced.returncode == 1 and "Traceback" not in synced.stderr, synced.stderr
    problems = json.loads(synced.stdout)["problems"]
    assert {(p["kind"], p["digest"]) for p in problems} == {
        ("malformed-manifest", deep), ("revision-not-published", deep), ("tag-not-published", deep)}
    assert current_tags(FilesystemBackend(tmp_path / "dst"), "group/app") == good

    verified = syncagent("verify", str(tmp_path / "src"))
    assert verified.returncode == 1 and "Traceback" not in verified.stderr, verified.stderr
    assert "broken-tag" in verified.stdout and "group/app:deep" in verified.stdout
    assert syncagent("verify", str(tmp_path / "dst")).returncode == 0
