"""A valid manifest larger than the 4 MiB limit is ``manifest-too-large``, never ``digest-mismatch``,
and no more of it than the limit is read."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.filesystem import FilesystemBackend
from backends.memory import MemoryBackend
from syncagent.sync.closure import ClosureError, read_manifest
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import BlobData, Digest, RevisionLink, key_of
from syncagent.sync.manifest import MAX_MANIFEST_BYTES, OCI_MANIFEST
from syncagent.testing.synthetic import TreeWriter
from syncagent.check.verify import verify_backend

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def many_layers(count: int) -> bytes:
    """A valid OCI image manifest with ``count`` layers (about 150 bytes each)."""
    layers = ",".join(
        f'{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{hashlib.sha256(str(n).encode()).hexdigest()}","size":{n}}}'
        for n in range(count)
    )
    config = f'{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{"c" * 64}","size":2}}'
    return f'{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{config},"layers":[{layers}]}}'.encode()


class CountingReads(MemoryBackend):
    """Counts the bytes handed out by streams of ``watched`` keys."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: set[str] = set()
        self.bytes_read = 0

    def open_read(self, key):
        stream = super().open_read(key)
        if key not in self.watched:
            return stream
        backend = self

        class Counted(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def read(self, size=-1):
                data = stream.read(size)
                backend.bytes_read += len(data)
                return data

        return Counted()


def test_a_large_valid_manifest_is_too_large_not_corrupt_and_read_only_up_to_the_limit():
    source = CountingReads()
    manifest = many_layers(35_000)
    assert len(manifest) > MAX_MANIFEST_BYTES
    digest, _ = TreeWriter(source).manifest("big/app", manifest, [], tag="v1")
    source.watched.add(key_of(BlobData(digest)))

    with pytest.raises(ClosureError) as raised:
        read_manifest(source, digest)
    assert raised.value.kind == "manifest-too-large"
    assert raised.value.reason == f"manifest blob of {len(manifest)} bytes exceeds {MAX_MANIFEST_BYTES}"
    assert source.bytes_read <= MAX_MANIFEST_BYTES + 1

    dest = MemoryBackend()
    report = Engine(source, dest, SyncOptions(jobs=1)).run()
    kinds = {(p.kind, p.digest) for p in report.problems}
    assert ("manifest-too-large", str(digest)) in kinds
    assert ("tag-not-published", str(digest)) in kinds
    assert not any(p.kind == "digest-mismatch" for p in report.problems)
    assert not dest.exists(key_of(RevisionLink("big/app", digest)))

    checked = verify_backend(source)
    assert [p.kind for p in checked.problems] == ["broken-revision", "broken-tag"]
    assert all(f"{len(manifest)} bytes exceeds {MAX_MANIFEST_BYTES}" in p.reason for p in checked.problems)


def test_a_manifest_of_exactly_the_limit_is_read_and_checked_as_usual():
    source = MemoryBackend()
    padded = json.loads(many_layers(2))
    body = json.dumps(padded).encode()
    padded["annotations"] = {"pad": "x" * (MAX_MANIFEST_BYTES - len(body) - len(', "annotations": {"pad": ""}'))}
    manifest = json.dumps(padded).encode()
    assert len(manifest) == MAX_MANIFEST_BYTES
    digest, _ = TreeWriter(source).manifest("edge/app", manifest, [], tag="v1")
    data, parsed = read_manifest(source, digest)
    assert data == manifest and len(parsed.blobs) == 3


def write_streamed_manifest(root: Path, repository: str, tag: str, size: int) -> Digest:
    """A valid manifest of ``size`` bytes (padded with an annotation), written in chunks, with its links."""
    head = json.loads(many_layers(1))
    head["annotations"] = {"pad": ""}
    text = json.dumps(head).encode()
    before, after = text.split(b'"pad": ""')[0] + b'"pad": "', b'"' + text.split(b'"pad": ""')[1]
    padding = size - len(before) - len(after)
    hasher = hashlib.sha256()
    staging = root / "manifest.partial"
    with staging.open("wb") as out:
        for piece in (before, *(b"p" * min(MIB, padding - n) for n in range(0, padding, MIB)), after):
            hasher.update(piece)
            out.write(piece)
    digest = Digest("sha256", hasher.hexdigest())
    target = root / key_of(BlobData(digest))
    target.parent.mkdir(parents=True)
    staging.rename(target)
    writer = TreeWriter(FilesystemBackend(root))
    writer.link(RevisionLink(repository, digest), digest)
    writer.tag(repository, tag, digest)
    return digest


# Runs the CLI, then writes the process's peak resident memory (VmHWM: of this program, not of the
# process it was forked from, which getrusage would include) to the file named by argv[1].
MEASURED = """
import re, sys
from syncagent.cli import main
try:
    status = main(sys.argv[2:])
finally:
    peak = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
    open(sys.argv[1], "w").write(peak)
sys.exit(status)
"""


def run_measured(tmp_path: Path, *args: str) -> tuple[int, str, int]:
    """Run the CLI; (exit status, stdout, peak resident bytes of the process)."""
    peak = tmp_path / "peak-kib"
    done = subprocess.run([sys.executable, "-c", MEASURED, str(peak), *args], cwd=ROOT, capture_output=True, text=True)
    return done.returncode, done.stdout, int(peak.read_text()) * 1024


def test_cli_reports_a_100_mib_and_a_100k_layer_manifest_as_too_large_on_the_filesystem(tmp_path):
    source, dest = tmp_path / "source", tmp_path / "dest"
    (source).mkdir()
    huge = write_streamed_manifest(source, "huge/app", "v1", 100 * MIB)
    layered_bytes = many_layers(100_000)
    assert len(layered_bytes) > 14 * MIB
    layered, _ = TreeWriter(FilesystemBackend(source)).manifest("layers/app", layered_bytes, [], tag="v1")
    fine, _ = TreeWriter(FilesystemBackend(source)).image("fine/app", [b"a layer"], tag="v1")

    status, out, peak = run_measured(tmp_path, "sync", str(source), str(dest), "--json")
    assert status == 1, out
    problems = json.loads(out)["problems"]
    too_large = {p["digest"]: p["reason"] for p in problems if p["kind"] == "manifest-too-large"}
    assert too_large == {
        str(huge): f"manifest blob of {100 * MIB} bytes exceeds {MAX_MANIFEST_BYTES}",
        str(layered): f"manifest blob of {len(layered_bytes)} bytes exceeds {MAX_MANIFEST_BYTES}",
    }
    assert not any(p["kind"] == "digest-mismatch" for p in problems)
    assert peak < 100 * MIB, f"the sync held {peak} bytes at its peak: the 100 MiB manifest was read whole"
    assert json.loads(out)["tags_published"] == 1  # fine/app:v1
    assert (dest / key_of(RevisionLink("fine/app", fine))).exists()

    status, out, _ = run_measured(tmp_path, "verify", str(source), "--json")
    assert status == 1
    reasons = [p["reason"] for p in json.loads(out)["problems"] if p["kind"] == "broken-tag"]
    assert len(reasons) == 2 and all("exceeds 4194304" in r and "hashes to" not in r for r in reasons), reasons
