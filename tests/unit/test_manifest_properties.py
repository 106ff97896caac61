"""Property-based tests of the parsers of stored bytes: manifests, links, bounded JSON, event envelopes.

Whatever the bytes, a parser returns its value or raises its typed error
(``MalformedManifest``, ``InvalidPath``, ``MalformedJSON``, ``MalformedEnvelope``),
never another exception. The inputs: any bytes; JSON values of random shape and
nesting; manifests of every format with random descriptors, strings or objects
where lists belong, huge numbers, duplicate keys, ``NaN``/``Infinity`` tokens,
bytes that are not UTF-8, byte order marks and other encodings.

Runs are short by default (profile ``quick``: 300 examples a test, no example
database; hypothesis still caches constants in ``.hypothesis/``, which git
ignores by the ``.gitignore`` hypothesis puts in it). For a long run::

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -p no:cacheprovider tests/unit/test_manifest_properties.py

(``long``: 20,000 examples a test). A failure prints the smallest input found
and a ``@reproduce_failure`` line to replay it.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from syncagent.sync.jsonsafe import MAX_DEPTH, MalformedJSON, loads_bounded, nesting_depth
from syncagent.sync.layout import Digest, InvalidPath, parse_link
from syncagent.sync.manifest import (
    ALL_MANIFEST_TYPES,
    DOCKER_V1,
    DOCKER_V1_SIGNED,
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    MalformedManifest,
    parse_manifest,
)
from syncagent.sidecar.notifications import EnvelopeOutcome, MalformedEnvelope, parse_envelope

_COMMON = {"deadline": None, "database": None, "print_blob": True, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("quick", max_examples=300, **_COMMON)
settings.register_profile("long", max_examples=20_000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


# --------------------------------------------------------------------------- strategies

digests = st.sampled_from([("sha256", 32), ("sha384", 48), ("sha512", 64)]).flatmap(
    lambda algo: st.binary(min_size=algo[1], max_size=algo[1]).map(lambda raw: f"{algo[0]}:{raw.hex()}")
)
almost_digests = st.one_of(
    digests.map(lambda d: d[:-1]),  # one hex digit short
    digests.map(lambda d: d + "0"),
    digests.map(str.upper),
    digests.map(lambda d: d.replace(":", "")),
    digests.map(lambda d: "md5:" + d.partition(":")[2]),
    digests.map(lambda d: d + "\n"),
    digests.map(lambda d: d.replace(d[-1], "/../")),
    st.text(max_size=80),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=12,
)
media_types = st.one_of(st.sampled_from(ALL_MANIFEST_TYPES), st.sampled_from([
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
]), st.text(max_size=40))
descriptors = st.fixed_dictionaries(
    {"digest": st.one_of(digests, almost_digests, scalars)},
    optional={
        "mediaType": st.one_of(media_types, scalars),
        "size": st.one_of(st.integers(min_value=0), scalars),
        "urls": st.one_of(st.lists(st.text(max_size=20), max_size=2), scalars),
        "annotations": json_values,
    },
)
# Where a manifest wants a list of descriptors: such a list, or a string, an object, a scalar, a list of junk.
descriptor_lists = st.one_of(
    st.lists(descriptors, max_size=4), st.text(max_size=20), descriptors, scalars, st.lists(json_values, max_size=3),
)
manifest_documents = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.one_of(st.sampled_from([1, 2]), scalars),
        "mediaType": st.one_of(media_types, scalars),
        "config": st.one_of(descriptors, scalars, st.lists(descriptors, max_size=2)),
        "layers": descriptor_lists,
        "manifests": descriptor_lists,
        "blobs": descriptor_lists,
        "fsLayers": st.one_of(st.lists(st.fixed_dictionaries({"blobSum": st.one_of(digests, almost_digests, scalars)}),
                                       max_size=4), descriptor_lists),
        "subject": st.one_of(descriptors, scalars, st.lists(descriptors, max_size=1)),
        "signatures": json_values,
        "annotations": json_values,
    },
)


def dumps(document) -> str:
    """JSON text as Python writes it: ``NaN``, ``Infinity`` and ``-Infinity`` tokens included."""
    return json.dumps(document, allow_nan=True)


@st.composite
def hostile_texts(draw) -> bytes:
    """A manifest document's JSON, then mangled the ways a broken or hostile writer would."""
    text = dumps(draw(manifest_documents))
    mangle = draw(st.sampled_from([
        "none", "duplicate-key", "huge-integer", "huge-exponent", "nan-token", "deep", "truncate", "non-utf8",
        "bom", "utf-16", "utf-32", "control-chars",
    ]))
    if mangle == "duplicate-key" and text.startswith("{") and len(text) > 2:
        key = draw(st.sampled_from(["mediaType", "config", "layers", "manifests", "schemaVersion", "subject"]))
        text = "{" + json.dumps(key) + ": " + dumps(draw(json_values)) + ", " + text[1:]
    elif mangle == "huge-integer" and text.startswith("{") and len(text) > 2:
        text = '{"size": ' + "9" * draw(st.integers(1, 6000)) + ", " + text[1:]
    elif mangle == "huge-exponent" and text.startswith("{") and len(text) > 2:
        text = '{"schemaVersion": 2e' + "9" * draw(st.integers(1, 400)) + ", " + text[1:]
    elif mangle == "nan-token" and text.startswith("{") and len(text) > 2:
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "1e999"]))
        text = '{"schemaVersion": ' + token + ", " + text[1:]
    elif mangle == "deep":
        depth = draw(st.integers(MAX_DEPTH - 2, 5_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        text = '{"annotations": ' + opener * depth + "1" + closer * draw(st.integers(0, depth)) + "}"
    elif mangle == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif mangle == "control-chars":
        position = draw(st.integers(0, len(text)))
        text = text[:position] + draw(st.text(st.characters(max_codepoint=31), min_size=1, max_size=3)) + text[position:]
    data = text.encode("utf-8", "surrogatepass")
    if mangle == "non-utf8":
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xff"])) + data[position:]
    elif mangle == "bom":
        data = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb"])) + data
    elif mangle in ("utf-16", "utf-32"):
        data = text.encode(draw(st.sampled_from([mangle, f"{mangle}-le", f"{mangle}-be"])), "surrogatepass")
    return data


def assert_typed(parse, error: type[Exception], data) -> object | None:
    """``parse(data)``'s value, or None when it raised ``error``: any other exception fails the test."""
    try:
        return parse(data)
    except error:
        return None


# --------------------------------------------------------------------------- parse_manifest


@given(st.binary(max_size=2048))
def test_any_bytes_give_a_manifest_or_malformed_manifest(data):
    result = assert_typed(parse_manifest, MalformedManifest, data)
    assert result is None or isinstance(result, Manifest)


@given(json_values)
def test_any_json_value_gives_a_manifest_or_malformed_manifest(value):
    result = assert_typed(parse_manifest, MalformedManifest, dumps(value).encode())
    assert result is None or isinstance(result, Manifest)


@given(manifest_documents)
def test_manifest_shaped_documents_give_a_manifest_or_malformed_manifest(document):
    result = assert_typed(parse_manifest, MalformedManifest, dumps(document).encode())
    if result is not None:
        assert isinstance(result, Manifest) and result.media_type
        assert all(isinstance(r.digest, Digest) and r.kind in ("blob", "manifest") for r in result.references)


@given(hostile_texts())
def test_mangled_manifests_give_a_manifest_or_malformed_manifest(data):
    result = assert_typed(parse_manifest, MalformedManifest, data)
    assert result is None or isinstance(result, Manifest)


@given(
    media_type=st.sampled_from([OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json", None]),
    config=digests, layers=st.lists(digests, max_size=6), subject=st.none() | digests,
    annotations=st.dictionaries(st.text(max_size=10), json_values, max_size=2),
)
def test_a_well_formed_image_manifest_gives_its_references_in_order(media_type, config, layers, subject, annotations):
    document = {"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1} for d in layers],
                "annotations": annotations}
    if media_type:
        document["mediaType"] = media_type
    if subject:
        document["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
    manifest = parse_manifest(dumps(document).encode())
    assert manifest.media_type == (media_type or OCI_MANIFEST) and not manifest.is_index
    assert [str(r.digest) for r in manifest.blobs] == [config, *layers]
    assert [str(r.digest) for r in manifest.children] == ([subject] if subject else [])


@given(media_type=st.sampled_from([*INDEX_TYPES, None]), children=st.lists(digests, max_size=6))
def test_a_well_formed_index_gives_its_children(media_type, children):
    document = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in children]}
    if media_type:
        document["mediaType"] = media_type
    manifest = parse_manifest(json.dumps(document).encode())
    assert manifest.is_index and manifest.media_type == (media_type or OCI_INDEX)
    assert [str(r.digest) for r in manifest.children] == children and manifest.blobs == ()


@given(layers=st.lists(digests, max_size=6), signed=st.booleans())
def test_a_schema1_manifest_gives_its_layers(layers, signed):
    document = {"schemaVersion": 1, "name": "x", "tag": "t", "fsLayers": [{"blobSum": d} for d in layers]}
    if signed:
        document["signatures"] = []
    manifest = parse_manifest(json.dumps(document).encode())
    assert manifest.media_type == (DOCKER_V1_SIGNED if signed else DOCKER_V1)
    assert [str(r.digest) for r in manifest.blobs] == layers


# --------------------------------------------------------------------------- parse_link


@given(st.binary(max_size=200))
def test_any_bytes_give_a_digest_or_invalid_path(data):
    result = assert_typed(parse_link, InvalidPath, data)
    if result is not None:
        assert str(result).encode() == data, "a link parses only when it is exactly the digest"


@given(digests)
def test_a_link_holding_a_digest_gives_that_digest(text):
    assert str(parse_link(text.encode())) == text


@given(st.one_of(almost_digests.map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.binary(min_size=1025, max_size=1100), digests.map(lambda d: d.encode() + b"\x00")))
def test_almost_digests_are_invalid_links(data):
    assume(not _is_digest(data))
    assert assert_typed(parse_link, InvalidPath, data) is None


def _is_digest(data: bytes) -> bool:
    try:
        Digest.parse(data.decode("ascii"))
        return True
    except (UnicodeDecodeError, InvalidPath):
        return False


# --------------------------------------------------------------------------- bounded JSON and envelopes


def depth_of(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@given(json_values)
def test_nesting_depth_is_the_depth_of_the_value(value):
    assert nesting_depth(dumps(value)) == depth_of(value)


@given(json_values)
def test_a_value_within_the_bound_parses_as_json_loads_parses_it(value):
    text = dumps(value)
    assert dumps(loads_bounded(text.encode())) == dumps(json.loads(text))


@given(st.one_of(st.binary(max_size=1024), hostile_texts()))
def test_any_bytes_give_a_value_or_malformed_json(data):
    assert_typed(loads_bounded, MalformedJSON, data)


@given(st.one_of(st.binary(max_size=1024), hostile_texts(), json_values.map(lambda v: dumps({"events": v}).encode()),
                 st.lists(manifest_documents, max_size=3).map(lambda events: dumps({"events": events}).encode())))
def test_any_body_gives_an_outcome_or_malformed_envelope(body):
    result = assert_typed(parse_envelope, MalformedEnvelope, body)
    assert result is None or isinstance(result, EnvelopeOutcome)
