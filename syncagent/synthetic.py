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

from .layout import BlobData, Digest, LayerLink, RevisionLink, TagCurrentLink, TagIndexLink, format_link, key_of
from .manifest import OCI_INDEX, OCI_MANIFEST

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


def _payload(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


class _Writer:
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


def _descriptor(media_type: str, digest: Digest, size: int, **extra) -> dict:
    return {"mediaType": media_type, "digest": str(digest), "size": size, **extra}


def write_tree(backend: Backend, shape: TreeShape = TreeShape()) -> TreeSummary:
    """Write a registry tree of ``shape`` into ``backend``; returns what it wrote."""
    rng = random.Random(shape.seed)
    writer = _Writer(backend)
    low, high = shape.layer_bytes
    shared = [_payload(rng, rng.randint(low, high)) for _ in range(shape.shared_layers)]
    names = [f"team{r % 3}/app{r}" if r % 2 else f"app{r}" for r in range(shape.repositories)]
    tags: dict[str, dict[str, str]] = {}

    def image(repository: str, platform: str) -> tuple[Digest, int]:
        layers = []
        for n in range(shape.layers_per_image):
            data = shared[rng.randrange(len(shared))] if shared and n == 0 else _payload(rng, rng.randint(low, high))
            layers.append((writer.blob(data), len(data)))
        config = json.dumps({"architecture": platform, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [str(d) for d, _ in layers]}}).encode()
        config_digest = writer.blob(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _descriptor(CONFIG_TYPE, config_digest, len(config)),
                "layers": [_descriptor(LAYER_TYPE, d, s) for d, s in layers],
            },
            indent=3,
        ).encode()
        manifest_digest = writer.blob(manifest)
        for digest in [config_digest, *(d for d, _ in layers)]:
            writer.link(LayerLink(repository, digest), digest)
        writer.link(RevisionLink(repository, manifest_digest), manifest_digest)
        return manifest_digest, len(manifest)

    for number, repository in enumerate(names):
        tags[repository] = {}
        for t in range(shape.tags_per_repository):
            if shape.index_every and (t + 1) % shape.index_every == 0:
                children = [(image(repository, arch), arch) for arch in ("amd64", "arm64")]
                index = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_INDEX,
                        "manifests": [
                            _descriptor(OCI_MANIFEST, d, s, platform={"architecture": arch, "os": "linux"})
                            for (d, s), arch in children
                        ],
                    }
                ).encode()
                digest = writer.blob(index)
                writer.link(RevisionLink(repository, digest), digest)
            else:
                digest, _ = image(repository, "amd64")
            tag = f"v{t}"
            writer.link(TagCurrentLink(repository, tag), digest)
            writer.link(TagIndexLink(repository, tag, digest), digest)
            tags[repository][tag] = str(digest)
        for _ in range(shape.untagged_per_repository):
            image(repository, "amd64")
    return TreeSummary(names, tags, len(writer.blobs), writer.bytes)
