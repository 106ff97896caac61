"""End to end, filesystem to filesystem: what a read-only secondary serves after `syncagent sync`.

A primary registry takes real pushes (skopeo, images built with umoci); the
CLI copies its rootdirectory; a second registry, read-only, on the copy must
serve every tag and every manifest digest exactly as the primary does, and at
no moment list a tag it cannot serve.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.images import ImageFactory, layer, pull
from tests.support.registry import Registry
from tests.support.sync_checks import Pushed, assert_serves_like_primary, build_images, push_images, sync_report

PROBLEM_KEYS = {"kind", "repository", "tag", "digest", "reason"}

pytestmark = pytest.mark.e2e

V2 = ("docker", "registry", "v2")


def push_standard_set(images: ImageFactory, primary: Registry) -> Pushed:
    """A single-platform image, a two-platform OCI index, two repositories sharing layers,
    a nested repository name with two tags on one manifest, and an untagged manifest."""
    return push_images(images, build_images(images, {}), primary)


def blob_files(root: Path) -> dict[str, int]:
    """digest -> size of every blob's data file under a rootdirectory."""
    blobs = root.joinpath(*V2, "blobs", "sha256")
    if not blobs.exists():
        return {}
    return {f"sha256:{data.parent.name}": data.stat().st_size for data in blobs.glob("*/*/data")}


def link_files(root: Path) -> dict[str, str]:
    """relative path -> content of every link file under repositories/ (uploads excluded)."""
    repositories = root.joinpath(*V2, "repositories")
    if not repositories.exists():
        return {}
    return {
        str(path.relative_to(repositories)): path.read_text()
        for path in repositories.rglob("link")
        if "_uploads" not in path.relative_to(repositories).parts
    }


def blob_data_path(root: Path, digest: str) -> Path:
    hexdigest = digest.removeprefix("sha256:")
    return root.joinpath(*V2, "blobs", "sha256", hexdigest[:2], hexdigest, "data")


def corrupt_blob(root: Path, digest: str) -> None:
    """Overwrite a blob's data with other bytes of the same size (only hashing can tell)."""
    data = blob_data_path(root, digest)
    data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))
    assert "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest() != digest




def test_sync_publishes_everything_and_follows_a_moved_tag(tmp_path, images, primary, start_registry, syncagent):
    pushed = push_standard_set(images, primary)
    destination = tmp_path / "secondary"

    first = syncagent("sync", primary.root, destination, "--json")
    assert first.returncode == 0, first.describe()
    report = sync_report(first)
    assert report["problems"] == [], first.describe()
    primary_blobs = blob_files(primary.root)
    assert blob_files(destination) == primary_blobs
    assert link_files(destination) == link_files(primary.root)
    assert report["tags_published"] == len(pushed.tags), first.describe()
    assert report["revisions_published"] == len(pushed.digests()), first.describe()
    assert report["blobs_copied"] == len(primary_blobs), first.describe()
    assert report["bytes_copied"] == sum(primary_blobs.values()), first.describe()

    secondary = start_registry(destination, read_only=True, name="secondary")
    assert_serves_like_primary(secondary, primary, pushed, tmp_path / "pulls-1")
    verified = syncagent("verify", destination)
    assert verified.returncode == 0, verified.describe()

    again = syncagent("sync", primary.root, destination, "--json")
    assert again.returncode == 0, again.describe()
    report = sync_report(again)
    assert (report["blobs_copied"], report["tags_published"], report["problems"]) == (0, 0, []), again.describe()

    moved = images.image("single-v2", [layer("base"), layer("single-v2")])
    old = pushed.tags[("library/single", "v1")]
    pushed.tag(images, primary, moved, "library/single", "v1")
    pushed.untagged[("library/single", old.digest)] = old  # the primary still serves it by digest
    assert primary.manifest_digest("library/single", "v1") == moved.digest

    third = syncagent("sync", f"file://{primary.root}", f"file://{destination}", "--json")
    assert third.returncode == 0, third.describe()
    assert sync_report(third)["tags_published"] == 1, third.describe()
    assert link_files(destination) == link_files(primary.root)  # with the tag's history: both digests
    assert secondary.manifest_digest("library/single", "v1") == moved.digest
    assert pull(secondary.url, "library/single", "v1", tmp_path / "pull-moved") == moved.digest
    assert_serves_like_primary(secondary, primary, pushed, tmp_path / "pulls-2")
    verified = syncagent("verify", f"file://{destination}")
    assert verified.returncode == 0, verified.describe()


def test_a_corrupt_source_blob_keeps_only_its_tag_off_the_secondary(tmp_path, images, primary, start_registry, syncagent):
    pushed = push_standard_set(images, primary)
    beta = pushed.tags[("team/beta", "v1")]
    corrupt = beta.layers[-1]  # beta's own top layer: no other image uses it
    assert all(corrupt not in image.blobs for key, image in pushed.tags.items() if key != ("team/beta", "v1"))
    corrupt_blob(primary.root, corrupt)

    destination = tmp_path / "secondary"
    result = syncagent("sync", f"file://{primary.root}", f"file://{destination}", "--json")
    assert result.returncode == 1, result.describe()
    problems = sync_report(result)["problems"]
    assert problems, result.describe()
    assert any(p.get("digest") == corrupt or corrupt in (p.get("reason") or "") for p in problems), result.describe()
    assert any(p.get("repository") == "team/beta" for p in problems), result.describe()
    assert all(p.get("repository") in (None, "team/beta") for p in problems), result.describe()
    assert not blob_data_path(destination, corrupt).exists(), "the corrupt bytes reached the destination"

    secondary = start_registry(destination, read_only=True, name="secondary")
    assert "v1" not in secondary.tags("team/beta")
    assert secondary.api.manifest_status("team/beta", "v1") == 404
    del pushed.tags[("team/beta", "v1")]
    for (repo, tag), image in pushed.tags.items():
        assert secondary.tags(repo) == primary.tags(repo), repo
        assert secondary.servable_problems(repo, tag) == []
        assert pull(secondary.url, repo, tag, tmp_path / "pulls" / f"{repo.replace('/', '_')}-{tag}") == image.digest
    for repo, digest in pushed.digests():
        assert secondary.servable_problems(repo, digest) == []
    verified = syncagent("verify", destination)
    assert verified.returncode == 0, verified.describe()


def test_every_problem_in_the_json_report_has_all_its_fields(tmp_path, images, primary, syncagent):
    """The CLI promises kind, repository, tag, digest and reason on each problem (null when unknown)."""
    image = images.image("broken", [layer("broken")])
    images.push(image, primary.url, "library/broken", "v1")
    corrupt_blob(primary.root, image.layers[0])
    result = syncagent("sync", primary.root, tmp_path / "secondary", "--json")
    assert result.returncode == 1, result.describe()
    problems = sync_report(result)["problems"]
    assert problems, result.describe()
    incomplete = [p for p in problems if not PROBLEM_KEYS <= set(p)]
    assert incomplete == [], f"problems lacking some of {sorted(PROBLEM_KEYS)}: {incomplete}"


@dataclass
class Poll:
    listed: int
    broken: list[str]


class Reader:
    """A client of the secondary: each poll lists every tag and checks each is servable whole,
    the tags it had not seen before first; then every manifest digest the secondary serves."""

    def __init__(self, secondary: Registry, repositories: list[str], digests: list[tuple[str, str]]) -> None:
        self.secondary = secondary
        self.repositories = repositories
        self.digests = digests
        self.seen: set[tuple[str, str]] = set()

    def poll(self) -> Poll:
        listed = [
            (repo, tag)
            for repo in sorted(set(self.secondary.catalog()) | set(self.repositories))
            for tag in self.secondary.tags(repo)
        ]
        broken: list[str] = []
        for repo, tag in sorted(listed, key=lambda item: item in self.seen):
            broken += self.secondary.servable_problems(repo, tag)
        self.seen.update(listed)
        for repo, digest in self.digests:
            if self.secondary.api.manifest_status(repo, digest) == 200:
                broken += self.secondary.servable_problems(repo, digest)
        return Poll(len(listed), broken)


def test_a_reader_of_the_secondary_never_sees_a_broken_tag_during_a_sync(
    tmp_path, images, primary, start_registry, syncagent
):
    pushed = Pushed()
    base, runtime = layer("base"), layer("runtime", size=8000, files=4)
    for number in range(30):
        repo = f"fleet/service-{number % 6}"
        image = images.image(f"svc-{number}", [base, runtime, layer(f"svc-{number}", files=2)])
        pushed.tag(images, primary, image, repo, f"r{number}")
    amd64 = images.image("multi-amd64", [base, layer("multi-amd64")], architecture="amd64")
    arm64 = images.image("multi-arm64", [base, layer("multi-arm64")], architecture="arm64")
    pushed.tag(images, primary, images.index("multi", [amd64, arm64]), "fleet/multi", "v1")
    pushed.by_digest(images, primary, images.image("orphan", [base, layer("orphan")]), "fleet/multi")

    destination = tmp_path / "secondary"
    destination.mkdir()
    secondary = start_registry(destination, read_only=True, name="secondary")
    reader = Reader(secondary, pushed.repositories, pushed.digests())

    sync = syncagent.start("sync", primary.root, destination, "--jobs", "1", "--json")
    polls: list[Poll] = []
    while sync.running():
        polls.append(reader.poll())
    result = sync.finish()
    final = reader.poll()
    assert sync_report(result)["tags_published"] == len(pushed.tags), result.describe()

    broken = [(number, poll.broken) for number, poll in enumerate([*polls, final]) if poll.broken]
    assert broken == [], f"polls that saw a broken tag or revision (of {len(polls) + 1}): {broken[:3]}"
    assert result.returncode == 0, result.describe()
    assert polls, "the sync ended before the first poll"
    assert final.listed == len(pushed.tags)
    print(f"{len(polls)} polls during the sync; tags listed: {[poll.listed for poll in polls]}")
