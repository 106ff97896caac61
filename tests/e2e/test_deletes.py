"""End to end: ``sync --delete`` and ``verify`` against real registries (docker-registry 2.8, skopeo).

- Deletes made on a real primary through the registry's own API reach the
  replica: a read-only registry on it stops serving exactly those tags and
  manifests and serves everything else, byte for byte.
- A reader of that read-only registry, polling while ``sync --delete
  --prune-blobs`` runs, never finds a listed tag (or a served manifest) whose
  closure is broken.
- An empty, missing or unreadable source, and a swap of source and
  destination, are refused and delete nothing.
- ``verify`` classifies damage planted in a copy of a real registry tree;
  ``verify --against --repair`` heals it.

What distribution 2.8 does on ``DELETE /v2/<name>/manifests/<digest>`` (there
is no tag delete API): it removes the manifest's revision ``link`` file (its
directory stays) and the whole ``_manifests/tags/<tag>/`` directory of every
tag whose ``current/link`` names that digest. ``_layers`` links and blob data
stay until ``docker-registry garbage-collect``, which removes blob data only
(the ``_layers`` links then dangle). A tag alone is deleted by deleting its
manifest and pushing the manifest again by digest.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from syncagent.check.registry import RegistryChecker
from tests.support.images import Image, ImageFactory, layer, pull
from tests.support.registry import Registry
from tests.support.sync_checks import Pushed

pytestmark = pytest.mark.e2e

V2 = ("docker", "registry", "v2")
TAGS_PER_DOOMED_IMAGE = 100


# --------------------------------------------------------------------------- storage helpers


def repositories_dir(root: Path) -> Path:
    return root.joinpath(*V2, "repositories")


def blob_data_path(root: Path, digest: str) -> Path:
    hexdigest = digest.removeprefix("sha256:")
    return root.joinpath(*V2, "blobs", "sha256", hexdigest[:2], hexdigest, "data")


def blob_files(root: Path) -> dict[str, int]:
    blobs = root.joinpath(*V2, "blobs", "sha256")
    return {f"sha256:{p.parent.name}": p.stat().st_size for p in blobs.glob("*/*/data")} if blobs.exists() else {}


def link_files(root: Path) -> dict[str, str]:
    """relative path -> content of every link file under repositories/ (uploads excluded)."""
    repos = repositories_dir(root)
    if not repos.exists():
        return {}
    return {
        str(p.relative_to(repos)): p.read_text()
        for p in repos.rglob("link")
        if "_uploads" not in p.relative_to(repos).parts
    }


def file_set(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (what "deleted nothing" compares)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tag_dir(root: Path, repo: str, tag: str) -> Path:
    return repositories_dir(root) / repo / "_manifests" / "tags" / tag


def revision_link(root: Path, repo: str, digest: str) -> Path:
    return repositories_dir(root) / repo / "_manifests" / "revisions" / "sha256" / digest.removeprefix("sha256:") / "link"


def layer_link(root: Path, repo: str, digest: str) -> Path:
    return repositories_dir(root) / repo / "_layers" / "sha256" / digest.removeprefix("sha256:") / "link"


def collect_garbage(primary: Registry) -> str:
    """``docker-registry garbage-collect`` on the primary's configuration (no pushes run meanwhile)."""
    done = subprocess.run(
        ["docker-registry", "garbage-collect", str(primary.config_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def drop_dangling_layer_links(root: Path) -> list[Path]:
    """Remove ``_layers`` links whose blob data is gone (what 2.8's garbage-collect leaves behind)."""
    dropped = []
    for link in repositories_dir(root).glob("**/_layers/sha256/*/link"):
        if not blob_data_path(root, link.read_text()).exists():
            link.unlink()
            link.parent.rmdir()
            dropped.append(link)
    return dropped


def problems_of(result, kind: str | None = None) -> list[dict]:
    problems = result.json()["problems"]
    return [p for p in problems if kind is None or p["kind"] == kind]


# --------------------------------------------------------------------------- what was pushed


def assert_serves_exactly(secondary: Registry, primary: Registry, pushed: Pushed) -> None:
    """The secondary lists what the primary lists and serves every remaining tag and digest whole,
    with the primary's digest."""
    assert secondary.catalog() == primary.catalog()
    for repo in pushed.repositories:
        assert secondary.tags(repo) == primary.tags(repo) == sorted(t for r, t in pushed.tags if r == repo), repo
    for (repo, tag), image in pushed.tags.items():
        assert secondary.manifest_digest(repo, tag) == image.digest, f"{repo}:{tag}"
        assert secondary.servable_problems(repo, tag) == [], f"{repo}:{tag}"
    for repo, digest in pushed.digests():
        assert secondary.servable_problems(repo, digest) == [], f"{repo}@{digest}"


# --------------------------------------------------------------------------- deletes reach the replica


def test_deleted_tags_and_manifests_disappear_from_the_replica_and_nothing_else(
    tmp_path, images, primary, start_registry, syncagent
):
    pushed = Pushed()
    base = layer("base")
    kept, tag_only, manifest_gone = (images.image(n, [base, layer(n)]) for n in ("kept", "tag-only", "manifest-gone"))
    pushed.tag(images, primary, kept, "library/app", "v1")
    pushed.tag(images, primary, tag_only, "library/app", "v2")
    pushed.tag(images, primary, manifest_gone, "library/app", "v3")
    amd64 = images.image("multi-amd64", [base, layer("multi-amd64")], architecture="amd64")
    arm64 = images.image("multi-arm64", [base, layer("multi-arm64")], architecture="arm64")
    index = images.index("multi", [amd64, arm64])
    pushed.tag(images, primary, index, "library/multi", "v1")
    pushed.tag(images, primary, amd64, "library/multi", "amd64-only")
    twice, other = images.image("twice", [layer("twice")]), images.image("other", [layer("other")])
    pushed.tag(images, primary, twice, "team/tools", "a")
    pushed.tag(images, primary, twice, "team/tools", "b")
    pushed.tag(images, primary, other, "team/tools", "c")
    pushed.by_digest(images, primary, images.image("orphan", [base, layer("orphan")]), "library/app")

    replica = tmp_path / "replica"
    first = syncagent("sync", primary.root, replica, "--json")
    assert first.returncode == 0, first.describe()
    assert (replica / ".syncagent" / "replica.json").is_file()
    secondary = start_registry(replica, read_only=True, name="secondary")
    assert_serves_exactly(secondary, primary, pushed)

    # On the primary, through its API: a tag alone (delete its manifest, push the manifest back by digest),
    # a manifest with its tag, an index, and a manifest with two tags.
    before = link_files(primary.root)
    primary.api.delete_manifest("library/app", tag_only.digest)
    images.push(tag_only, primary.url, "library/app")
    primary.api.delete_manifest("library/app", manifest_gone.digest)
    primary.api.delete_manifest("library/multi", index.digest)
    primary.api.delete_manifest("team/tools", twice.digest)
    removed = set(before) - set(link_files(primary.root))
    assert not (set(link_files(primary.root)) - set(before))
    assert removed == {
        *(f"{repo}/_manifests/tags/{tag}/{kind}" for repo, tag, digest in [
            ("library/app", "v2", tag_only.digest), ("library/app", "v3", manifest_gone.digest),
            ("library/multi", "v1", index.digest), ("team/tools", "a", twice.digest), ("team/tools", "b", twice.digest)]
          for kind in ("current/link", f"index/sha256/{digest[7:]}/link")),
        *(f"{repo}/_manifests/revisions/sha256/{d[7:]}/link"
          for repo, d in [("library/app", manifest_gone.digest), ("library/multi", index.digest), ("team/tools", twice.digest)]),
    }, "what registry 2.8 removes on a manifest delete"
    assert revision_link(primary.root, "library/app", manifest_gone.digest).parent.is_dir()  # its directory stays
    for key in [("library/app", "v2"), ("library/app", "v3"), ("library/multi", "v1"), ("team/tools", "a"), ("team/tools", "b")]:
        del pushed.tags[key]
    pushed.untagged[("library/app", tag_only.digest)] = tag_only
    for child in (amd64, arm64):
        pushed.untagged[("library/multi", child.digest)] = child  # the index's children stay, untagged
    gone_digests = [("library/app", manifest_gone.digest), ("library/multi", index.digest), ("team/tools", twice.digest)]

    replica_files = file_set(replica)
    dry = syncagent("sync", primary.root, replica, "--delete", "--dry-run")
    assert dry.returncode == 0, dry.describe()
    assert "delete docker/registry/v2/repositories/team/tools/_manifests/tags/a/current/link" in dry.stdout, dry.describe()
    assert file_set(replica) == replica_files, "--dry-run changed the replica"

    result = syncagent("sync", primary.root, replica, "--delete", "--prune-blobs", "--json")
    assert result.returncode == 0, result.describe()
    report = result.json()
    assert (report["tags_deleted"], report["revisions_deleted"], report["blobs_deleted"]) == (5, 3, 0), result.describe()

    assert link_files(replica) == link_files(primary.root)
    assert blob_files(replica) == blob_files(primary.root)  # the primary still has every blob: nothing to prune
    for repo, tag in [("library/app", "v2"), ("library/app", "v3"), ("library/multi", "v1"), ("team/tools", "a")]:
        assert secondary.api.manifest_status(repo, tag) == 404, f"{repo}:{tag}"
        assert not tag_dir(replica, repo, tag).exists()
    for repo, digest in gone_digests:
        assert secondary.api.manifest_status(repo, digest) == 404, f"{repo}@{digest}"
    assert_serves_exactly(secondary, primary, pushed)
    assert pull(secondary.url, "library/app", tag_only.digest, tmp_path / "pull-tag-only") == tag_only.digest
    assert pull(secondary.url, "library/app", "v1", tmp_path / "pull-kept") == kept.digest

    compared = syncagent("verify", primary.root, "--against", replica, "--json")
    assert compared.returncode == 0, compared.describe()
    assert compared.json()["comparison"]["differs"] is False
    human = syncagent("verify", primary.root, "--against", replica)
    assert human.returncode == 0 and "in sync" in human.stdout, human.describe()
    again = syncagent("sync", primary.root, replica, "--delete", "--json")
    assert again.returncode == 0 and again.json()["tags_deleted"] == 0, again.describe()


# --------------------------------------------------------------------------- a reader during deletes


class Reader:
    """A client of the read-only replica registry, polling while deletes run.

    Each poll lists every repository's tags, then asks the registry, the way a
    client pulls, for a rotating sample of the listed tags (most of them among
    those being deleted, whose state changes) and for every manifest digest
    being deleted: manifest, children, blobs. A tag or digest being deleted may
    vanish at any moment, but only whole: its manifest answers 404 with the
    *tag* unknown (``detail: {"Tag": ...}``), or by digest the revision unknown.
    Anything else is broken: a tag still there whose revision is gone (404 with
    ``detail: {"Revision": ...}``), or a served manifest with a blob missing --
    unless the manifest itself is gone when asked again right after (deletes
    never come back, so a manifest still served after part of its closure went
    missing was served broken).
    """

    def __init__(self, registry: Registry, repositories: list[str], doomed: set[tuple[str, str]],
                 digests: set[tuple[str, str]], sample: int = 16) -> None:
        self.checker = RegistryChecker(registry.url, timeout=10)
        self.repositories = repositories
        self.doomed = doomed  # (repo, tag or digest) being deleted
        self.doomed_digests = sorted(key for key in doomed if key[1].startswith("sha256:"))
        self.kept_digests = sorted(digests - doomed)
        self.sample = sample
        self.offset = 0
        self.listed_history: list[int] = []
        self.checked = 0

    @staticmethod
    def _vanished(repo: str, ref: str, reasons: list[str]) -> bool:
        if len(reasons) != 1:
            return False
        if ref.startswith("sha256:"):
            return reasons[0].startswith(f"manifest {repo}@{ref}: HTTP 404")
        return reasons[0].startswith(f"manifest {repo}:{ref}: HTTP 404") and f"(tag {ref})" in reasons[0]

    def _judge(self, repo: str, ref: str) -> list[str]:
        check = self.checker.check_digest if ref.startswith("sha256:") else self.checker.check_tag
        self.checked += 1
        reasons = check(repo, ref)
        if not reasons:
            return []
        if (repo, ref) in self.doomed:
            if self._vanished(repo, ref, reasons):
                return []
            again = check(repo, ref)
            if self._vanished(repo, ref, again) and not any("(revision " in r for r in reasons):
                return []  # it vanished (whole) while we were asking for its blobs
        return [f"{repo} {ref}: {reason}" for reason in reasons]

    def poll(self, *, everything: bool = False) -> list[str]:
        listed = [(repo, tag) for repo in self.repositories for tag in self.checker.list_tags(repo)]
        self.listed_history.append(len(listed))
        if everything:
            chosen = listed + self.doomed_digests + self.kept_digests
        else:
            doomed = [key for key in listed if key in self.doomed]
            kept = [key for key in listed if key not in self.doomed]
            self.offset += 1
            chosen = _rotate(doomed, self.offset * self.sample, self.sample) + _rotate(kept, self.offset * 2, 2)
            chosen += self.doomed_digests
        broken: list[str] = []
        for repo, ref in chosen:
            broken += self._judge(repo, ref)
        return broken


def _rotate(items: list, start: int, count: int) -> list:
    if not items:
        return []
    return [items[(start + i) % len(items)] for i in range(min(count, len(items)))]


def put_tags(registry: Registry, images: ImageFactory, image: Image, repo: str, tags: list[str]) -> None:
    """Tag an already pushed manifest many times, as clients do: ``PUT /v2/<name>/manifests/<tag>``."""
    body = images.read_blob(image.digest)
    with requests.Session() as session:
        for tag in tags:
            response = session.put(
                f"http://{registry.url}/v2/{repo}/manifests/{tag}", data=body, headers={"Content-Type": image.media_type}
            )
            assert response.status_code == 201, response.text


def test_a_reader_never_sees_a_listed_tag_lose_its_closure_while_deletes_run(
    tmp_path, images, primary, start_registry, syncagent
):
    pushed = Pushed()
    base, runtime = layer("base"), layer("runtime", size=8000, files=4)
    doomed_numbers = {0, 3, 6, 9, 12, 15}
    for number in range(16):
        repo = f"fleet/service-{number % 4}"
        image = images.image(f"svc-{number}", [base, runtime, layer(f"svc-{number}", files=2)])
        pushed.tag(images, primary, image, repo, f"r{number}")
        extra = [f"r{number}-{n}" for n in range(TAGS_PER_DOOMED_IMAGE if number in doomed_numbers else 4)]
        put_tags(primary, images, image, repo, extra)
        pushed.tags.update({(repo, tag): image for tag in extra})
    amd64 = images.image("multi-amd64", [base, layer("multi-amd64")], architecture="amd64")
    arm64 = images.image("multi-arm64", [base, layer("multi-arm64")], architecture="arm64")
    index = images.index("multi", [amd64, arm64])
    pushed.tag(images, primary, index, "fleet/multi", "v1")
    pushed.tag(images, primary, images.image("multi-keep", [base, layer("multi-keep")]), "fleet/multi", "keep")

    replica = tmp_path / "replica"
    first = syncagent("sync", primary.root, replica)
    assert first.returncode == 0, first.describe()
    secondary = start_registry(replica, read_only=True, name="secondary")

    doomed_images = [(f"fleet/service-{n % 4}", pushed.tags[(f"fleet/service-{n % 4}", f"r{n}")]) for n in sorted(doomed_numbers)]
    doomed_images.append(("fleet/multi", index))
    doomed_manifests = {(repo, image.digest) for repo, image in doomed_images}
    doomed = {key for key, image in pushed.tags.items() if (key[0], image.digest) in doomed_manifests} | doomed_manifests
    every_digest = set(pushed.digests())
    for repo, image in doomed_images:
        primary.api.delete_manifest(repo, image.digest)  # and with it every tag that points to it
    for key in [key for key in pushed.tags if key in doomed]:
        del pushed.tags[key]
    for child in (amd64, arm64):
        pushed.untagged[("fleet/multi", child.digest)] = child  # the index's children stay, untagged
    # The primary's garbage collection removes the blob data nothing references any more (the deleted
    # manifests, their own layers and configs, the index); its left-over _layers links are removed too,
    # as a collector that cleans links would, so the replica has links and blobs to prune as well.
    collect_garbage(primary)
    assert drop_dangling_layer_links(primary.root), "the garbage collection freed no layer"
    doomed_blobs = set(blob_files(replica)) - set(blob_files(primary.root))
    assert doomed_blobs

    reader = Reader(secondary, pushed.repositories, doomed, every_digest)
    assert reader.poll() == []
    deletes = syncagent.start(
        "sync", primary.root, replica, "--delete", "--prune-blobs", "--max-delete", "95", "--jobs", "1", "--json"
    )
    polls: list[list[str]] = []
    while deletes.running():
        polls.append(reader.poll())
    result = deletes.finish()
    polls.append(reader.poll(everything=True))

    broken = [(number, found) for number, found in enumerate(polls) if found]
    assert broken == [], f"polls that found a listed tag or a served manifest broken (of {len(polls)}): {broken[:3]}"
    assert result.returncode == 0, result.describe()
    report = result.json()
    doomed_tags = [key for key in doomed if not key[1].startswith("sha256:")]
    assert report["tags_deleted"] == len(doomed_tags), result.describe()
    assert report["revisions_deleted"] == len(doomed_images), result.describe()
    assert report["blobs_deleted"] == len(doomed_blobs), result.describe()
    assert blob_files(replica) == blob_files(primary.root)
    assert link_files(replica) == link_files(primary.root)
    full, empty = reader.listed_history[0], reader.listed_history[-1]
    assert empty == len(pushed.tags)
    between = [n for n in reader.listed_history[1:-1] if empty < n < full]
    print(
        f"{len(polls) - 1} polls while sync --delete ran ({result.json()['elapsed_seconds']} s in the engine), "
        f"{len(between)} of them listed a part of the {full - empty} tags being deleted; {reader.checked} checks"
    )
    for repo in pushed.repositories:
        assert secondary.tags(repo) == primary.tags(repo), repo
    for repo, ref in sorted(doomed)[::25] + sorted(doomed_manifests):
        assert secondary.api.manifest_status(repo, ref) == 404, f"{repo} {ref}"
    for repo, digest in sorted(pushed.digests()):
        assert secondary.servable_problems(repo, digest) == [], f"{repo}@{digest}"
    compared = syncagent("verify", primary.root, "--against", replica, "--json")
    assert compared.returncode == 0 and compared.json()["comparison"]["differs"] is False, compared.describe()

    # The reader is not blind: a blob removed under a tag that stays is reported at once.
    kept_repo, kept_tag = next(iter(pushed.tags))
    blob_data_path(replica, pushed.tags[(kept_repo, kept_tag)].layers[-1]).unlink()
    assert any(line.startswith(f"{kept_repo} {kept_tag}:") for line in reader.poll(everything=True))


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def synced(tmp_path, images, primary, syncagent):
    """A primary with three repositories and a replica synced from it."""
    base = layer("base")
    for number, repo in enumerate(("library/one", "library/two", "team/three")):
        for tag in ("v1", "v2"):
            images.push(images.image(f"{repo}-{tag}".replace("/", "-"), [base, layer(f"{number}-{tag}")]), primary.url, repo, tag)
    replica = tmp_path / "replica"
    result = syncagent("sync", primary.root, replica)
    assert result.returncode == 0, result.describe()
    return primary, replica


def assert_refused(result, *, reason: str) -> None:
    assert result.returncode == 1, result.describe()
    refusals = problems_of(result, "delete-refused")
    assert len(refusals) == 1, result.describe()
    assert reason in refusals[0]["reason"], result.describe()
    assert result.json()["tags_deleted"] == 0


def test_an_empty_source_is_refused(tmp_path, synced, syncagent):
    _, replica = synced
    before = file_set(replica)
    empty = tmp_path / "empty"
    empty.joinpath(*V2).mkdir(parents=True)  # an empty registry root; a directory without one is a usage error
    result = syncagent("sync", empty, replica, "--delete", "--json")
    assert_refused(result, reason="holds no repositories")
    forced_limit = syncagent("sync", empty, replica, "--delete", "--max-delete", "100", "--json")
    assert_refused(forced_limit, reason="holds no repositories")
    assert file_set(replica) == before


def test_an_unreadable_source_is_refused(tmp_path, synced, syncagent):
    """Tests run as root, so no permission bits stop a read: a missing path and files where
    directories belong stand for a source that cannot be listed."""
    primary, replica = synced
    before = file_set(replica)
    missing = syncagent("sync", tmp_path / "no-such-registry", replica, "--delete", "--force", "--json")
    # A source that is not a registry root is a configuration error, caught before anything runs (exit 2).
    assert missing.returncode == 2 and "does not exist" in missing.stderr, missing.describe()

    a_file = tmp_path / "a-file"
    a_file.write_text("not a registry")
    not_a_directory = syncagent("sync", a_file, replica, "--delete", "--force", "--json")
    # A file given as the source root is a configuration error, caught before anything runs (exit 2).
    assert not_a_directory.returncode == 2 and "is not a directory" in not_a_directory.stderr, not_a_directory.describe()

    broken_root = tmp_path / "broken-root"
    broken_root.joinpath(*V2).parent.mkdir(parents=True)
    broken_root.joinpath(*V2).write_text("a file where the v2 directory belongs")
    flat = syncagent("sync", broken_root, replica, "--delete", "--json")
    assert flat.returncode == 2 and "no docker/registry/v2" in flat.stderr, flat.describe()
    broken_repositories = tmp_path / "broken-repositories"
    broken_repositories.joinpath(*V2).mkdir(parents=True)
    broken_repositories.joinpath(*V2, "repositories").write_text("a file where the repositories directory belongs")
    unlistable = syncagent("sync", broken_repositories, replica, "--delete", "--json")
    assert unlistable.returncode == 1 and problems_of(unlistable, "delete-refused"), unlistable.describe()
    assert file_set(replica) == before


def test_a_repository_that_cannot_be_read_at_the_source_is_not_emptied(tmp_path, synced, syncagent):
    """One repository of the source whose tags directory is a file: the source is readable but that
    repository is not; its tags must stay on the replica (nothing absent from a listing that failed
    counts as deleted)."""
    primary, replica = synced
    source = tmp_path / "source-copy"
    shutil.copytree(primary.root, source)
    tags = repositories_dir(source) / "library" / "two" / "_manifests" / "tags"
    shutil.rmtree(tags)
    tags.write_text("a file where the tags directory belongs")
    before = file_set(replica)
    result = syncagent("sync", source, replica, "--delete", "--json")
    kept = file_set(replica)
    assert {k for k in before if "/library/two/_manifests/tags/" in k} <= set(kept), result.describe()
    assert result.json()["tags_deleted"] == 0, result.describe()


def test_swapped_source_and_destination_are_refused(tmp_path, images, synced, syncagent):
    primary, replica = synced
    images.push(images.image("newer", [layer("newer")]), primary.url, "library/one", "v3")  # the replica lags
    before = file_set(primary.root)
    swapped = syncagent("sync", replica, primary.root, "--delete", "--json")
    assert_refused(swapped, reason="swapped")
    assert file_set(primary.root) == before
    assert primary.tags("library/one") == ["v1", "v2", "v3"]
    assert not (primary.root / ".syncagent").exists()


def test_a_mass_delete_is_refused_unless_forced(tmp_path, synced, syncagent):
    primary, replica = synced
    source = tmp_path / "partial-source"
    shutil.copytree(primary.root, source)
    for repo in ("library/one", "library/two"):
        shutil.rmtree(repositories_dir(source) / repo)
    before = file_set(replica)
    refused = syncagent("sync", source, replica, "--delete", "--json")
    assert_refused(refused, reason="more than the limit of 50%")
    assert file_set(replica) == before
    forced = syncagent("sync", source, replica, "--delete", "--force", "--json")
    assert forced.returncode == 0, forced.describe()
    assert forced.json()["tags_deleted"] == 4
    assert not (repositories_dir(replica) / "library" / "one").exists()
    assert not (repositories_dir(replica) / "library" / "two").exists()
    assert (repositories_dir(replica) / "team" / "three").is_dir()


# --------------------------------------------------------------------------- damage, found and repaired


def damaged_copy(tmp_path: Path, images: ImageFactory, primary: Registry) -> tuple[Pushed, Path, dict]:
    """Images pushed to the primary, a copy of its real tree, then a tag moved on the primary (the copy's
    is stale); returns what was pushed, the copy, and per kind of damage its repository."""
    pushed = Pushed()
    base = layer("base")
    names = {"blob": "library/lost-blob", "link": "library/lost-link", "corrupt": "library/corrupt",
             "empty": "library/empty-link", "stale": "library/stale"}
    for kind, repo in names.items():
        pushed.tag(images, primary, images.image(f"{kind}-v1", [base, layer(f"{kind}-v1")]), repo, "v1")
    amd64 = images.image("multi-amd64", [base, layer("multi-amd64")], architecture="amd64")
    arm64 = images.image("multi-arm64", [base, layer("multi-arm64")], architecture="arm64")
    pushed.tag(images, primary, images.index("multi", [amd64, arm64]), "library/multi", "v1")
    old = pushed.tags[(names["stale"], "v1")]
    pushed.untagged[(names["stale"], old.digest)] = old
    copy = tmp_path / "copy"
    shutil.copytree(primary.root, copy)  # a copy of the real registry's tree
    newer = images.image("stale-v2", [base, layer("stale-v2")])
    pushed.tag(images, primary, newer, names["stale"], "v1")  # the tag moves on the primary: the copy's is stale
    return pushed, copy, names


def corrupt_blob(root: Path, digest: str) -> None:
    """Other bytes of the same size: only re-hashing (--deep) can tell."""
    data = blob_data_path(root, digest)
    data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))


def test_verify_classifies_damage_in_a_real_tree_and_repair_heals_it(tmp_path, images, primary, start_registry, syncagent):
    pushed, copy, names = damaged_copy(tmp_path, images, primary)
    old = pushed.untagged[(names["stale"], next(d for r, d in pushed.untagged if r == names["stale"]))]
    newer = pushed.tags[(names["stale"], "v1")]
    lost_blob = pushed.tags[(names["blob"], "v1")].layers[-1]
    blob_data_path(copy, lost_blob).unlink()
    lost_link = pushed.tags[(names["link"], "v1")].layers[-1]
    layer_link(copy, names["link"], lost_link).unlink()
    # The corrupt blob sits in a repository that is damaged otherwise too (its tag's link is empty):
    # see test_repair_heals_a_corrupt_blob_in_an_otherwise_sound_repository for the other case.
    corrupt = pushed.tags[(names["empty"], "v1")].layers[-1]
    corrupt_blob(copy, corrupt)
    (tag_dir(copy, names["empty"], "v1") / "current" / "link").write_bytes(b"")

    plain = syncagent("verify", copy, "--json")
    assert plain.returncode == 1, plain.describe()
    found = {(p["kind"], p["repository"], p["tag"]) for p in plain.json()["problems"]}
    assert found == {
        ("broken-tag", names["blob"], "v1"), ("broken-revision", names["blob"], None),
        ("broken-tag", names["link"], "v1"), ("broken-revision", names["link"], None),
        ("invalid-link", names["empty"], "v1"),
    }, plain.describe()
    reasons = {p["repository"]: p["reason"] for p in plain.json()["problems"] if p["kind"] == "broken-tag"}
    assert lost_blob in reasons[names["blob"]] and lost_link in reasons[names["link"]]
    assert [f["digest"] for f in plain.json()["findings"] if f["kind"] == "unlinked-blob"] == [lost_link]

    deep = syncagent("verify", copy, "--deep", "--json")
    assert deep.returncode == 1, deep.describe()
    assert [p["digest"] for p in problems_of(deep, "digest-mismatch")] == [corrupt]

    against = syncagent("verify", primary.root, "--against", copy, "--deep", "--json")
    assert against.returncode == 1, against.describe()
    repos = against.json()["comparison"]["repositories"]
    assert repos[names["stale"]]["stale_tags"] == [{"tag": "v1", "source": newer.digest, "destination": old.digest}]
    assert repos[names["stale"]]["missing_revisions"] == [newer.digest]
    assert repos[names["empty"]]["missing_tags"] == ["v1"]
    assert set(repos) == {names["stale"], names["empty"]}
    kinds = {p["kind"] for p in against.json()["destination"]["problems"]}
    assert kinds == {"broken-tag", "broken-revision", "invalid-link", "digest-mismatch"}
    human = syncagent("verify", primary.root, "--against", copy, "--deep")
    assert human.returncode == 1 and "TOTAL" in human.stdout and "digest-mismatch" in human.stdout, human.describe()

    repaired = syncagent("verify", primary.root, "--against", copy, "--deep", "--repair", "--json")
    assert repaired.returncode == 0, repaired.describe()
    after = repaired.json()["after_repair"]
    assert after["comparison"]["differs"] is False and after["destination"]["problems"] == [], repaired.describe()

    final = syncagent("verify", primary.root, "--against", copy, "--deep", "--json")
    assert final.returncode == 0, final.describe()
    assert final.json()["comparison"]["differs"] is False and final.json()["destination"]["problems"] == []
    assert hashlib.sha256(blob_data_path(copy, corrupt).read_bytes()).hexdigest() == corrupt[7:]

    secondary = start_registry(copy, read_only=True, name="secondary")
    assert_serves_exactly(secondary, primary, pushed)
    for (repo, tag), image in pushed.tags.items():
        assert pull(secondary.url, repo, tag, tmp_path / "pulls" / f"{repo.replace('/', '_')}-{tag}") == image.digest


def test_repair_heals_a_corrupt_blob_in_an_otherwise_sound_repository(tmp_path, images, primary, syncagent):
    pushed, copy, names = damaged_copy(tmp_path, images, primary)
    corrupt = pushed.tags[(names["corrupt"], "v1")].layers[-1]
    corrupt_blob(copy, corrupt)
    repaired = syncagent("verify", primary.root, "--against", copy, "--deep", "--repair", "--json")
    assert repaired.returncode == 0, repaired.describe()
    assert hashlib.sha256(blob_data_path(copy, corrupt).read_bytes()).hexdigest() == corrupt[7:]
