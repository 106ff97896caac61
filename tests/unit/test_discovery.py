"""Reading a repository's tags and revisions, with and without MD5 hints in listings."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from backends.base import ObjectInfo
from backends.memory import MemoryBackend
from syncagent.sync.discovery import read_repository
from syncagent.sync.layout import Digest, RevisionLink, TagCurrentLink, key_of
from syncagent.sync.report import Report
from syncagent.testing.synthetic import TreeShape, write_tree


class HintedMemory(MemoryBackend):
    """A memory backend whose listings carry MD5 hints, like S3's ETags; counts the reads of links."""

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = replace(self.capabilities, listing_md5=True)
        self.reads: list[str] = []
        self.wrong_hints: set[str] = set()  # keys whose hint is not their MD5 (as SSE-KMS gives)

    def iter_objects(self, prefix):
        for info in super().iter_objects(prefix):
            with MemoryBackend.open_read(self, info.key) as stream:  # what the store knows, not a read of ours
                md5 = "0" * 32 if info.key in self.wrong_hints else hashlib.md5(stream.read()).hexdigest()
            yield ObjectInfo(info.key, info.size, md5)

    def open_read(self, key):
        self.reads.append(key)
        return super().open_read(key)


@pytest.fixture
def pair():
    plain, hinted = MemoryBackend(), HintedMemory()
    shape = TreeShape(repositories=2, tags_per_repository=3, index_every=2, untagged_per_repository=1, layer_bytes=(10, 100))
    tree = write_tree(plain, shape)
    write_tree(hinted, shape)
    hinted.reads.clear()
    return plain, hinted, tree


def revision_keys(state):
    return {key_of(RevisionLink(state.name, digest)) for digest in state.revisions}


def test_hints_stand_in_for_reading_revision_links_and_give_the_same_state(pair):
    plain, hinted, tree = pair
    for repository in tree.repositories:
        expected, found = read_repository(plain, repository), read_repository(hinted, repository)
        assert found == expected and found.revisions
        assert not set(hinted.reads) & revision_keys(found)


def test_a_hint_that_is_not_the_md5_means_the_link_is_read(pair):
    plain, hinted, tree = pair
    repository = tree.repositories[0]
    wrong = sorted(revision_keys(read_repository(plain, repository)))[0]
    hinted.wrong_hints.add(wrong)
    assert read_repository(hinted, repository) == read_repository(plain, repository)
    assert [key for key in hinted.reads if "/_manifests/revisions/" in key] == [wrong]


def test_a_corrupt_revision_link_is_reported_whatever_its_hint_says(pair):
    plain, hinted, tree = pair
    repository = tree.repositories[0]
    victim = sorted(revision_keys(read_repository(plain, repository)))[0]
    other = Digest.parse("sha256:" + "e" * 64)
    for backend in (plain, hinted):
        backend.put_bytes(victim, b"sha256:" + b"e" * 64)
    problems = {}
    for name, backend in (("plain", plain), ("hinted", hinted)):
        report = Report()
        state = read_repository(backend, repository, report.add_problem)
        problems[name] = [(p.kind, p.key) for p in report.problems]
        assert other not in state.revisions
    assert problems["plain"] == problems["hinted"] == [("invalid-link", victim)]


def test_badly_named_revision_directories_are_reported_either_way(pair):
    plain, hinted, tree = pair
    repository = tree.repositories[0]
    for backend in (plain, hinted):
        backend.put_bytes(f"docker/registry/v2/repositories/{repository}/_manifests/revisions/sha256/NOT-HEX/link", b"x")
    kinds = {}
    for name, backend in (("plain", plain), ("hinted", hinted)):
        report = Report()
        read_repository(backend, repository, report.add_problem)
        kinds[name] = [(p.kind, p.key.rsplit("/", 1)[-1]) for p in report.problems]
    assert kinds["plain"] == kinds["hinted"] == [("invalid-name", "NOT-HEX")]


def tag_keys(state):
    return {key_of(TagCurrentLink(state.name, tag)) for tag in state.tags}


def test_hints_stand_in_for_reading_current_links_that_hold_the_expected_digest(pair):
    plain, hinted, tree = pair
    repository = tree.repositories[0]
    expected = read_repository(plain, repository)
    moved = sorted(expected.tags)[0]
    other = sorted(expected.revisions - {expected.tags[moved]})[0]
    wanted = dict(expected.tags, **{moved: other})  # the other side moved one tag
    found = read_repository(hinted, repository, expected_tags=wanted)
    assert found == expected
    assert [key for key in hinted.reads if key in tag_keys(found)] == []  # the moved one's hint names its revision


def test_without_expected_tags_hints_name_the_revision_each_current_link_holds(pair):
    """A source on S3 is read without a GET per tag: the hint of a current link is the MD5 of one of
    the repository's revision links (issue 12: requests per pass O(repositories), not O(tags))."""
    plain, hinted, tree = pair
    repository = tree.repositories[0]
    expected = read_repository(plain, repository)
    assert read_repository(hinted, repository) == expected and expected.tags
    assert not set(hinted.reads) & tag_keys(expected)


def test_a_current_link_whose_hint_names_no_revision_is_read(pair):
    plain, hinted, tree = pair
    repository = tree.repositories[0]
    tags = sorted(tree.tags[repository])
    elsewhere = Digest.parse("sha256:" + "d" * 64)  # no revision link of this repository holds it
    wrong = key_of(TagCurrentLink(repository, tags[1]))
    for backend in (plain, hinted):
        backend.put_bytes(key_of(TagCurrentLink(repository, tags[0])), b"sha256:" + b"d" * 64)
    hinted.wrong_hints.add(wrong)
    found = read_repository(hinted, repository)
    assert found == read_repository(plain, repository) and found.tags[tags[0]] == elsewhere
    assert sorted(key for key in hinted.reads if "/_manifests/tags/" in key) == sorted(
        [key_of(TagCurrentLink(repository, tags[0])), wrong])


def test_a_tag_without_its_current_link_is_reported_either_way(pair):
    plain, hinted, tree = pair
    repository = tree.repositories[0]
    tag = sorted(tree.tags[repository])[0]
    problems = {}
    for name, backend in (("plain", plain), ("hinted", hinted)):
        backend.delete(key_of(TagCurrentLink(repository, tag)))
        report = Report()
        state = read_repository(backend, repository, report.add_problem, expected_tags={tag: Digest.parse(tree.tags[repository][tag])})
        assert tag not in state.tags
        problems[name] = [(p.kind, p.tag) for p in report.problems]
    assert problems["plain"] == problems["hinted"] == [("missing-link", tag)]


def test_a_resync_into_a_store_with_hints_reads_no_link_and_follows_a_moved_tag():
    from syncagent.sync.engine import Engine, SyncOptions
    from syncagent.testing.synthetic import TreeWriter

    source, dest = MemoryBackend(), HintedMemory()
    writer = TreeWriter(source)
    for n in range(3):
        writer.image(f"app{n}", [f"layer {n}".encode()], tag="v1")
    assert Engine(source, dest, SyncOptions()).run().ok
    dest.reads.clear()
    again = Engine(source, dest, SyncOptions()).run()
    assert again.ok and again.counters["tags_up_to_date"] == 3 and again.counters["links_written"] == 0
    assert [key for key in dest.reads if "/_manifests/" in key] == []
    moved, _ = writer.image("app1", [b"a new layer"], tag="v1")
    dest.reads.clear()
    report = Engine(source, dest, SyncOptions()).run()
    assert report.ok and report.counters["tags_published"] == 1
    assert read_repository(dest, "app1").tags == {"v1": moved}
    assert key_of(TagCurrentLink("app1", "v1")) in dest.reads  # its hint did not vouch: read


@pytest.mark.parametrize("etag, hint", [
    ('"0123456789abcdef0123456789ABCDEF"', "0123456789abcdef0123456789abcdef"),
    ("0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
    ('"0123456789abcdef0123456789abcdef-3"', None),
    ("", None),
    (None, None),
])
def test_s3_etags_become_md5_hints_only_when_they_can_be_one(etag, hint):
    from backends.s3.streams import md5_of_etag as _md5_of_etag

    assert _md5_of_etag(etag) == hint
