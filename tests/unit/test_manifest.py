import json

import pytest

from syncagent.sync.manifest import (
    DOCKER_LIST,
    DOCKER_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    MalformedManifest,
    parse_manifest,
)


def d(c: str) -> str:
    return "sha256:" + c * 64


def desc(c, media="application/octet-stream", **extra):
    return {"mediaType": media, "digest": d(c), "size": 1, **extra}


def refs(doc):
    m = parse_manifest(json.dumps(doc).encode())
    return m, [(str(r.digest)[7:8], r.kind, r.optional) for r in m.references]


def test_docker_schema2():
    m, r = refs({"schemaVersion": 2, "mediaType": DOCKER_V2, "config": desc("a"), "layers": [desc("b"), desc("c")]})
    assert m.media_type == DOCKER_V2 and not m.is_index
    assert r == [("a", "blob", False), ("b", "blob", False), ("c", "blob", False)]


def test_oci_manifest_with_subject_and_foreign_layer():
    m, r = refs(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc("a"),
            "layers": [desc("b"), desc("c", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", urls=["https://x"])],
            "subject": desc("d", OCI_MANIFEST),
        }
    )
    assert r == [("a", "blob", False), ("b", "blob", False), ("c", "blob", True), ("d", "manifest", False)]


def test_oci_manifest_without_media_type():
    m, r = refs({"schemaVersion": 2, "config": desc("a"), "layers": []})
    assert m.media_type == OCI_MANIFEST and r == [("a", "blob", False)]


@pytest.mark.parametrize("media", [DOCKER_LIST, OCI_INDEX, None])
def test_indexes(media):
    doc = {"schemaVersion": 2, "manifests": [desc("e", OCI_MANIFEST), desc("f", OCI_MANIFEST)]}
    if media:
        doc["mediaType"] = media
    m, r = refs(doc)
    assert m.is_index
    assert r == [("e", "manifest", False), ("f", "manifest", False)]


def test_schema1():
    m, r = refs({"schemaVersion": 1, "name": "x", "tag": "t", "fsLayers": [{"blobSum": d("1")}, {"blobSum": d("2")}], "signatures": []})
    assert r == [("1", "blob", False), ("2", "blob", False)]


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1,2]",
        b"\xff\xfe",
        json.dumps({"schemaVersion": 2, "mediaType": DOCKER_V2, "layers": []}).encode(),
        json.dumps({"schemaVersion": 2, "mediaType": DOCKER_V2, "config": desc("a"), "layers": "x"}).encode(),
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"digest": "sha256:zz"}]}).encode(),
        json.dumps({"schemaVersion": 2, "mediaType": "application/x-unknown"}).encode(),
        json.dumps({"schemaVersion": 1, "fsLayers": [{}]}).encode(),
        json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:../../etc"}, "layers": []}).encode(),
    ],
)
def test_malformed(data):
    with pytest.raises(MalformedManifest):
        parse_manifest(data)
