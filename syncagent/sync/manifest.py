"""Parse every manifest format a registry stores into the references it needs.

Formats: Docker schema 2 and OCI image manifests (config, layers, subject),
Docker manifest lists and OCI indexes (manifests[], subject; an OCI index may
lack ``mediaType``), OCI artifact manifests (blobs[], subject) and Docker
schema 1 (``fsLayers[].blobSum``). A *blob* reference must be present as blob
data and linked in the repository's ``_layers``; a *manifest* reference (an
index child or a subject) must be present and revision-linked. Foreign layers
(non-distributable, with ``urls``) are optional: they may be absent from storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .jsonsafe import MalformedJSON, loads_bounded
from .layout import Digest, InvalidPath, describe_content

MAX_MANIFEST_BYTES = 4 * 1024 * 1024

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
ALL_MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_V2, OCI_ARTIFACT, DOCKER_V1_SIGNED, DOCKER_V1)


class MalformedManifest(ValueError):
    """A manifest that is not JSON, not a known format, or holds a bad reference."""


@dataclass(frozen=True)
class Reference:
    """One descriptor of a manifest. ``size``: the bytes the descriptor announces (None where the
    format has none: schema 1)."""

    digest: Digest
    kind: Literal["blob", "manifest"]
    media_type: str = ""
    optional: bool = False
    size: int | None = None


@dataclass(frozen=True)
class Manifest:
    media_type: str
    references: tuple[Reference, ...]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def blobs(self) -> tuple[Reference, ...]:
        return tuple(r for r in self.references if r.kind == "blob")

    @property
    def children(self) -> tuple[Reference, ...]:
        return tuple(r for r in self.references if r.kind == "manifest")


def parse_manifest(data: bytes) -> Manifest:
    """The references of a stored manifest; raises MalformedManifest."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise MalformedManifest(f"manifest of {len(data)} bytes exceeds {MAX_MANIFEST_BYTES}")
    try:
        doc = loads_bounded(data)
    except MalformedJSON as exc:
        raise MalformedManifest(str(exc)) from None
    if not isinstance(doc, dict):
        raise MalformedManifest("not a JSON object")
    media_type = doc.get("mediaType") or ""
    if not isinstance(media_type, str):
        raise MalformedManifest("mediaType is not a string")
    refs: list[Reference] = []
    if doc.get("schemaVersion") == 1:
        media_type = media_type or (DOCKER_V1_SIGNED if "signatures" in doc else DOCKER_V1)
        for layer in _list(doc, "fsLayers", required=True):
            refs.append(Reference(_digest(_field(layer, "blobSum")), "blob"))
    elif media_type in INDEX_TYPES or (not media_type and "manifests" in doc and "layers" not in doc):
        media_type = media_type or OCI_INDEX
        for child in _list(doc, "manifests", required=True):
            refs.append(_reference(child, "manifest"))
    elif media_type in (DOCKER_V2, OCI_MANIFEST) or (not media_type and "config" in doc):
        media_type = media_type or OCI_MANIFEST
        config = doc.get("config")
        if not isinstance(config, dict):
            raise MalformedManifest("image manifest without a config descriptor")
        refs.append(_reference(config, "blob"))
        for layer in _list(doc, "layers", required=True):
            refs.append(_reference(layer, "blob"))
    elif media_type == OCI_ARTIFACT:
        for blob in _list(doc, "blobs", required=False):
            refs.append(_reference(blob, "blob"))
    else:
        raise MalformedManifest(f"unknown manifest format (a mediaType of {describe_content(media_type)})")
    subject = doc.get("subject")
    if subject is not None:
        if not isinstance(subject, dict):
            raise MalformedManifest("subject is not a descriptor")
        refs.append(_reference(subject, "manifest"))
    return Manifest(media_type, tuple(refs))


def _list(doc: dict, name: str, *, required: bool) -> list:
    value = doc.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise MalformedManifest(f"{name} is missing or not a list")
    return value


def _field(descriptor, name: str) -> str:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get(name), str):
        raise MalformedManifest(f"descriptor without a {name}")
    return descriptor[name]


def _digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except InvalidPath as exc:
        raise MalformedManifest(f"bad reference: {exc}") from None


def _reference(descriptor, kind: Literal["blob", "manifest"]) -> Reference:
    digest = _digest(_field(descriptor, "digest"))
    media_type = descriptor.get("mediaType") or ""
    media_type = media_type if isinstance(media_type, str) else ""
    urls = descriptor.get("urls")
    foreign = kind == "blob" and ("foreign" in media_type or "nondistributable" in media_type or bool(urls))
    return Reference(digest, kind, media_type, optional=foreign, size=_size(descriptor))


def _size(descriptor: dict) -> int | None:
    """A descriptor's ``size``: None when absent; a manifest whose size is not a count of bytes is malformed."""
    size = descriptor.get("size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise MalformedManifest("a descriptor's size is not a count of bytes")
    return size
