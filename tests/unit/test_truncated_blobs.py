"""A blob truncated on the destination (issue 11, defect 3): found by a stat against its descriptor's size,
reported as size-mismatch, copied again by --repair and by any pass whose read-back meets it."""

from __future__ import annotations

import json

from backends.memory import MemoryBackend
from syncagent.check.verify import verify_backend
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import BlobData, Digest, key_of
from syncagent.testing.synthetic import TreeWriter
from tests.support.engine_checks import dest_tags


def synced_with_a_truncated_layer():
    source = MemoryBackend()
    writer = TreeWriter(source)
    digest, _ = writer.image("app", [b"a layer of some length" * 50, b"another"], tag="v1")
    dest = MemoryBackend()
    assert Engine(source, dest).run().ok
    manifest = json.loads(source.read_bytes(key_of(BlobData(digest))))
    layer = Digest.parse(manifest["layers"][0]["digest"])
    key = key_of(BlobData(layer))
    dest.put_bytes(key, dest.read_bytes(key)[: manifest["layers"][0]["size"] // 2])
    return source, dest, writer, digest, layer, key


def test_verify_names_a_truncated_blob_without_hashing_it():
    _, dest, _, _, layer, key = synced_with_a_truncated_layer()
    report = verify_backend(dest)
    kinds = sorted((p.kind, p.digest) for p in report.problems)
    assert ("size-mismatch", str(layer)) in kinds
    assert any(p.kind == "broken-tag" and "holds 550 bytes, its descriptor says 1100" in p.reason for p in report.problems)
    assert report.counters.get("blobs_hashed", 0) == 0


def test_repair_copies_it_again():
    from syncagent.cli import _repair
    from syncagent.check.compare import compare
    from syncagent.sync.report import Report

    source, dest, _, _, layer, key = synced_with_a_truncated_layer()
    dest_report = verify_backend(dest)
    repaired = _repair(source, dest, compare(source, dest, Report()), dest_report, jobs=2)
    assert repaired.ok, repaired.problems
    assert dest.read_bytes(key) == source.read_bytes(key)
    assert verify_backend(dest).ok


def test_a_pass_whose_read_back_meets_it_copies_it_again():
    source, dest, writer, digest, layer, key = synced_with_a_truncated_layer()
    writer.tag("app", "v2", digest)  # a new tag needs the same closure: its read-back stats the layer
    report = Engine(source, dest, SyncOptions()).run()
    assert report.ok, report.problems
    assert dest.read_bytes(key) == source.read_bytes(key)
    assert set(dest_tags(dest, "app")) == {"v1", "v2"}
