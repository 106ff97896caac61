"""Shared by the end-to-end sync tests: what was pushed, the JSON report, and a registry tree's layout as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.support.images import Image, ImageFactory, Layer, layer, pull

V2 = "docker/registry/v2"


@dataclass
class Pushed:
    """Tags, and manifests reachable by digest only, that a primary holds."""

    tags: dict[tuple[str, str], Image] = field(default_factory=dict)
    untagged: dict[tuple[str, str], Image] = field(default_factory=dict)

    def tag(self, factory: ImageFactory, registry, image: Image, repo: str, tag: str) -> None:
        """Push ``image`` to ``registry`` (anything with a ``url``) as ``repo:tag`` and record it."""
        factory.push(image, registry.url, repo, tag)
        self.tags[(repo, tag)] = image

    def by_digest(self, factory: ImageFactory, registry, image: Image, repo: str) -> None:
        """Push ``image`` into ``repo`` by digest only and record it."""
        factory.push(image, registry.url, repo)
        self.untagged[(repo, image.digest)] = image

    @property
    def repositories(self) -> list[str]:
        return sorted({repo for repo, _ in self.tags} | {repo for repo, _ in self.untagged})

    def digests(self) -> list[tuple[str, str]]:
        """(repository, digest) of every manifest a client may pull by digest: tagged, untagged, index children."""
        found: dict[tuple[str, str], None] = {}
        for (repo, _), image in [*self.tags.items(), *self.untagged.items()]:
            for digest in image.manifests:
                found[(repo, digest)] = None
        return list(found)

def build_images(factory: ImageFactory, large: dict[str, list[Layer]]) -> dict[str, Image]:
    """A single-platform image, a two-platform index, two images sharing layers, a nested one,
    one to push by digest only (``orphan``), and one image per ``large`` entry (name -> layers)."""
    base, runtime = layer("base"), layer("shared-runtime", size=6000, files=3)
    amd64 = factory.image("multi-amd64", [base, layer("multi-amd64")], architecture="amd64")
    arm64 = factory.image("multi-arm64", [base, layer("multi-arm64")], architecture="arm64")
    images = {
        "single": factory.image("single", [base, layer("single")]),
        "multi": factory.index("multi", [amd64, arm64]),
        "alpha": factory.image("alpha", [base, runtime, layer("alpha")]),
        "beta": factory.image("beta", [base, runtime, layer("beta")]),
        "nested": factory.image("nested", [layer("nested", files=2)]),
        "orphan": factory.image("orphan", [base, layer("orphan")]),
    }
    images.update({name: factory.image(name, layers) for name, layers in large.items()})
    return images


STANDARD_IMAGES = ("single", "multi", "alpha", "beta", "nested", "orphan")


def push_images(factory: ImageFactory, images: dict[str, Image], registry) -> Pushed:
    """Push ``build_images``' set to ``registry``: each image under its repository and tag (the large
    ones as ``library/<name>:v1``), ``group/sub/app`` under two tags, ``orphan`` into library/single
    by digest only."""
    pushed = Pushed()
    pushed.tag(factory, registry, images["single"], "library/single", "v1")
    pushed.tag(factory, registry, images["multi"], "library/multi", "v1")
    pushed.tag(factory, registry, images["alpha"], "team/alpha", "v1")
    pushed.tag(factory, registry, images["beta"], "team/beta", "v1")
    pushed.tag(factory, registry, images["nested"], "group/sub/app", "v1")
    pushed.tag(factory, registry, images["nested"], "group/sub/app", "latest")
    for name in [name for name in images if name not in STANDARD_IMAGES]:
        pushed.tag(factory, registry, images[name], f"library/{name}", "v1")
    pushed.by_digest(factory, registry, images["orphan"], "library/single")
    return pushed


REPORT_KEYS = {"tags_published", "revisions_published", "blobs_copied", "bytes_copied", "blobs_skipped", "problems"}


def sync_report(result) -> dict:
    report = result.json()
    assert REPORT_KEYS <= set(report), f"missing {REPORT_KEYS - set(report)}\n{result.describe()}"
    return report


def assert_full_sync(result, pushed) -> dict:
    assert result.returncode == 0, result.describe()
    report = sync_report(result)
    assert report["problems"] == [], result.describe()
    assert report["tags_published"] == len(pushed.tags), result.describe()
    assert report["revisions_published"] == len(pushed.digests()), result.describe()
    return report


def assert_noop_sync(result) -> None:
    assert result.returncode == 0, result.describe()
    report = sync_report(result)
    counts = (report["blobs_copied"], report["tags_published"], report["revisions_published"], report["problems"])
    assert counts == (0, 0, 0, []), result.describe()


def fs_layout(root: Path) -> dict[str, bytes | int]:
    """The registry layout under a filesystem root: link path -> content, blob data path -> size (``_uploads`` excluded)."""
    base = root / V2
    found: dict[str, bytes | int] = {}
    for path in base.rglob("*"):
        if not path.is_file() or "_uploads" in path.parts:
            continue
        relative = str(path.relative_to(base))
        found[relative] = path.read_bytes() if path.name == "link" else path.stat().st_size
    return found


def assert_serves_like_primary(secondary, primary, pushed: Pushed, pulls: Path | None) -> None:
    """The secondary registry serves what the primary does: the same catalog and tags; every tag and every
    pushed digest servable (manifests fetched with every Accept type, index children, blobs HEADed), and,
    unless ``pulls`` is None, pulled by skopeo into ``pulls`` with the primary's digest."""
    assert secondary.catalog() == primary.catalog()
    for repo in pushed.repositories:
        assert secondary.tags(repo) == primary.tags(repo), repo
    for (repo, tag), image in pushed.tags.items():
        assert primary.manifest_digest(repo, tag) == image.digest
        assert secondary.manifest_digest(repo, tag) == image.digest, f"{repo}:{tag}"
        assert secondary.servable_problems(repo, tag) == []
        if pulls is not None:
            assert pull(secondary.url, repo, tag, pulls / f"{repo.replace('/', '_')}-{tag}") == image.digest
    for repo, digest in pushed.digests():
        assert primary.servable_problems(repo, digest) == []
        assert secondary.servable_problems(repo, digest) == []
        if pulls is not None:
            out = pulls / f"{repo.replace('/', '_')}-{digest[7:19]}"
            if not out.exists():
                assert pull(secondary.url, repo, digest, out) == digest
