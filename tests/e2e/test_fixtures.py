"""The e2e fixtures on their own (no syncagent): a registry, images, pushes and pulls."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.images import ImageToolError, layer, pull
from tests.support.registry import Notifications, Registry, RegistryError, S3Storage

pytestmark = pytest.mark.e2e

V2 = ("docker", "registry", "v2")


def test_push_and_pull_back_give_the_same_digests(tmp_path, images, primary):
    base = layer("base")
    single = images.image("single", [base, layer("single")])
    amd64 = images.image("multi-amd64", [base, layer("amd64")], architecture="amd64")
    arm64 = images.image("multi-arm64", [base, layer("arm64")], architecture="arm64")
    multi = images.index("multi", [amd64, arm64])
    untagged = images.image("untagged", [layer("untagged")])

    assert images.push(single, primary.url, "group/sub/app", "v1") == single.digest
    assert images.push(multi, primary.url, "library/multi", "v1") == multi.digest
    assert images.push(untagged, primary.url, "group/sub/app") == untagged.digest

    assert primary.catalog() == ["group/sub/app", "library/multi"]
    assert primary.tags("group/sub/app") == ["v1"]
    assert primary.manifest_digest("group/sub/app", "v1") == single.digest
    assert primary.manifest_digest("library/multi", "v1") == multi.digest
    for ref in ("v1", untagged.digest):
        assert primary.servable_problems("group/sub/app", ref) == []
    for ref in multi.manifests:
        assert primary.servable_problems("library/multi", ref) == []

    assert pull(primary.url, "group/sub/app", "v1", tmp_path / "pull-single") == single.digest
    assert pull(primary.url, "group/sub/app", untagged.digest, tmp_path / "pull-untagged") == untagged.digest
    assert pull(primary.url, "library/multi", "v1", tmp_path / "pull-multi") == multi.digest
    for child in multi.children:
        assert pull(primary.url, "library/multi", child.digest, tmp_path / f"pull-{child.name}") == child.digest

    repo = primary.root.joinpath(*V2, "repositories", "group", "sub", "app")
    assert (repo / "_manifests/tags/v1/current/link").read_text() == single.digest
    assert not (repo / "_manifests/tags" / untagged.digest).exists()
    assert sorted(p.name for p in (repo / "_manifests/tags").iterdir()) == ["v1"]
    assert (repo / "_manifests/revisions/sha256" / untagged.digest.removeprefix("sha256:") / "link").exists()
    multi_revisions = primary.root.joinpath(*V2, "repositories", "library", "multi", "_manifests/revisions/sha256")
    assert sorted(p.name for p in multi_revisions.iterdir()) == sorted(d.removeprefix("sha256:") for d in multi.manifests)


def test_the_same_layer_content_gives_the_same_blob(images):
    shared, top_a, top_b = layer("shared"), layer("a"), layer("b")
    one = images.image("one", [shared, top_a])
    two = images.image("two", [shared, top_b])
    assert one.layers[0] == two.layers[0]
    assert one.layers[1] != two.layers[1]
    assert one.digest != two.digest
    assert len(images.read_blob(one.layers[0])) < 6 * 1024


def test_a_read_only_registry_serves_pulls_and_refuses_pushes(tmp_path, images, primary, start_registry):
    image = images.image("image", [layer("ro")])
    images.push(image, primary.url, "library/app", "v1")
    secondary = start_registry(primary.root, read_only=True, name="read-only")
    assert secondary.manifest_digest("library/app", "v1") == image.digest
    assert pull(secondary.url, "library/app", "v1", tmp_path / "pulled") == image.digest
    other = images.image("other", [layer("other")])
    with pytest.raises(ImageToolError):
        images.push(other, secondary.url, "library/app", "v2")
    assert secondary.tags("library/app") == ["v1"]


def test_a_port_in_use_is_reported_with_the_log(tmp_path, primary):
    clash = Registry(root=tmp_path / "clash", port=primary.port, workdir=tmp_path / "clash-registry")
    with pytest.raises(RegistryError, match="address already in use"):
        clash.start()
    assert clash.process is None


def test_an_s3_registry_starts_although_the_environment_sets_aws_ca_bundle(tmp_path, monkeypatch, components):
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    storage = S3Storage("access", "secret", "http://127.0.0.1:9", "bucket", "/mirror")
    with Registry(s3=storage, read_only=True, workdir=tmp_path / "s3-registry") as registry:
        assert registry.api.ping()
        assert registry.root is None
    assert registry.process is None


def test_a_registry_with_notifications_posts_push_events_with_the_bearer_token(tmp_path, images):
    received: list[tuple[str | None, dict]] = []
    manifest_pushed = threading.Event()

    class Listener(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            for event in json.loads(body)["events"]:
                received.append((self.headers.get("Authorization"), event))
                if event["action"] == "push" and event["target"].get("tag") == "v1":
                    manifest_pushed.set()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        registry = Registry(
            root=tmp_path / "notifying", workdir=tmp_path / "notifying-registry",
            notifications=Notifications(f"http://127.0.0.1:{server.server_port}/events", "s3cret"),
        )
        with registry:
            image = images.image("notified", [layer("notified")])
            images.push(image, registry.url, "library/app", "v1")
            assert manifest_pushed.wait(10), f"no manifest push event; got {received}"
    finally:
        server.shutdown()
        server.server_close()
    pushes = [event for _, event in received if event["action"] == "push" and event["target"].get("tag") == "v1"]
    assert pushes[0]["target"]["digest"] == image.digest
    assert pushes[0]["target"]["repository"] == "library/app"
    assert {authorization for authorization, _ in received} == {"Bearer s3cret"}
