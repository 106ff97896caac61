import pytest

from syncagent.sync.layout import (
    BlobData,
    Digest,
    InvalidPath,
    LayerLink,
    RevisionLink,
    TagCurrentLink,
    TagIndexLink,
    format_link,
    key_of,
    parse_key,
    parse_link,
    validate_repository,
    validate_tag,
)

H = "a" * 64
D = Digest("sha256", H)
V2 = "docker/registry/v2"

TABLE = [
    (BlobData(D), f"{V2}/blobs/sha256/aa/{H}/data"),
    (LayerLink("app", D), f"{V2}/repositories/app/_layers/sha256/{H}/link"),
    (RevisionLink("group/sub/app", D), f"{V2}/repositories/group/sub/app/_manifests/revisions/sha256/{H}/link"),
    (TagCurrentLink("group/app", "v1.0"), f"{V2}/repositories/group/app/_manifests/tags/v1.0/current/link"),
    (TagIndexLink("app", "latest", D), f"{V2}/repositories/app/_manifests/tags/latest/index/sha256/{H}/link"),
]


@pytest.mark.parametrize("spec,key", TABLE)
def test_format_and_parse_are_inverse(spec, key):
    assert key_of(spec) == key
    assert parse_key(key) == spec


@pytest.mark.parametrize(
    "key",
    [
        f"{V2}/repositories/app/_uploads/0f0e/data",
        f"{V2}/repositories/app/_uploads/0f0e/startedat",
        f"{V2}/repositories/app/_manifests/tags/v1/current/link.1234.tmp",
        f"{V2}/repositories/App/_layers/sha256/{H}/link",
        f"{V2}/repositories/../etc/_layers/sha256/{H}/link",
        f"{V2}/repositories/app/_layers/sha256/{H[:-1]}/link",
        f"{V2}/repositories/app/_layers/md5/{H}/link",
        f"{V2}/blobs/sha256/bb/{H}/data",
        f"{V2}/blobs/sha256/aa/{H}/data.tmp",
        "etc/passwd",
        f"{V2}/repositories/app/_manifests/tags/.hidden/current/link",
    ],
)
def test_keys_outside_the_layout_are_refused(key):
    with pytest.raises(InvalidPath):
        parse_key(key)


@pytest.mark.parametrize("name", ["app", "group/sub/app", "a.b_c__d---e", "x" * 255, "0/1/2"])
def test_valid_repository_names(name):
    assert validate_repository(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "App", "../etc", "a/../b", "a//b", "/abs", "a/", "_hidden", "a/_layers", "-a", "a-", "a..b", "a/./b", "x" * 256, "a b", "a\x00"],
)
def test_invalid_repository_names(name):
    with pytest.raises(InvalidPath):
        validate_repository(name)
    with pytest.raises(InvalidPath):
        key_of(RevisionLink(name, D))


@pytest.mark.parametrize("tag", ["latest", "v1.0.0", "_x", "A-b.c", "t" * 128])
def test_valid_tags(tag):
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".v1", "-v1", "t" * 129, "a/b", "..", "v1 ", "ü"])
def test_invalid_tags(tag):
    with pytest.raises(InvalidPath):
        validate_tag(tag)


def test_links_round_trip_and_reject_damage():
    assert format_link(D) == f"sha256:{H}".encode()
    assert len(format_link(D)) == 71
    assert parse_link(format_link(D)) == D
    for bad in [b"", b"sha256:", b"sha256:" + H[:10].encode(), b"sha256:" + H.upper().encode(), b"\xff\xfe", b"md5:abc"]:
        with pytest.raises(InvalidPath):
            parse_link(bad)


def test_digest_parse():
    assert Digest.parse(f"sha256:{H}") == D
    assert str(Digest.parse("sha512:" + "b" * 128)) == "sha512:" + "b" * 128
    with pytest.raises(InvalidPath):
        Digest.parse(H)


@pytest.mark.parametrize(
    "content",
    [b"[default]\naws_access_key_id = AKIASECRET", b"sha256:AKIASECRET", b"AKIASECRET:" + b"a" * 64, "AKIASECRET\u00e9".encode(), b"x" * 2000 + b"AKIASECRET"],
)
def test_link_and_digest_errors_describe_content_without_quoting_it(content):
    from syncagent.sync.layout import InvalidPath, describe_content, parse_link

    with pytest.raises(InvalidPath) as caught:
        parse_link(content)
    assert "AKIASECRET" not in str(caught.value)
    assert describe_content(content) in str(caught.value)
    with pytest.raises(InvalidPath) as caught:
        Digest.parse(content.decode("utf-8", "replace"))
    assert "AKIASECRET" not in str(caught.value)


def test_digest_sizes_keep_every_algorithm_and_size():
    from syncagent.sync.layout import DigestSizes

    sizes = DigestSizes()
    long = Digest("sha512", "b" * 128)
    sizes[D] = 10
    sizes[long] = 20
    sizes[D] = 11
    assert len(sizes) == 2 and D in sizes and Digest("sha256", "c" * 64) not in sizes and "sha256:" + H not in sizes
    assert sizes[long] == 20
    assert sorted(sizes.items()) == [(D, 11), (long, 20)]


def test_a_link_memo_confirms_a_key_only_with_the_digest_seen():
    from syncagent.sync.layout import LinkMemo

    memo = LinkMemo()
    key = key_of(LayerLink("app", D))
    other = Digest("sha256", "c" * 64)
    assert not memo.holds(key, D)
    memo.confirm(key, D)
    assert memo.holds(key, D)
    assert not memo.holds(key, other)
    assert not memo.holds(key_of(LayerLink("app2", D)), D)
    assert len(memo) == 1
