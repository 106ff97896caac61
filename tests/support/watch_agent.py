"""`syncagent watch` as a separate process, and a checker that keeps pulling what a secondary registry lists.

Shared by the end-to-end sidecar tests (tests/e2e/test_watch.py on filesystems,
tests/e2e/test_supplement.py on a two-zone Ceph RGW). Nothing here sleeps to
synchronise: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.images import Image, ImageFactory, ImageToolError
from tests.support.registry import Notifications, Registry, RegistryError, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-shared-notification-token-7f3a9c"
EVENTS = "application/vnd.docker.distribution.events.v1+json"
ARRIVAL_TIMEOUT = 30.0


def poll(predicate, timeout: float = ARRIVAL_TIMEOUT, interval: float = 0.05, what: str = "condition"):
    """Call ``predicate`` until it returns something true; fail with ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- the agent as a process ---------------------------------------------------------


class Agent:
    """``python -m syncagent.cli.watch SRC DST ...`` with its log in a file."""

    def __init__(self, src: str | Path, dst: str | Path, journal: Path, log_path: Path, *args: str,
                 port: int | None = None, env: dict | None = None) -> None:
        self.port = port or free_port()
        self.journal = journal
        self.log_path = log_path
        self.args = [str(src), str(dst), "--listen", f"127.0.0.1:{self.port}", "--journal", str(journal), *args]
        self.env = {**os.environ, "SYNCAGENT_TOKEN": TOKEN, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> "Agent":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncagent.cli.watch", *self.args], cwd=PROJECT_ROOT, env=self.env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        poll(lambda: self.process.poll() is not None or self._status("/livez") == 200, timeout=30,
             what="the agent to answer /livez")
        assert self.process.poll() is None, f"the agent exited with {self.process.returncode}:\n{self.log_tail()}"
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _status(self, path: str) -> int | None:
        try:
            return requests.get(self.url(path), timeout=2).status_code
        except requests.RequestException:
            return None

    def metric(self, name: str, labels: str = "") -> float:
        text = requests.get(self.url("/metrics"), timeout=5).text
        """The sample's value; without ``labels``, the sum over all label values."""
        prefixes = (f"{name}{{{labels}}} ",) if labels else (f"{name} ", f"{name}{{")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefixes))

    def journal_query(self, sql: str, *params) -> list[tuple]:
        """Read the journal while the agent runs (SQLite WAL: readers do not block the writer)."""
        db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def passes(self, repository: str) -> int:
        return self.journal_query("SELECT count(*) FROM passes WHERE repository = ?", repository)[0][0]

    def post_events(self, body: bytes, *, authorization: str | None, content_type: str = EVENTS) -> requests.Response:
        headers = {"Content-Type": content_type}
        if authorization is not None:
            headers["Authorization"] = authorization
        return requests.post(self.url("/events"), data=body, headers=headers, timeout=10)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the agent did not stop within 40 s after SIGTERM:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- the checker -------------------------------------------------------------------------------


class ServabilityChecker:
    """Keeps pulling everything the secondary lists; records every tag it lists but cannot serve.

    ``failures`` describes each sighting; ``sightings`` holds (monotonic time, repository, tag) of the
    same sightings, for tests that measure how long a tag stayed unservable (:meth:`window`).
    ``workers``: tags checked at once within a sweep (a sweep then takes about the time of the slowest
    pull; windows shorter than a sweep can go unseen). ``repositories``: list the tags of these instead
    of walking the catalog first (on S3 storage a catalog walk costs a listing per directory).
    """

    def __init__(self, secondary: Registry, *, workers: int = 1, repositories: list[str] | None = None) -> None:
        self.secondary = secondary
        self.workers = workers
        self.repositories = repositories
        self.failures: list[str] = []
        self.sightings: list[tuple[float, str, str]] = []
        self.checked = 0
        self.sweeps = 0
        self._lock = threading.Lock()
        self._clients = threading.local()
        self._opened: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checker", daemon=True)

    def start(self) -> "ServabilityChecker":
        self._thread.start()
        return self

    def _client(self):
        from tests.support.registry import RegistryClient

        client = getattr(self._clients, "client", None)
        if client is None:
            client = self._clients.client = RegistryClient(self.secondary.url)
            with self._lock:
                self._opened.append(client)
        return client

    def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="checker") as pool:
                while not self._stop.is_set():
                    try:
                        repositories = self.repositories or self._client().catalog()
                        tags = pool.map(lambda repository: self._client().tags(repository), repositories)
                        listed = [(repository, tag) for repository, names in zip(repositories, tags) for tag in names]
                        list(pool.map(lambda item: self._check(*item), listed))
                        self.sweeps += 1
                    except (RegistryError, requests.RequestException) as exc:
                        if not self._stop.is_set():
                            self.failures.append(f"listing failed: {exc}")
                    self._stop.wait(0.02)
        finally:
            for client in self._opened:
                client.close()

    def _check(self, repository: str, tag: str) -> None:
        client = self._client()
        problems = client.servable_problems(repository, tag)
        with self._lock:
            self.checked += 1
        if problems and self._deleted_whole(client, repository, tag, problems):
            return
        if problems:
            with self._lock:
                self.sightings.append((time.monotonic(), repository, tag))
                self.failures.append(f"{repository}:{tag}: {problems}")

    @staticmethod
    def _deleted_whole(client, repository: str, tag: str, problems: list[str]) -> bool:
        """The tag was deleted (``watch --delete``) between the listing and the pull: the registry
        answers "tag unknown" (not "revision unknown") and no longer lists it. A tag that is
        still listed, or whose revision is what is missing, stays a failure."""
        if len(problems) != 1 or "HTTP 404" not in problems[0] or f'"Tag":"{tag}"' not in problems[0]:
            return False
        return tag not in client.tags(repository)

    def unservable(self) -> set[tuple[str, str]]:
        """Every (repository, tag) seen listed and not servable."""
        return {(repository, tag) for _, repository, tag in self.sightings}

    def window(self, repository: str, tag: str) -> float:
        """Seconds from the first to the last sighting of ``repository:tag`` unservable (0 when never)."""
        times = [when for when, r, t in self.sightings if (r, t) == (repository, tag)]
        return max(times) - min(times) if times else 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


# --- a site: primary, agent, read-only secondary, checker -------------------------------------


def notifications_to(agent: Agent | None, token: str = TOKEN) -> Notifications | None:
    """The primary's notifications block for ``agent`` (None: no notifications)."""
    if agent is None:
        return None
    return Notifications(url=agent.url("/events"), token=token, timeout="2s", threshold=3, backoff="500ms")


@dataclass
class RegistrySite:
    """What a sidecar test runs: a primary registry, agents, a read-only secondary and its checker.
    Subclasses say where the registries keep their storage; :meth:`close` stops everything started."""

    tmp: Path
    images: ImageFactory
    started: list = field(default_factory=list)
    primary: Registry | None = None
    secondary: Registry | None = None
    checker: ServabilityChecker | None = None
    agents: list[Agent] = field(default_factory=list)

    def watch_secondary(self, secondary: Registry, **checker) -> Registry:
        """Start ``secondary`` and a checker that keeps pulling what it lists (``checker``: its options)."""
        self.secondary = secondary
        self.started.append(secondary)
        secondary.start()
        self.checker = ServabilityChecker(secondary, **checker).start()
        return secondary

    def push(self, image: Image, repository: str, tag: str) -> str:
        return self.images.push(image, self.primary.url, repository, tag)

    def push_concurrently(self, image: Image, repository: str, tag: str) -> str:
        """A push that runs alongside others; retried when the primary itself fails under the race.

        Registry 2.8's filesystem driver rewrites a link in place, so concurrent
        pushes of a shared layer to one repository can make the primary answer
        500 to a blob check. That is the primary's race, not the agent's; a push
        is idempotent, so it is simply repeated.
        """
        for attempt in range(3):
            try:
                return self.push(image, repository, tag)
            except ImageToolError as exc:
                if "500 (Internal Server Error)" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def secondary_digest(self, repository: str, tag: str) -> str | None:
        try:
            return self.secondary.manifest_digest(repository, tag)
        except RegistryError:
            return None

    def wait_served(self, expected: dict[tuple[str, str], str], timeout: float = ARRIVAL_TIMEOUT) -> None:
        """Until the secondary serves every (repository, tag) with the expected digest."""
        def missing() -> list:
            return [key for key, digest in expected.items() if self.secondary_digest(*key) != digest]

        try:
            poll(lambda: not missing(), timeout=timeout, what="the secondary to serve every pushed tag")
        except AssertionError:
            logs = "\n".join(agent.log_tail() for agent in self.agents)
            raise AssertionError(f"not served: {missing()}\n--- agent log\n{logs}") from None

    def finish_checks(self) -> None:
        """Stop the checker and assert that it never saw a listed tag the secondary could not serve."""
        assert self.checker is not None
        sweeps = self.checker.sweeps
        poll(lambda: self.checker.sweeps >= sweeps + 2 or not self.checker._thread.is_alive(),
             what="the checker to go over the final state once more")
        self.checker.stop()
        assert self.checker.failures == [], "\n".join(self.checker.failures[:20])
        assert self.checker.checked > 0, "the checker never saw a tag"

    def close(self) -> None:
        if self.checker is not None:
            self.checker.stop()
        for agent in self.agents:
            if agent.process is not None and agent.process.poll() is None:
                agent.process.kill()
                agent.process.wait()
        for registry in reversed(self.started):
            registry.stop()


