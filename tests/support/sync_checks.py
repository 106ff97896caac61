"""Shared by the end-to-end sync tests: what was pushed, the JSON report, and a registry tree's layout as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.support.images import Image

V2 = "docker/registry/v2"


@dataclass
class Pushed:
    """Tags, and manifests reachable by digest only, that a primary holds."""

    tags: dict[tuple[str, str], Image] = field(default_factory=dict)
    untagged: dict[tuple[str, str], Image] = field(default_factory=dict)

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
