"""--blobs external and the primary's garbage collection: what the storage's replication deletes breaks
tags on the replica; the next pass takes back exactly those (tags_unpublished), and verify tells them
apart from damage (deleted-at-source).

The storage's replication, the primary's garbage collection and its manifest deletes are played by
tests/support/replication_doubles.py.
"""

from __future__ import annotations

import threading

import pytest

from backends import TransientError
from backends.memory import MemoryBackend
from syncagent.check.compare import compare
from syncagent.check.deleted import classify_deleted_at_source
from syncagent.check.verify import verify_backend
from syncagent.sync.discovery import read_repository
from syncagent.sync.engine import Engine, SyncOptions
from syncagent.sync.layout import BlobData, RevisionLink, key_of
from syncagent.sync.manifest import parse_manifest
from syncagent.sync.plan import PlanSettings, RepositorySurvey, plan_repository
from syncagent.sync.replication import CANARY_KEY
from syncagent.sync.report import Report
from syncagent.sync.steps import CheckHistory, PublishTag, UnpublishRevision, UnpublishTag
from syncagent.sync.survey import survey_repository
from syncagent.sync.execute import Outcome, StepFailed
from syncagent.sync.writer import DestinationWriter, PassContext
from syncagent.testing.synthetic import TreeWriter
from tests.support.replication_doubles import collect_garbage, delete_manifest, replicate_blobs, tags_on

EXTERNAL = PlanSettings(blobs="external")


def external(source, dest, **options):
    return Engine(source, dest, SyncOptions(blobs="external", external_timeout=5, **options)).run()


@pytest.fixture
def world():
    """A source with app:v0..v2 and tools:v0 (a layer shared by all), replicated to a destination in the
    supplement mode."""
    source = MemoryBackend()
    writer = TreeWriter(source)
    shared = b"shared base layer" * 50
    images = {(repo, f"v{n}"): writer.image(repo, [shared, f"{repo} {n}".encode()], tag=f"v{n}")[0]
              for repo, count in (("app", 3), ("tools", 1)) for n in range(count)}
    dest = MemoryBackend()
    replicate_blobs(source, dest)
    report = external(source, dest)
    assert report.ok and report.counters["blobs_replicated"] > 0, report.problems
    return source, dest, writer, images


def test_a_tag_deleted_and_collected_at_the_source_is_taken_back_without_delete(world):
    source, dest, _, images = world
    gone = images[("app", "v1")]
    delete_manifest(source, "app", "v1", gone)
    assert collect_garbage(source)
    replicate_blobs(source, dest)
    assert [p.kind for p in verify_backend(dest).problems] == ["broken-revision", "broken-tag"], "the window GC opens"

    report = external(source, dest)

    assert report.ok, report.problems
    assert (report.counters.get("tags_unpublished", 0), report.counters.get("revisions_unpublished", 0)) == (1, 1)
    assert set(tags_on(dest, "app")) == {"v0", "v2"} and set(tags_on(dest, "tools")) == {"v0"}
    assert not dest.exists(key_of(RevisionLink("app", gone)))
    assert verify_backend(dest, hygiene=False).ok
    assert sorted((f.kind, f.tag or "") for f in report.findings) == [("deleted-at-source", ""), ("deleted-at-source", "v1")]
    assert external(source, dest).counters.get("tags_unpublished", 0) == 0, "nothing more to take back"


def test_a_deleted_tag_whose_blobs_are_still_there_stays_until_delete(world):
    source, dest, _, images = world
    delete_manifest(source, "app", "v1", images[("app", "v1")])

    report = external(source, dest)

    assert report.ok and report.counters.get("tags_unpublished", 0) == 0 and report.counters.get("revisions_unpublished", 0) == 0
    assert set(tags_on(dest, "app")) == {"v0", "v1", "v2"}, "a whole tag is --delete's to remove"
    deleted = external(source, dest, delete=True)
    assert deleted.ok and deleted.counters["tags_deleted"] == 1
    assert set(tags_on(dest, "app")) == {"v0", "v2"}


def test_a_moved_tag_whose_old_closure_was_collected_is_published_at_its_new_digest(world):
    source, dest, writer, images = world
    old = images[("app", "v2")]
    new, _ = writer.image("app", [b"a new build"], tag="v2")
    source.delete(key_of(RevisionLink("app", old)))
    collect_garbage(source)
    replicate_blobs(source, dest)

    report = external(source, dest)

    assert report.ok, report.problems
    assert report.counters.get("tags_unpublished", 0) == 1 and report.counters["tags_published"] == 1
    assert tags_on(dest, "app")["v2"] == str(new)
    assert verify_backend(dest, hygiene=False).ok


def test_an_index_whose_manifest_was_collected_goes_and_its_children_stay(world):
    source, dest, writer, _ = world
    one = writer.image("multi", [b"amd64 layer"], platform="amd64")
    two = writer.image("multi", [b"arm64 layer"], platform="arm64")
    index = writer.index("multi", [(one, "amd64"), (two, "arm64")], tag="v1")
    replicate_blobs(source, dest)
    assert external(source, dest).ok
    delete_manifest(source, "multi", "v1", index)  # distribution keeps the children's revision links
    assert collect_garbage(source) == {index}
    replicate_blobs(source, dest)

    report = external(source, dest)

    assert report.ok, report.problems
    assert tags_on(dest, "multi") == {}
    assert read_repository(dest, "multi").revisions == {one[0], two[0]}
    assert verify_backend(dest, hygiene=False).ok


def test_the_plan_takes_back_tags_first_then_revisions_and_only_with_blobs_replicated_by_the_storage(world):
    source, dest, writer, images = world
    delete_manifest(source, "app", "v0", images[("app", "v0")])
    moved, _ = writer.image("app", [b"moved"], tag="v1")
    replicate_blobs(source, dest)
    survey = survey_repository(source, dest, "app", EXTERNAL, on_problem=lambda p: None, check_history=True)

    steps = plan_repository(survey, EXTERNAL).steps

    unpublish_tags = [i for i, s in enumerate(steps) if isinstance(s, UnpublishTag)]
    assert [(steps[i].tag, steps[i].digest) for i in unpublish_tags] == [("v0", images[("app", "v0")]),
                                                                         ("v1", images[("app", "v1")])]
    revisions = [s for s in steps if isinstance(s, UnpublishRevision)]
    assert [s.digest for s in revisions] == [images[("app", "v0")]]
    assert all(set(unpublish_tags) <= set(s.needs) for s in revisions)
    assert unpublish_tags == [0, 1], "before anything is published"
    assert [s.tag for s in steps if isinstance(s, CheckHistory)] == ["v2"], "no history written under a tag taken back"
    assert [s.digest for s in steps if isinstance(s, PublishTag)] == [moved]
    copying = plan_repository(survey_repository(source, dest, "app", PlanSettings(), on_problem=lambda p: None))
    assert not any(isinstance(s, (UnpublishTag, UnpublishRevision)) for s in copying.steps)


def test_a_dry_run_lists_what_it_would_take_back_and_changes_nothing(world):
    source, dest, _, images = world
    delete_manifest(source, "app", "v1", images[("app", "v1")])
    collect_garbage(source)
    replicate_blobs(source, dest)
    before = {info.key for info in dest.iter_objects("")}

    report = external(source, dest, dry_run=True)

    assert {info.key for info in dest.iter_objects("")} == before
    assert "unpublish app:v1 if its closure (%s) is broken on the destination" % images[("app", "v1")] in report.planned


def writer_for(source, dest, repository: str) -> tuple[DestinationWriter, Report]:
    report = Report()
    context = PassContext(source, dest, report, threading.Event(), copier=None, settings=EXTERNAL)
    return DestinationWriter(context, RepositorySurvey(repository, read_repository(source, repository),
                                                       read_repository(dest, repository))), report


def test_a_broken_tag_the_source_has_again_is_not_taken_back(world):
    source, dest, _, images = world
    digest = images[("app", "v1")]
    layer = next(ref.digest for ref in parse_manifest(source.read_bytes(key_of(BlobData(digest)))).blobs
                 if source.read_bytes(key_of(BlobData(ref.digest))) == b"app 1")
    dest.delete(key_of(BlobData(layer)))  # broken on the destination; the source still has the tag there
    writer, report = writer_for(source, dest, "app")

    outcome = writer.perform(UnpublishTag("app", "v1", digest), [])

    assert outcome is Outcome.SKIPPED
    assert tags_on(dest, "app")["v1"] == str(digest)
    assert [(p.kind, p.tag) for p in report.problems] == [("broken-tag", "v1")]
    assert "--repair" in report.problems[0].reason


class FailingStats(MemoryBackend):
    """A destination whose stats of one key fail as a lost connection does."""

    def __init__(self, failing_key: str) -> None:
        super().__init__()
        self.failing_key = failing_key

    def stat(self, key):
        if key == self.failing_key:
            raise TransientError("connection reset", key=key)
        return super().stat(key)


def test_a_closure_that_cannot_be_read_takes_nothing_back(world):
    source, dest, _, images = world
    digest = images[("app", "v1")]
    layer = parse_manifest(source.read_bytes(key_of(BlobData(digest)))).blobs[-1].digest
    flaky = FailingStats(key_of(BlobData(layer)))
    for info in dest.iter_objects(""):
        flaky.put_bytes(info.key, dest.read_bytes(info.key))
    delete_manifest(source, "app", "v1", digest)
    writer, report = writer_for(source, flaky, "app")

    with pytest.raises(StepFailed):
        writer.perform(UnpublishTag("app", "v1", digest), [])

    assert tags_on(flaky, "app")["v1"] == str(digest)
    assert [p.kind for p in report.problems] == ["delete-failed"]


# --- verify SRC --against DST: deleted-at-source, and a rule that is too wide ------------------------


def classified(source, dest) -> list[tuple[str, str | None]]:
    report = verify_backend(dest, hygiene=False)
    classify_deleted_at_source(source, dest, report, compare(source, dest, Report()))
    return sorted((p.kind, p.tag or "") for p in report.problems)


def test_verify_tells_a_delete_that_has_not_arrived_from_damage(world):
    source, dest, _, images = world
    delete_manifest(source, "app", "v1", images[("app", "v1")])
    collect_garbage(source)
    replicate_blobs(source, dest)

    assert classified(source, dest) == [("deleted-at-source", ""), ("deleted-at-source", "v1")]


def test_verify_reports_a_blob_lost_by_the_replica_as_damage_even_for_a_tag_the_source_deleted(world):
    source, dest, _, images = world
    digest = images[("app", "v1")]
    delete_manifest(source, "app", "v1", digest)  # not collected: the source keeps every blob
    dest.delete(key_of(BlobData(parse_manifest(source.read_bytes(key_of(BlobData(digest)))).blobs[-1].digest)))

    assert classified(source, dest) == [("broken-revision", ""), ("broken-tag", "v1")]


def test_verify_reports_a_tag_the_source_still_has_as_damage(world):
    source, dest, _, images = world
    digest = images[("tools", "v0")]
    own = parse_manifest(source.read_bytes(key_of(BlobData(digest)))).blobs[-1].digest
    source.delete(key_of(BlobData(own)))  # gone at both ends, but the source still lists the tag
    dest.delete(key_of(BlobData(own)))

    assert classified(source, dest) == [("broken-revision", ""), ("broken-tag", "v0")]


def test_verify_against_reports_deleted_at_source_and_a_rule_too_wide(world, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from backends.filesystem import FilesystemBackend

    source_mem, dest_mem, _, images = world
    delete_manifest(source_mem, "app", "v1", images[("app", "v1")])
    collect_garbage(source_mem)
    replicate_blobs(source_mem, dest_mem)
    dest_mem.put_bytes(CANARY_KEY, b"{}")  # what a rule wider than blobs/ carries over
    for name, memory in (("src", source_mem), ("dst", dest_mem)):
        target = FilesystemBackend(tmp_path / name)
        for info in memory.iter_objects(""):
            target.put_bytes(info.key, memory.read_bytes(info.key))

    done = subprocess.run([sys.executable, "-m", "syncagent", "verify", str(tmp_path / "src"), "--against",
                           str(tmp_path / "dst"), "--json"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])

    assert done.returncode == 1, done.stderr
    kinds = sorted(p["kind"] for p in json.loads(done.stdout)["destination"]["problems"])
    assert kinds == ["deleted-at-source", "deleted-at-source", "replication-too-wide"]
