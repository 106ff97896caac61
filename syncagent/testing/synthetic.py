"""Synthetic registry trees, written the way a registry writes them, for demos, tests and benchmarks.

The tree is deterministic for a given seed: repositories with tags, images
whose layers are partly shared between repositories, a spread of blob sizes,
some multi-platform indexes and some untagged revisions. Blob data is
pseudo-random (incompressible) and generated in streamed chunks.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass

from backends import Backend

from ..sync.layout import BlobData, Digest, LayerLink, RevisionLink, TagCurrentLink, TagIndexLink, format_link, key_of
from ..sync.manifest import OCI_INDEX, OCI_MANIFEST

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class TreeShape:
    repositories: int = 3
    tags_per_repository: int = 3
    layers_per_image: int = 3
    shared_layers: int = 4
    layer_bytes: tuple[int, int] = (1024, 64 * 1024)
    index_every: int = 0
    untagged_per_repository: int = 0
    seed: int = 1


@dataclass
class TreeSummary:
    repositories: list[str]
    tags: dict[str, dict[str, str]]
    blobs: int
    bytes: int


class TreeWriter:
    """Writes blobs, links, images and indexes into a backend the way a registry does."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.blobs: set[Digest] = set()
        self.bytes = 0

    def blob(self, data: bytes) -> Digest:
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        if digest not in self.blobs:
            self.backend.put(key_of(BlobData(digest)), io.BytesIO(data), size=len(data))
            self.blobs.add(digest)
            self.bytes += len(data)
        return digest

    def link(self, spec, digest: Digest) -> None:
        content = format_link(digest)
        self.backend.put(key_of(spec), io.BytesIO(content), size=len(content))

    def tag(self, repository: str, tag: str, digest: Digest) -> None:
        self.link(TagCurrentLink(repository, tag), digest)
        self.link(TagIndexLink(repository, tag, digest), digest)

    def image(self, repository: str, layers: list[bytes], *, tag: str | None = None, platform: str = "amd64") -> tuple[Digest, int]:
        """An OCI image manifest with its config and layers, linked; returns (digest, size)."""
        layer_descs = [(self.blob(data), len(data)) for data in layers]
        config = json.dumps({"architecture": platform, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [str(d) for d, _ in layer_descs]}}).encode()
        config_digest = self.blob(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _descriptor(CONFIG_TYPE, config_digest, len(config)),
                "layers": [_descriptor(LAYER_TYPE, d, s) for d, s in layer_descs],
            },
            indent=3,
        ).encode()
        return self.manifest(repository, manifest, [config_digest, *(d for d, _ in layer_descs)], tag=tag)

    def manifest(self, repository: str, manifest: bytes, blobs: list[Digest], *, tag: str | None = None) -> tuple[Digest, int]:
        """Store any manifest bytes with the layer links of ``blobs`` and its revision link."""
        manifest_digest = self.blob(manifest)
        for digest in blobs:
            self.link(LayerLink(repository, digest), digest)
        self.link(RevisionLink(repository, manifest_digest), manifest_digest)
        if tag:
            self.tag(repository, tag, manifest_digest)
        return manifest_digest, len(manifest)

    def index(self, repository: str, children: list[tuple[tuple[Digest, int], str]], *, tag: str | None = None) -> Digest:
        """An OCI index over already written ``((digest, size), architecture)`` children."""
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [_descriptor(OCI_MANIFEST, d, s, platform={"architecture": arch, "os": "linux"}) for (d, s), arch in children],
            }
        ).encode()
        digest, _ = self.manifest(repository, index, [], tag=tag)
        return digest


def _descriptor(media_type: str, digest: Digest, size: int, **extra) -> dict:
    return {"mediaType": media_type, "digest": str(digest), "size": size, **extra}


def write_tree(backend: Backend, shape: TreeShape = TreeShape()) -> TreeSummary:
    """Write a registry tree of ``shape`` into ``backend``; returns what it wrote."""
    rng = random.Random(shape.seed)
    writer = TreeWriter(backend)
    low, high = shape.layer_bytes
    shared = [rng.randbytes(rng.randint(low, high)) for _ in range(shape.shared_layers)]
    names = [f"team{r % 3}/app{r}" if r % 2 else f"app{r}" for r in range(shape.repositories)]
    tags: dict[str, dict[str, str]] = {}

    def layers() -> list[bytes]:
        own = [rng.randbytes(rng.randint(low, high)) for _ in range(shape.layers_per_image - (1 if shared else 0))]
        return ([shared[rng.randrange(len(shared))]] if shared else []) + own

    for repository in names:
        tags[repository] = {}
        for t in range(shape.tags_per_repository):
            tag = f"v{t}"
            if shape.index_every and (t + 1) % shape.index_every == 0:
                children = [(writer.image(repository, layers(), platform=arch), arch) for arch in ("amd64", "arm64")]
                digest = writer.index(repository, children, tag=tag)
            else:
                digest, _ = writer.image(repository, layers(), tag=tag)
            tags[repository][tag] = str(digest)
        for _ in range(shape.untagged_per_repository):
            writer.image(repository, layers())
    return TreeSummary(names, tags, len(writer.blobs), writer.bytes)
