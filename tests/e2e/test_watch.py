"""End to end: `syncagent watch` next to a read-only secondary registry, following a real primary.

A real primary `docker-registry` takes pushes from skopeo (images built with
umoci) and, where a test wants it, POSTs its notifications to the agent; the
agent (a separate process, as deployed) writes the secondary's storage; a real
read-only registry serves that storage. Throughout every test a checker pulls
every tag the secondary lists (manifest, index children, config and layer
HEADs) and records anything it cannot serve -- there must be nothing.

Nothing here sleeps to synchronise: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from tests.support.images import Image, ImageFactory, layer, pull
from tests.support.registry import Registry
from tests.support.watch_agent import TOKEN, Agent, RegistrySite, notifications_to, poll

pytestmark = pytest.mark.e2e

JWT_SECRET = "e2e-jwt-secret-of-more-than-32-bytes-0b1c"


# --- a site: primary, agent, read-only secondary, checker -------------------------------------


@dataclass
class Site(RegistrySite):
    """A primary and a secondary on local directories, the agent between them."""

    @property
    def primary_root(self) -> Path:
        return self.tmp / "primary"

    @property
    def secondary_root(self) -> Path:
        return self.tmp / "secondary"

    def agent(self, *args: str, port: int | None = None, env: dict | None = None) -> Agent:
        self.primary_root.mkdir(exist_ok=True)
        agent = Agent(self.primary_root, self.secondary_root, self.tmp / "journal.sqlite3",
                      self.tmp / f"agent-{len(self.agents)}.log", *args, port=port, env=env)
        self.agents.append(agent)
        return agent.start()

    def start_primary(self, notify: Agent | None = None, token: str = TOKEN, delete: bool = False) -> Registry:
        self.primary = Registry(root=self.primary_root, notifications=notifications_to(notify, token),
                                workdir=self.tmp / "reg-primary", delete=delete)
        self.started.append(self.primary)
        return self.primary.start()

    def start_secondary(self) -> Registry:
        self.secondary_root.mkdir(exist_ok=True)
        return self.watch_secondary(Registry(root=self.secondary_root, read_only=True, workdir=self.tmp / "reg-secondary"))


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> tuple[ImageFactory, list[Image], Image]:
    """Built once for the module: 12 small images sharing a base layer, and a two-platform index."""
    factory = ImageFactory(tmp_path_factory.mktemp("oci"))
    base = layer("base", size=8192)
    built = [factory.image(f"img{i}", [base, layer(f"img{i}", size=2048 + 97 * i)]) for i in range(12)]
    amd64 = factory.image("multi-amd64", [base, layer("multi-amd64")], architecture="amd64")
    arm64 = factory.image("multi-arm64", [base, layer("multi-arm64")], architecture="arm64")
    return factory, built, factory.index("multi", [amd64, arm64])


@pytest.fixture
def site(tmp_path, image_set):
    factory, _, _ = image_set
    current = Site(tmp_path, factory)
    yield current
    current.close()


SOURCES_NOTIFICATIONS_ONLY = ("--fs-events", "off", "--reconcile-interval", "0", "--reconcile-at-start", "false")


# --- tests ------------------------------------------------------------------------------------


def test_notifications_carry_pushes_tag_moves_and_many_repositories(site, image_set):
    _, built, index = image_set
    agent = site.agent(*SOURCES_NOTIFICATIONS_ONLY)
    site.start_primary(notify=agent)
    site.start_secondary()
    expected: dict[tuple[str, str], str] = {}

    expected[("library/multi", "v1")] = site.push(index, "library/multi", "v1")
    expected[("group/sub/app", "v1")] = site.push(built[0], "group/sub/app", "v1")
    site.wait_served(expected)

    with ThreadPoolExecutor(6) as pool:  # pushes to many repositories at once
        futures = {(f"team{i}/app", "v1"): pool.submit(site.push_concurrently, built[i + 1], f"team{i}/app", "v1")
                   for i in range(6)}
    expected.update({key: future.result() for key, future in futures.items()})
    site.wait_served(expected)

    expected[("group/sub/app", "v1")] = site.push(built[7], "group/sub/app", "v1")  # a tag move
    expected[("group/sub/app", "latest")] = site.push(built[0], "group/sub/app", "latest")
    site.wait_served(expected)

    assert pull(site.secondary.url, "library/multi", "v1", site.tmp / "pulled-multi") == index.digest
    assert pull(site.secondary.url, "group/sub/app", "v1", site.tmp / "pulled-app") == built[7].digest
    site.finish_checks()
    assert agent.metric("syncagent_events_received_total", 'source="notification"') >= 10
    assert agent.metric("syncagent_events_ignored_total") > 0, "blob and pull events are ignored, not queued"
    assert agent.metric("syncagent_replication_lag_seconds_count") >= len(expected)
    assert agent.stop() == 0


def test_a_burst_of_ten_pushes_to_one_repository_makes_far_fewer_passes(site, image_set):
    _, built, _ = image_set
    agent = site.agent(*SOURCES_NOTIFICATIONS_ONLY)
    site.start_primary(notify=agent)
    site.start_secondary()
    with ThreadPoolExecutor(10) as pool:
        futures = {("burst/app", f"t{i}"): pool.submit(site.push_concurrently, built[i], "burst/app", f"t{i}")
                   for i in range(10)}
    expected = {key: future.result() for key, future in futures.items()}
    site.wait_served(expected)
    poll(lambda: agent.metric("syncagent_queue_depth") == 0 and agent.metric("syncagent_passes_in_progress") == 0,
         what="the queue to drain")
    passes = agent.passes("burst/app")
    events = agent.journal_query("SELECT count(*) FROM events WHERE repository = 'burst/app'")[0][0]
    assert events >= 10 and passes <= 4, f"{events} events made {passes} passes"
    site.finish_checks()
    assert agent.stop() == 0


def test_sigkill_while_pushes_continue_then_restart_loses_nothing(site, image_set):
    _, built, _ = image_set
    args = ("--fs-events", "off", "--reconcile-interval", "0")  # recovery: the journal, the start-up reconcile, the registry's retries
    # A long settle keeps a repository's second change acknowledged but waiting: work that only the journal holds at the kill.
    agent = site.agent(*args, "--settle", "5s", "--max-delay", "10s")
    site.start_primary(notify=agent)
    site.start_secondary()
    expected: dict[tuple[str, str], str] = {}
    lock = threading.Lock()

    def pushed() -> int:
        with lock:
            return len(expected)

    def pusher() -> None:
        for i in range(12):
            key = (f"kill/app{i % 4}", f"v{i // 4}")
            digest = site.push(built[i], *key)
            with lock:
                expected[key] = digest

    thread = threading.Thread(target=pusher)
    thread.start()
    try:
        poll(lambda: pushed() >= 1 and site.secondary_digest("kill/app0", "v0"), what="the agent to follow the first push")
        # kill/app0's second push (v1) lands within the settle time of its first: acknowledged, held for 5 s.
        pending_query = "SELECT repository FROM pending WHERE repository = 'kill/app0'"
        poll(lambda: agent.journal_query(pending_query), what="acknowledged work waiting in the journal")
        agent.kill()
        at_kill = pushed()
        assert agent.journal_query(pending_query), "the kill -9 left acknowledged work that only the journal holds"
        poll(lambda: pushed() >= min(12, at_kill + 2) or not thread.is_alive(), what="pushes while no agent runs")
        assert pushed() > at_kill, "no push happened while the agent was down"
        restarted = site.agent(*args, port=agent.port)
    finally:
        thread.join(60)
    assert len(expected) == 12
    site.wait_served(expected)
    site.finish_checks()
    assert restarted.stop() == 0


def test_filesystem_events_alone_keep_the_secondary_up_to_date(site, image_set):
    _, built, index = image_set
    site.start_primary()  # no notifications
    agent = site.agent("--notifications", "false", "--fs-events", "on", "--reconcile-interval", "0",
                       "--reconcile-at-start", "false")
    site.start_secondary()
    expected = {("fs/app", "v1"): site.push(built[0], "fs/app", "v1")}
    site.wait_served(expected)
    expected[("fs/app", "v1")] = site.push(built[1], "fs/app", "v1")  # a tag move
    expected[("fs/multi", "v1")] = site.push(index, "fs/multi", "v1")
    expected[("fs/deep/name/app", "v2")] = site.push(built[2], "fs/deep/name/app", "v2")
    site.wait_served(expected)
    site.finish_checks()
    assert agent.metric("syncagent_events_received_total", 'source="fs"') >= 3
    assert agent.metric("syncagent_events_received_total", 'source="notification"') == 0
    assert agent.stop() == 0


def test_periodic_reconcile_alone_keeps_the_secondary_up_to_date(site, image_set):
    _, built, _ = image_set
    site.start_primary()
    agent = site.agent("--notifications", "false", "--fs-events", "off", "--reconcile-interval", "1s",
                       "--reconcile-at-start", "false")
    site.start_secondary()
    expected = {("rec/app", "v1"): site.push(built[3], "rec/app", "v1"),
                ("rec/other", "v1"): site.push(built[4], "rec/other", "v1")}
    site.wait_served(expected)
    expected[("rec/app", "v1")] = site.push(built[5], "rec/app", "v1")
    site.wait_served(expected)
    site.finish_checks()
    assert agent.metric("syncagent_last_reconcile_timestamp_seconds") > 0
    assert agent.metric("syncagent_events_received_total") == 0
    assert agent.stop() == 0


def test_refused_requests_change_nothing(site, image_set):
    _, built, _ = image_set
    agent = site.agent(*SOURCES_NOTIFICATIONS_ONLY, "--jwt-issuer", "primary", "--jwt-audience", "syncagent",
                       "--max-body", "16KiB", env={"SYNCAGENT_JWT_SECRET": JWT_SECRET})
    site.start_primary(notify=agent, token="not-the-token")  # a real registry with the wrong credentials
    site.start_secondary()
    digest = site.push(built[6], "guarded/app", "v1")
    poll(lambda: agent.metric("syncagent_events_rejected_total", 'reason="wrong-token"') >= 1,
         what="the registry's wrongly authenticated event to be refused")

    body = (site.tmp / "event.json")
    body.write_text(
        '{"events": [{"id": "x", "action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",'
        f' "repository": "guarded/app", "tag": "v1", "digest": "{digest}"}}}}]}}'
    )
    event = body.read_bytes()
    now = int(time.time())
    expired = jwt.encode({"iss": "primary", "aud": "syncagent", "exp": now - 120}, JWT_SECRET, algorithm="HS256")
    forged = jwt.encode({"iss": "primary", "aud": "syncagent", "exp": now + 600}, "a-different-secret-of-32-bytes-or-more",
                        algorithm="HS256")
    wrong_audience = jwt.encode({"iss": "primary", "aud": "other", "exp": now + 600}, JWT_SECRET, algorithm="HS256")
    valid = jwt.encode({"iss": "primary", "aud": "syncagent", "exp": now + 600}, JWT_SECRET, algorithm="HS256")
    assert agent.post_events(event, authorization=None).status_code == 401
    assert agent.post_events(event, authorization="Bearer not-the-token").status_code == 401
    assert agent.post_events(event, authorization=f"Bearer {forged}").status_code == 401
    assert agent.post_events(event, authorization=f"Bearer {expired}").status_code == 401
    assert agent.post_events(event, authorization=f"Bearer {wrong_audience}").status_code == 401
    oversized = event[:-2] + b" " * (17 * 1024) + event[-2:]
    assert agent.post_events(oversized, authorization=f"Bearer {TOKEN}").status_code == 413

    assert agent.journal_query("SELECT count(*) FROM events")[0][0] == 0, "a refused request is never journaled"
    assert agent.journal_query("SELECT count(*) FROM pending")[0][0] == 0
    assert agent.metric("syncagent_passes_total") == 0
    assert site.secondary.catalog() == [] and not (site.secondary_root / "docker").exists()
    for reason in ("missing", "bad-signature", "expired", "bad-claims", "too-large"):
        assert agent.metric("syncagent_events_rejected_total", f'reason="{reason}"') >= 1, reason

    assert agent.post_events(event, authorization=f"Bearer {valid}").status_code == 200
    site.wait_served({("guarded/app", "v1"): digest})
    site.finish_checks()
    assert agent.stop() == 0


def test_deletes_on_the_primary_are_followed_with_delete_enabled(site, image_set):
    """watch --delete: a manifest deleted on the primary (its tags go with it) leaves the secondary too."""
    _, built, _ = image_set
    agent = site.agent(*SOURCES_NOTIFICATIONS_ONLY, "--delete", "true")
    site.start_primary(notify=agent, delete=True)
    site.start_secondary()
    expected = {
        ("shop/web", "v1"): site.push(built[0], "shop/web", "v1"),
        ("shop/web", "v2"): site.push(built[1], "shop/web", "v2"),
        ("shop/api", "v1"): site.push(built[2], "shop/api", "v1"),
    }
    site.wait_served(expected)
    site.primary.api.delete_manifest("shop/web", expected[("shop/web", "v1")])
    poll(lambda: site.secondary_digest("shop/web", "v1") is None, what="the deleted tag to leave the secondary")
    assert site.secondary_digest("shop/web", "v2") == expected[("shop/web", "v2")]
    assert site.secondary_digest("shop/api", "v1") == expected[("shop/api", "v1")]
    revision = site.secondary_root / "docker/registry/v2/repositories/shop/web/_manifests/revisions/sha256"
    poll(lambda: not (revision / expected[("shop/web", "v1")].split(":")[1] / "link").exists(),
         what="the deleted manifest's revision link to leave the secondary")
    site.finish_checks()
    assert agent.stop() == 0
