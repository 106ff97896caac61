"""End to end: pullability checks through a real ``docker-registry`` that requires bearer tokens.

A normal primary registry takes pushes (skopeo, images built with umoci);
``syncagent sync`` copies its storage to a directory; a read-only registry
with ``auth: token`` (realm, service, issuer, rootcertbundle; an RSA and an EC
key with self-signed certificates generated here) serves that directory. The
checker mints its own tokens from those keys: the registry accepts them (key
id in libtrust form, and also an ``x5c`` chain), and rejects tokens signed by
a key whose certificate is not in the bundle; a tag whose layer blob is
deleted on disk is reported not servable.

The registry's token auth configuration is written by
tests/support/token_registry.py (tests/support/registry.py takes no auth).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from syncagent.check.registry import RegistryAuthError, RegistryChecker, TokenMinter
from tests.e2e.conftest import SyncagentCli
from tests.support.components import require_tool
from tests.support.images import ImageFactory, layer
from tests.support.registry import Registry
from tests.support.token_registry import KeyPair, TokenAuth, TokenRegistry, make_signer

pytestmark = pytest.mark.e2e

ISSUER = "syncagent-test-issuer"
SERVICE = "registry.syncagent.test"
V2 = ("docker", "registry", "v2")


@dataclass
class World:
    root: Path
    primary: Registry
    storage: Path
    registry: TokenRegistry | None
    rsa: KeyPair
    ec: KeyPair
    stranger: KeyPair
    bundle: Path
    tags: dict[tuple[str, str], str]  # (repo, tag) -> digest
    digests: list[tuple[str, str]]  # (repo, digest): tagged, untagged, index children
    layer_of: dict[tuple[str, str], str]  # (repo, tag) -> a layer only that image has
    started: list[Registry] = field(default_factory=list)

    def start_token_registry(self, storage: Path, name: str) -> TokenRegistry:
        auth = TokenAuth(service=SERVICE, issuer=ISSUER, rootcertbundle=self.bundle)
        registry = TokenRegistry(root=storage, token=auth, read_only=True, workdir=self.root / "registries" / name)
        return registry.start()

    def minter(self, keys: KeyPair, **kwargs) -> TokenMinter:
        return TokenMinter(ISSUER, SERVICE, keys.key, keys.cert, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    for tool in ("docker-registry", "skopeo", "umoci"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("registry-check")
    started: list[Registry] = []
    try:
        primary = Registry(root=root / "primary", workdir=root / "registries" / "primary").start()
        started.append(primary)
        images = ImageFactory(root / "oci")
        base = layer("base")
        tags: dict[tuple[str, str], str] = {}
        digests: list[tuple[str, str]] = []
        layer_of: dict[tuple[str, str], str] = {}
        single = images.image("single", [base, layer("single")])
        tags[("library/single", "v1")] = images.push(single, primary.url, "library/single", "v1")
        layer_of[("library/single", "v1")] = single.layers[-1]
        amd64 = images.image("multi-amd64", [base, layer("multi-amd64")], architecture="amd64")
        arm64 = images.image("multi-arm64", [base, layer("multi-arm64")], architecture="arm64")
        index = images.index("multi", [amd64, arm64])
        tags[("library/multi", "v1")] = images.push(index, primary.url, "library/multi", "v1")
        digests += [("library/multi", d) for d in index.manifests]
        nested = images.image("nested", [layer("nested", files=2)])
        for tag in ("v1", "latest"):
            tags[("group/sub/app", tag)] = images.push(nested, primary.url, "group/sub/app", tag)
        layer_of[("group/sub/app", "v1")] = nested.layers[-1]
        orphan = images.image("orphan", [base, layer("orphan")])
        images.push(orphan, primary.url, "library/single")
        digests += [("library/single", orphan.digest), ("library/single", single.digest), ("group/sub/app", nested.digest)]

        storage = root / "storage"
        result = SyncagentCli()("sync", primary.root, storage)
        assert result.returncode == 0, result.describe()

        keys = root / "keys"
        rsa, ec, stranger = make_signer(keys, "rsa"), make_signer(keys, "ec", kind="ec"), make_signer(keys, "stranger")
        bundle = keys / "rootcertbundle.pem"
        bundle.write_bytes(rsa.cert.read_bytes() + ec.cert.read_bytes())
        world = World(root, primary, storage, None, rsa, ec, stranger, bundle, tags, digests, layer_of, started)
        world.registry = world.start_token_registry(storage, "token")
        started.append(world.registry)
        yield world
    finally:
        for registry in reversed(started):
            registry.stop()


MINTERS = [
    pytest.param("rsa", {}, id="RS256-kid"),
    pytest.param("rsa", {"include_x5c": True}, id="RS256-x5c"),
    pytest.param("ec", {}, id="ES256-kid"),
    pytest.param("ec", {"include_x5c": True}, id="ES256-x5c"),
]


@pytest.mark.parametrize("keys,options", MINTERS)
def test_minted_tokens_pass_every_tag_and_digest(world, keys, options):
    minter = world.minter(getattr(world, keys), **options)
    with RegistryChecker(world.registry.url, minter) as checker:
        checker.ping()
        for (repo, tag), digest in world.tags.items():
            assert checker.check_tag(repo, tag) == [], f"{repo}:{tag}"
            assert checker.check_tag(repo, tag, digest) == [], f"{repo}:{tag}"
        for repo, digest in world.digests:
            assert checker.check_digest(repo, digest) == [], f"{repo}@{digest}"
        for repo in {repo for repo, _ in world.tags}:
            expected = {tag: [] for r, tag in world.tags if r == repo}
            assert checker.check_repository_tags(repo) == expected
        assert len(checker._tokens) == len({repo for repo, _ in world.tags}) + 1  # one per repository (+ /v2/)


def test_the_registry_really_requires_a_token(world):
    with RegistryChecker(world.registry.url) as checker:
        reasons = checker.check_tag("library/single", "v1")
        assert len(reasons) == 1 and "HTTP 401" in reasons[0] and "no token key is configured" in reasons[0], reasons
        assert f"service={SERVICE}" in reasons[0] and "scope=repository:library/single:pull" in reasons[0]
        with pytest.raises(RegistryAuthError):
            checker.ping()


@pytest.mark.parametrize("options", [{}, {"include_x5c": True}], ids=["kid", "x5c"])
def test_a_key_outside_the_rootcertbundle_is_rejected_and_reported(world, options):
    minter = world.minter(world.stranger, **options)
    log_offset = world.registry.log_path.stat().st_size
    with RegistryChecker(world.registry.url, minter) as checker:
        for (repo, tag) in world.tags:
            reasons = checker.check_tag(repo, tag)
            assert len(reasons) == 1, reasons
            assert "rejected the minted token" in reasons[0] and "error=invalid_token" in reasons[0], reasons
            assert minter.key_id in reasons[0]
        with pytest.raises(RegistryAuthError, match="rejected the minted token"):
            checker.ping()
    with open(world.registry.log_path, "rb") as log:
        log.seek(log_offset)
        logged = log.read().decode(errors="replace")
    assert "invalid token" in logged
    expected = "untrusted key with ID" if not options else "unable to verify certificate chain"
    assert expected in logged or "certificate signed by unknown authority" in logged, logged[-2000:]


def test_wrong_issuer_or_service_is_rejected(world):
    for minter in (TokenMinter("another-issuer", SERVICE, world.rsa.key, world.rsa.cert),
                   TokenMinter(ISSUER, "another-service", world.rsa.key, world.rsa.cert)):
        reasons = RegistryChecker(world.registry.url, minter).check_tag("library/single", "v1")
        assert len(reasons) == 1 and "rejected the minted token" in reasons[0], reasons


def test_a_deleted_layer_blob_makes_its_tag_not_servable(world):
    damaged = world.root / "damaged"
    shutil.copytree(world.storage, damaged)
    registry = world.start_token_registry(damaged, "damaged")
    world.started.append(registry)
    try:
        lost = world.layer_of[("library/single", "v1")]
        blob = damaged.joinpath(*V2, "blobs", "sha256", lost[7:9], lost[7:], "data")
        blob.unlink()
        child = next(d for repo, d in world.digests if repo == "library/multi" and d != world.tags[("library/multi", "v1")])
        damaged.joinpath(*V2, "repositories", "library", "multi", "_manifests", "revisions", "sha256", child[7:], "link").unlink()
        with RegistryChecker(registry.url, world.minter(world.rsa)) as checker:
            reasons = checker.check_tag("library/single", "v1")
            assert len(reasons) == 1 and lost in reasons[0] and "HTTP 404" in reasons[0], reasons
            reasons = checker.check_tag("library/multi", "v1")
            assert len(reasons) == 1 and reasons[0].startswith(f"manifest library/multi@{child}: HTTP 404"), reasons
            assert checker.check_digest("library/multi", child) != []
            for (repo, tag) in world.tags:
                if repo not in ("library/single", "library/multi"):
                    assert checker.check_tag(repo, tag) == [], f"{repo}:{tag}"
            listed = checker.check_repository_tags("library/single")
            assert list(listed) == ["v1"] and listed["v1"] and lost in listed["v1"][0]
    finally:
        registry.stop()


# --------------------------------------------------------------------------- the command line


def cli_has(command: str, option: str) -> bool:
    from syncagent.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return option in subparsers.choices[command]._option_string_actions


def token_options(keys: KeyPair) -> list[str]:
    return ["--registry-token-issuer", ISSUER, "--registry-token-service", SERVICE,
            "--registry-token-key", str(keys.key), "--registry-token-cert", str(keys.cert)]


def test_cli_check_registry_on_sync_and_verify(world):
    if not (cli_has("sync", "--check-registry") and cli_has("verify", "--check-registry")):
        pytest.skip("syncagent sync/verify have no --check-registry option yet")
    syncagent = SyncagentCli()
    replica = world.root / "cli-replica"
    replica.mkdir()
    registry = world.start_token_registry(replica, "cli")
    world.started.append(registry)
    try:
        started = time.monotonic()
        result = syncagent("sync", world.primary.root, replica, "--json", "--check-registry", registry.url, *token_options(world.rsa))
        assert result.returncode == 0, result.describe()
        report = result.json()
        assert report["problems"] == [], result.describe()
        assert report["tags_published"] == len(world.tags), result.describe()

        verified = syncagent("verify", replica, "--json", "--check-registry", registry.url, *token_options(world.ec))
        assert verified.returncode == 0, verified.describe()

        rejected = syncagent("verify", replica, "--json", "--check-registry", registry.url, *token_options(world.stranger))
        assert rejected.returncode == 1, rejected.describe()
        problems = rejected.json()["problems"]
        assert {(p["repository"], p["tag"]) for p in problems if p["kind"] == "not-servable"} == set(world.tags), rejected.describe()
        assert all("rejected the minted token" in p["reason"] for p in problems), rejected.describe()

        lost = world.layer_of[("group/sub/app", "v1")]
        replica.joinpath(*V2, "blobs", "sha256", lost[7:9], lost[7:], "data").unlink()
        damaged = syncagent("verify", replica, "--json", "--check-registry", registry.url, *token_options(world.rsa))
        assert damaged.returncode == 1, damaged.describe()
        not_servable = {(p["repository"], p["tag"]) for p in damaged.json()["problems"] if p["kind"] == "not-servable"}
        assert not_servable == {("group/sub/app", "v1"), ("group/sub/app", "latest")}, damaged.describe()

        plain = syncagent("verify", replica, "--check-registry", registry.url)  # no token options: 401 reported
        assert plain.returncode == 1 and "no token key is configured" in plain.stdout, plain.describe()
        print(f"CLI checks took {time.monotonic() - started:.1f} s", file=sys.stderr)
    finally:
        registry.stop()
