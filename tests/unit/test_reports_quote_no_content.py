"""No report, message or log line echoes what a stored file holds: links and manifests holding a
secret-looking string are reported by their key, length and hash, through the real command line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from syncagent.sync.layout import LayerLink, RevisionLink, TagCurrentLink, describe_content, key_of
from syncagent.sync.manifest import OCI_MANIFEST
from syncagent.testing.synthetic import TreeShape, TreeWriter, write_tree

ROOT = Path(__file__).resolve().parents[2]
SECRET = "AKIAPLANTEDSECRET42"
LINK_SECRET = f"[default]\naws_access_key_id = {SECRET}\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n".encode()


def syncagent(*args):
    result = subprocess.run([sys.executable, "-m", "syncagent", *args], cwd=ROOT, capture_output=True, text=True)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture
def secrets_planted(tmp_path):
    source, dest = tmp_path / "source", tmp_path / "dest"
    backend = FilesystemBackend(source)
    write_tree(backend, TreeShape(repositories=2, tags_per_repository=1, layer_bytes=(10, 100)))
    writer = TreeWriter(backend)
    # A tag whose current link, and a revision and a layer link whose content, hold credentials.
    tagged, _ = writer.image("app0", [b"layer of a tag with a leaky link"], tag="leaky")
    layer = writer.blob(b"layer of a tag with a leaky link")
    (source / key_of(TagCurrentLink("app0", "leaky"))).write_bytes(LINK_SECRET)
    untagged, _ = writer.image("app1", [b"an untagged revision"])
    (source / key_of(RevisionLink("app1", untagged))).write_bytes(LINK_SECRET)
    other, _ = writer.image("app1", [b"a layer whose link leaks"], tag="layered")
    (source / key_of(LayerLink("app1", writer.blob(b"a layer whose link leaks")))).write_bytes(LINK_SECRET)
    # Manifests (correct digests, linked, tagged) whose fields hold the secret.
    strange_type = json.dumps({"schemaVersion": 2, "mediaType": f"application/x-{SECRET}", "config": {}}).encode()
    writer.manifest("app1", strange_type, [], tag="strange")
    bad_reference = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "x", "digest": f"sha256:{SECRET}", "size": 1},
        "layers": [{"mediaType": "x", "digest": f"{SECRET}:{SECRET}", "size": 1}],
    }).encode()
    writer.manifest("app1", bad_reference, [], tag="badref")
    not_utf8 = b'{"mediaType": "\xff' + SECRET.encode() + b'"}'
    writer.manifest("app1", not_utf8, [], tag="binary")
    return source, dest


def test_no_output_of_sync_or_verify_quotes_a_stored_secret(secrets_planted):
    source, dest = secrets_planted
    runs = [
        syncagent("sync", str(source), str(dest), "--json"),
        syncagent("-vv", "sync", str(source), str(dest)),
        syncagent("verify", str(source), "--json"),
        syncagent("-vv", "verify", str(source), "--deep"),
        syncagent("verify", str(source), "--against", str(dest), "--json"),
        syncagent("verify", str(source), "--against", str(dest)),
        syncagent("verify", str(source), "--against", str(dest), "--repair", "--json"),
    ]
    for result in runs:
        assert result.returncode == 1
        for output in (result.stdout, result.stderr):
            assert SECRET not in output and "aws_secret_access_key" not in output and "wJalr" not in output
    summary = json.loads(runs[0].stdout)
    kinds = {(p["kind"], p["tag"]) for p in summary["problems"]}
    assert ("invalid-link", "leaky") in kinds
    assert {("malformed-manifest", None)} <= kinds  # reported by digest
    malformed = [p["reason"] for p in summary["problems"] if p["kind"] == "malformed-manifest"]
    assert any("a mediaType of" in r for r in malformed)
    assert any("not UTF-8" in r for r in malformed)
    leaky = next(p for p in summary["problems"] if p["kind"] == "invalid-link" and p["tag"] == "leaky")
    assert describe_content(LINK_SECRET) in leaky["reason"]  # named by length and hash instead
    assert hashlib.sha256(LINK_SECRET).hexdigest()[:12] in leaky["reason"]
    verify = json.loads(runs[2].stdout)
    assert {p["kind"] for p in verify["problems"]} >= {"invalid-link", "broken-tag"}
