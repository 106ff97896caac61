"""End to end: the supplement mode (``--blobs external``) on a real two-zone Ceph RGW multisite.

A primary ``docker-registry`` keeps its storage in a bucket on zone A (its S3
driver) and takes pushes from skopeo; the bucket replicates to zone B with the
prefix ``reg/docker/registry/v2/blobs/`` only (RGW multisite: the storage
moves the blobs, in any order); ``syncagent watch --blobs external`` writes
everything under ``repositories/`` on zone B itself, each link once the blobs
it needs have arrived; a read-only secondary registry serves zone B's copy,
and a checker keeps pulling every tag it lists. Covered:

- bursts of pushes, an index, shared layers and tag moves: never a listed tag
  the secondary cannot serve, and no blob copied by the agent;
- replication paused: tags held back (metrics, /healthz), published once it
  resumes; ``sync --blobs external --external-timeout 3s`` exits 1 naming
  ``blob-not-replicated``;
- blobs the rule does not cover (a registry root outside the prefix, standing
  for objects written before the rule existed): reported without
  ``--copy-after``, copied with it;
- a manifest deleted on the primary and its blobs garbage-collected there:
  with ``watch --delete`` and the safe procedure (GC once
  ``syncagent_deletes_pending`` is 0) the secondary never lists a broken
  tag; without ``--delete`` the tag the GC broke is listed until the next
  pass over its repository (at most the reconcile interval) and then taken
  back; ``verify`` names such a tag ``deleted-at-source``;
- a rule that is too wide (a full mirror): ``replication-too-wide`` from sync
  and verify, the sidecar's metric at 1;
- the contrast, measured and printed, not asserted: the same pushes through a
  full bucket mirror with no agent, and how often the checker saw a listed tag
  it could not pull.

Nothing sleeps to synchronise: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
import requests

from syncagent.sync.layout import BlobData, Digest, key_of
from syncagent.sync.replication import CANARY_KEY
from tests.support.images import Image, ImageFactory, layer, pull
from tests.support.registry import Registry, S3Storage
from tests.support.watch_agent import Agent, RegistrySite, notifications_to, poll

pytestmark = [pytest.mark.e2e, pytest.mark.ceph]

ROOT = "reg"
BLOBS = f"{ROOT}/docker/registry/v2/blobs/"
RECONCILE = 2.0  # seconds: the reconcile interval of the agent that takes back what the GC broke
LARGE = 8 * 1024 * 1024  # bytes of the large layers: multipart uploads at the primary, a longer trip to zone B
QUICK = ("--settle", "50ms", "--health-interval", "1s", "--retry-base", "500ms", "--retry-cap", "2s")


@dataclass
class SupplementSite(RegistrySite):
    """A bucket on zone A replicating its blobs (or, ``mirror``, everything) to zone B; registries on either
    zone through their S3 driver; agents reading zone A and writing zone B."""

    multisite: object = None
    bucket: str = ""
    mirror: bool = False
    env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bucket = f"sup-{uuid.uuid4().hex[:12]}"
        if self.mirror:
            self.multisite.mirror_bucket(self.bucket)
        else:
            self.multisite.bucket(self.bucket, prefix=BLOBS)

    def url(self, zone: str, root: str = ROOT) -> str:
        endpoint = self.multisite.endpoint_a if zone == "a" else self.multisite.endpoint_b
        query = urlencode({"endpoint_url": endpoint, "region": "us-east-1", "addressing_style": "path"})
        return f"s3://{self.bucket}/{root}?{query}"

    def storage(self, zone: str, root: str = ROOT) -> S3Storage:
        endpoint = self.multisite.endpoint_a if zone == "a" else self.multisite.endpoint_b
        return S3Storage(self.multisite.access_key, self.multisite.secret_key, endpoint, self.bucket, f"/{root}")

    def agent(self, *args: str) -> Agent:
        agent = Agent(self.url("a"), self.url("b"), self.tmp / f"journal-{len(self.agents)}.sqlite3",
                      self.tmp / f"agent-{len(self.agents)}.log", "--blobs", "external", *QUICK, *args, env=self.env)
        self.agents.append(agent)
        return agent.start()

    def start_primary(self, notify: Agent | None = None, *, delete: bool = False, root: str = ROOT) -> Registry:
        self.primary = Registry(s3=self.storage("a", root), notifications=notifications_to(notify), delete=delete,
                                workdir=self.tmp / f"reg-primary-{root}")
        self.started.append(self.primary)
        return self.primary.start()

    def start_secondary(self, root: str = ROOT, repositories: list[str] | None = None) -> Registry:
        """The read-only secondary on zone B and its checker (8 pulls at once; ``repositories``: known names,
        no catalog walk), so that short windows are seen too."""
        return self.watch_secondary(Registry(s3=self.storage("b", root), read_only=True, workdir=self.tmp / f"reg-secondary-{root}"),
                                    workers=8, repositories=repositories)

    def blob_key(self, digest: str, root: str = ROOT) -> str:
        return f"{root}/{key_of(BlobData(Digest.parse(digest)))}"

    def collect_garbage(self) -> str:
        """``docker-registry garbage-collect --delete-untagged`` on the primary's storage, the primary stopped
        meanwhile (distribution requires it: no uploads may run), then started again."""
        self.primary.stop()
        environment = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # the s3 driver fails with it
        done = subprocess.run(["docker-registry", "garbage-collect", str(self.primary.config_path), "--delete-untagged"],
                              capture_output=True, text=True, timeout=120, env=environment)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        self.primary.start()
        return done.stdout


def own_layer(image: Image) -> str:
    """The layer an image has to itself (the last: the first is the base every image shares)."""
    return image.layers[-1]


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> tuple[ImageFactory, list[Image], Image]:
    """Built once: 12 small images sharing a base layer, two more with a large layer each (they take the
    replication longer than their manifests), and a two-platform index."""
    factory = ImageFactory(tmp_path_factory.mktemp("oci"))
    base = layer("supplement-base", size=8192)
    built = [factory.image(f"img{i}", [base, layer(f"supplement-{i}", size=2048 + 97 * i)]) for i in range(12)]
    built += [factory.image(f"large{i}", [base, layer(f"supplement-large-{i}", size=LARGE)]) for i in range(2)]
    amd64 = factory.image("multi-amd64", [base, layer("supplement-amd64")], architecture="amd64")
    arm64 = factory.image("multi-arm64", [base, layer("supplement-arm64")], architecture="arm64")
    return factory, built, factory.index("multi", [amd64, arm64])


@pytest.fixture
def aws_env(multisite, monkeypatch, tmp_path) -> dict:
    """The cluster's S3 user for syncagent (boto3's chain, shared AWS files pointed away), in os.environ."""
    settings = {
        "AWS_ACCESS_KEY_ID": multisite.access_key, "AWS_SECRET_ACCESS_KEY": multisite.secret_key,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture
def make_site(multisite, aws_env, tmp_path, image_set):
    sites: list[SupplementSite] = []

    def make(name: str, *, mirror: bool = False) -> SupplementSite:
        directory = tmp_path / name
        directory.mkdir()
        site = SupplementSite(directory, image_set[0], multisite=multisite, mirror=mirror, env=aws_env)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()


PUSHED_TO = ["multi/app", *(f"team{i}/app" for i in range(6)), "large0/app", "large1/app", "burst/app"]


def push_everything(site: RegistrySite, built: list[Image], index: Image) -> dict[tuple[str, str], str]:
    """The pushes of the burst test and of the contrast: an index, six repositories at once sharing the base
    layer (and two images with a large layer), a burst of five tags into one repository, and tag moves.
    Returns what the secondary must serve."""
    expected = {("multi/app", "v1"): site.push(index, "multi/app", "v1")}
    with ThreadPoolExecutor(6) as pool:
        spread = {(f"team{i}/app", "v1"): pool.submit(site.push_concurrently, built[i], f"team{i}/app", "v1")
                  for i in range(6)}
        spread.update({(f"large{i}/app", "v1"): pool.submit(site.push_concurrently, built[12 + i], f"large{i}/app", "v1")
                       for i in range(2)})
        burst = {("burst/app", f"t{i}"): pool.submit(site.push_concurrently, built[6 + i], "burst/app", f"t{i}")
                 for i in range(5)}
    expected.update({key: future.result() for key, future in {**spread, **burst}.items()})
    expected[("team0/app", "v1")] = site.push(built[11], "team0/app", "v1")  # tag moves
    expected[("burst/app", "t0")] = site.push(built[1], "burst/app", "t0")
    return expected


def sync(syncagent, site: SupplementSite, *args: str, root: str = ROOT):
    return syncagent("sync", site.url("a", root), site.url("b", root), "--blobs", "external", "--json", *args)


def kinds(result) -> list[str]:
    return sorted(problem["kind"] for problem in result.json()["problems"])


def healthz(agent: Agent) -> tuple[int, dict]:
    response = requests.get(agent.url("/healthz"), timeout=5)
    return response.status_code, response.json()


# --- tests ------------------------------------------------------------------------------------


def test_bursts_index_images_shared_layers_and_tag_moves_are_never_listed_before_their_blobs(make_site, image_set):
    _, built, index = image_set
    site = make_site("bursts")
    agent = site.agent("--fs-events", "off", "--reconcile-interval", "0", "--reconcile-at-start", "false")
    site.start_primary(notify=agent)
    site.start_secondary(repositories=PUSHED_TO)

    expected = push_everything(site, built, index)

    site.wait_served(expected)
    assert pull(site.secondary.url, "multi/app", "v1", site.tmp / "pulled") == index.digest
    site.finish_checks()
    print(f"\nsupplement mode, {len(expected)} tags: the checker made {site.checker.checked} pulls over "
          f"{site.checker.sweeps} sweeps and saw {len(site.checker.failures)} listed tags it could not pull")
    assert agent.metric("syncagent_blobs_copied_total") == 0, "the storage's replication moved every blob"
    assert agent.metric("syncagent_blob_wait_seconds_count") > 0
    assert agent.metric("syncagent_replication_too_wide") == 0
    assert agent.stop() == 0


def test_paused_replication_holds_tags_back_until_it_resumes(make_site, image_set, syncagent):
    _, built, _ = image_set
    site = make_site("paused")
    agent = site.agent("--fs-events", "off", "--reconcile-interval", "0", "--reconcile-at-start", "false")
    site.start_primary(notify=agent)
    site.start_secondary()
    before = {("app/one", "v1"): site.push(built[0], "app/one", "v1")}
    site.wait_served(before)

    site.multisite.pause(site.bucket)
    try:
        held = {("app/one", "v2"): site.push(built[1], "app/one", "v2"), ("app/two", "v1"): site.push(built[2], "app/two", "v1")}
        poll(lambda: agent.metric("syncagent_tags_held_back") == 2 and agent.metric("syncagent_blobs_awaiting") >= 2,
             what="the agent to hold back both tags")
        status, body = healthz(agent)
        assert status == 200 and body["checks"]["replication"]["blobs_awaiting"] >= 2, body
        assert site.secondary.tags("app/one") == ["v1"] and site.secondary.tags("app/two") == []
        timed_out = sync(syncagent, site, "--external-timeout", "3s")
        assert timed_out.returncode == 1, timed_out.describe()
        assert "blob-not-replicated" in kinds(timed_out) and "tag-not-published" in kinds(timed_out), timed_out.describe()
        stuck = {p["digest"] for p in timed_out.json()["problems"] if p["kind"] == "blob-not-replicated"}
        assert stuck >= {own_layer(built[1]), own_layer(built[2])}
    finally:
        site.multisite.resume(site.bucket)

    site.wait_served({**before, **held})
    poll(lambda: agent.metric("syncagent_tags_held_back") == 0 and agent.metric("syncagent_blobs_awaiting") == 0,
         what="nothing held back any more")
    site.finish_checks()
    assert agent.metric("syncagent_blobs_copied_total") == 0
    assert agent.stop() == 0


def test_blobs_the_rule_does_not_cover_wait_and_are_reported_unless_copy_after(make_site, image_set, syncagent):
    """The registry root ``old/`` is outside the rule's prefix: its blobs stand for objects written before
    the rule existed, which the replication never carries."""
    _, built, _ = image_set
    site = make_site("uncovered")
    site.start_primary(root="old")
    pushed = site.push(built[3], "legacy/app", "v1")
    site.start_secondary(root="old")

    waited = sync(syncagent, site, "--external-timeout", "3s", root="old")

    assert waited.returncode == 1, waited.describe()
    report = waited.json()
    stuck = {p["digest"] for p in report["problems"] if p["kind"] == "blob-not-replicated"}
    assert stuck == {pushed, built[3].config, *built[3].layers}
    assert [(p["kind"], p["tag"]) for p in report["problems"] if p["tag"]] == [("tag-not-published", "v1")]
    assert any(f["kind"] == "copy-after-suggested" for f in report["findings"])
    assert site.secondary.tags("legacy/app") == []

    copied = sync(syncagent, site, "--copy-after", "1s", root="old")

    assert copied.returncode == 0, copied.describe()
    assert copied.json()["blobs_copied_after_wait"] == 4 and copied.json()["tags_published"] == 1
    assert site.secondary.servable_problems("legacy/app", "v1") == []
    site.finish_checks()


def test_deletes_with_watch_delete_and_the_safe_gc_procedure_never_show_a_broken_tag(make_site, image_set):
    _, built, _ = image_set
    site = make_site("delete")
    agent = site.agent("--fs-events", "off", "--reconcile-interval", "0", "--reconcile-at-start", "false", "--delete", "true")
    site.start_primary(notify=agent, delete=True)
    site.start_secondary()
    expected = {("shop/web", "v1"): site.push(built[4], "shop/web", "v1"),
                ("shop/web", "v2"): site.push(built[5], "shop/web", "v2")}
    site.wait_served(expected)

    site.primary.api.delete_manifest("shop/web", expected[("shop/web", "v1")])
    poll(lambda: agent.metric("syncagent_delete_lag_seconds_count") >= 1 and agent.metric("syncagent_deletes_pending") == 0,
         what="the delete to be carried out (syncagent_deletes_pending 0)")
    assert site.secondary.tags("shop/web") == ["v2"]
    site.collect_garbage()
    site.multisite.wait_until_gone_on_b(site.bucket, site.blob_key(own_layer(built[4])))

    site.finish_checks()
    assert site.secondary_digest("shop/web", "v2") == expected[("shop/web", "v2")]
    assert agent.metric("syncagent_tags_unpublished_total") == 0, "nothing was left to break"
    assert agent.stop() == 0


def test_a_tag_the_gc_broke_before_its_delete_arrived_is_taken_back_within_the_reconcile_interval(make_site, image_set):
    _, built, _ = image_set
    site = make_site("gc-race")
    agent = site.agent("--fs-events", "off", "--reconcile-interval", f"{RECONCILE:.0f}s", "--reconcile-at-start", "false")
    site.start_primary(notify=agent, delete=True)
    site.start_secondary()
    doomed = built[6]
    expected = {("shop/api", "v1"): site.push(doomed, "shop/api", "v1"),
                ("shop/api", "v2"): site.push(built[7], "shop/api", "v2")}
    site.wait_served(expected)
    site.primary.api.delete_manifest("shop/api", doomed.digest)  # no --delete: the tag stays while it is whole
    poll(lambda: agent.metric("syncagent_passes_total") >= 2, what="the pass the delete notification asked for")
    assert site.secondary.tags("shop/api") == ["v1", "v2"], "whole until the GC: --delete's to remove, not taken back"

    with BreakageClock(site, "shop/api", "v1", [doomed.digest, doomed.config, own_layer(doomed)]) as clock:
        site.collect_garbage()
        poll(lambda: clock.unlisted is not None, timeout=RECONCILE + 30, what="the broken tag to be taken back")

    site.checker.stop()
    assert site.checker.unservable() <= {("shop/api", "v1")}, site.checker.failures[:5]
    window = clock.unlisted - clock.first_gone
    print(f"\na tag the GC broke before its delete arrived: listed {window:.2f} s after its first blob left zone b "
          f"(the checker saw it broken over {site.checker.window('shop/api', 'v1'):.2f} s); reconcile interval "
          f"{RECONCILE:.0f} s")
    assert window <= RECONCILE + 3, "the documented window: until the next pass over the repository"
    assert agent.metric("syncagent_tags_unpublished_total") == 1, "taken back as broken (nothing else removes it)"
    assert site.secondary_digest("shop/api", "v2") == expected[("shop/api", "v2")]
    assert agent.stop() == 0


class BreakageClock:
    """Polls zone B (every 20 ms) for a tag's blobs and the secondary for the tag: when the first blob left,
    when the tag stopped being listed."""

    def __init__(self, site: SupplementSite, repository: str, tag: str, digests: list[str]) -> None:
        self.site, self.repository, self.tag = site, repository, tag
        self.keys = [site.blob_key(digest) for digest in digests]
        self.first_gone: float | None = None
        self.unlisted: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "BreakageClock":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set() and self.unlisted is None:
            if self.first_gone is None and any(self.site.multisite.head("b", self.site.bucket, k) is None for k in self.keys):
                self.first_gone = time.monotonic()
            if self.tag not in self.site.secondary.tags(self.repository):
                self.unlisted = time.monotonic()
                if self.first_gone is None:
                    self.first_gone = self.unlisted
            self._stop.wait(0.02)


def test_verify_names_a_tag_the_gc_broke_and_sync_takes_it_back_without_delete(make_site, image_set, syncagent):
    _, built, _ = image_set
    site = make_site("verify")
    site.start_primary(delete=True)
    site.start_secondary()
    kept = site.push(built[8], "shop/db", "v2")
    doomed = site.push(built[9], "shop/db", "v1")
    site.multisite.wait_until_on_b(site.bucket, site.blob_key(doomed))
    assert sync(syncagent, site).returncode == 0
    site.primary.api.delete_manifest("shop/db", doomed)
    site.collect_garbage()
    site.multisite.wait_until_gone_on_b(site.bucket, site.blob_key(own_layer(built[9])))

    verified = syncagent("verify", site.url("a"), "--against", site.url("b"), "--json")

    assert verified.returncode == 1, verified.describe()
    problems = verified.json()["destination"]["problems"]
    assert [(p["kind"], p["tag"]) for p in problems] == [("deleted-at-source", None), ("deleted-at-source", "v1")], problems
    assert "collected its blobs" in problems[1]["reason"]

    taken_back = sync(syncagent, site)

    assert taken_back.returncode == 0, taken_back.describe()
    assert (taken_back.json()["tags_unpublished"], taken_back.json()["revisions_unpublished"]) == (1, 1)
    assert site.secondary.tags("shop/db") == ["v2"] and site.secondary_digest("shop/db", "v2") == kept
    after = syncagent("verify", site.url("a"), "--against", site.url("b"), "--json")
    assert not [p for p in after.json()["destination"]["problems"]], after.describe()


def test_a_rule_that_replicates_more_than_blobs_is_reported_by_sync_verify_and_the_sidecar(make_site, image_set, syncagent):
    _, built, _ = image_set
    site = make_site("too-wide", mirror=True)
    site.start_primary()
    site.push(built[10], "wide/app", "v1")
    sync(syncagent, site)  # places the canary at the source; the mirror carries it over
    site.multisite.wait_until_on_b(site.bucket, f"{ROOT}/{CANARY_KEY}")

    synced = sync(syncagent, site)
    verified = syncagent("verify", site.url("a"), "--against", site.url("b"), "--json")

    assert synced.returncode == 1 and kinds(synced) == ["replication-too-wide"], synced.describe()
    assert verified.returncode == 1, verified.describe()
    assert "replication-too-wide" in [p["kind"] for p in verified.json()["destination"]["problems"]]
    agent = site.agent("--fs-events", "off", "--reconcile-interval", "0", "--reconcile-at-start", "false")
    poll(lambda: agent.metric("syncagent_replication_too_wide") == 1, what="the sidecar's metric")
    status, body = healthz(agent)
    assert status == 503 and body["checks"]["replication"]["rule_too_wide"] is True, body
    assert agent.stop() == 0


def test_the_contrast_a_full_mirror_without_the_agent(make_site, image_set, capsys):
    """Measured, not asserted: the pushes of the burst test through a bucket mirrored whole (RGW's default
    for multisite), read by the secondary with no agent; how often the checker met a listed tag it could
    not pull. docs/benchmarks.md quotes the figure."""
    _, built, index = image_set
    site = make_site("contrast", mirror=True)
    site.start_primary()
    site.start_secondary(repositories=PUSHED_TO)

    expected = push_everything(site, built, index)

    site.wait_served(expected)
    sweeps = site.checker.sweeps
    poll(lambda: site.checker.sweeps >= sweeps + 2, what="the checker to go over the final state once more")
    site.checker.stop()
    unservable = site.checker.unservable()
    with capsys.disabled():
        print(f"\ncontrast, a full bucket mirror and no agent, {len(expected)} tags: the checker made {site.checker.checked} "
              f"pulls over {site.checker.sweeps} sweeps and saw {len(site.checker.failures)} times a listed tag it could "
              f"not pull ({len(unservable)} distinct tags)")
    assert site.checker.checked > 0
