"""A real distribution registry (``docker-registry serve``) on a loopback port, for tests.

    with Registry.filesystem(tmp_path / "primary") as primary:
        images.push(image, primary.url, "group/app", "v1")   # tests/support/images.py
        primary.tags("group/app")        # assertions through the HTTP API

    with Registry.filesystem(root, read_only=True) as secondary:
        assert secondary.servable_problems("group/app", "v1") == []

Storage is a filesystem ``rootdirectory`` (the directory that holds
``docker/``) or an S3 bucket (:class:`S3Storage`). The registry runs without
auth, without a blob-descriptor cache (every request reads storage, which is
what a test of the storage layout wants), with upload purging off, and logs to
``<workdir>/registry.log``. Ready means this process logged "listening on
127.0.0.1:PORT" and ``GET /v2/`` answers (a ping alone could reach another
process holding the port); stop is SIGTERM and waiting for the process to exit.

:class:`RegistryClient` is the read side of the HTTP API (catalog, tags,
manifests, blob HEADs) for assertions; a :class:`Registry` carries one as
``.api`` and forwards the common calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.components import require_tool

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_START_ATTEMPTS = 3


class RegistryError(RuntimeError):
    """The registry did not start, or answered something a test did not expect."""


@dataclass(frozen=True)
class S3Storage:
    """Where an S3-backed registry keeps its objects (e.g. on Ceph RGW)."""

    accesskey: str
    secretkey: str
    regionendpoint: str
    bucket: str
    rootdirectory: str = "/"
    region: str = "us-east-1"

    def config(self) -> dict:
        return {
            "accesskey": self.accesskey,
            "secretkey": self.secretkey,
            "region": self.region,
            "regionendpoint": self.regionendpoint,
            "bucket": self.bucket,
            "rootdirectory": self.rootdirectory,
            "secure": self.regionendpoint.startswith("https:"),
            "v4auth": True,
        }


@dataclass(frozen=True)
class Notifications:
    """A notifications endpoint: the registry POSTs events to ``url`` with a bearer token."""

    url: str
    token: str
    name: str = "syncagent"
    timeout: str = "2s"
    threshold: int = 5
    backoff: str = "1s"

    def config(self) -> dict:
        return {
            "events": {"includereferences": True},
            "endpoints": [
                {
                    "name": self.name,
                    "url": self.url,
                    "headers": {"Authorization": [f"Bearer {self.token}"]},
                    "timeout": self.timeout,
                    "threshold": self.threshold,
                    "backoff": self.backoff,
                }
            ],
        }


def free_port() -> int:
    """A loopback port nobody listens on right now (the registry may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def registry_config(
    port: int,
    *,
    root: Path | None = None,
    s3: S3Storage | None = None,
    read_only: bool = False,
    delete: bool = False,
    notifications: Notifications | None = None,
) -> dict:
    """The registry's configuration as data (written as JSON, which its YAML parser reads)."""
    if (root is None) == (s3 is None):
        raise ValueError("give exactly one of root (filesystem) or s3")
    storage: dict = {"filesystem": {"rootdirectory": str(root)}} if root is not None else {"s3": s3.config()}
    storage["maintenance"] = {"uploadpurging": {"enabled": False}, "readonly": {"enabled": read_only}}
    storage["delete"] = {"enabled": delete}
    if s3 is not None:
        storage["redirect"] = {"disable": True}
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},  # info: readiness reads "listening on"
        "storage": storage,
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if notifications is not None:
        config["notifications"] = notifications.config()
    return config


class RegistryClient:
    """Read (and, where the registry allows, delete) through the distribution HTTP API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.base = f"http://{url}/v2"
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def _get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(self.base + path, timeout=self.timeout, **kwargs)

    def ping(self) -> bool:
        try:
            return self._get("/").status_code == 200
        except requests.RequestException:
            return False

    def catalog(self) -> list[str]:
        """Every repository name the registry lists, across pages."""
        names: list[str] = []
        response = self._get("/_catalog", params={"n": 1000})
        while True:
            _expect(response, 200)
            names.extend(response.json().get("repositories") or [])
            link = response.links.get("next")
            if not link:
                return names
            response = self.session.get(requests.compat.urljoin(self.base, link["url"]), timeout=self.timeout)

    def tags(self, repo: str) -> list[str]:
        """The tags the registry lists for ``repo``; [] when it has none or does not exist."""
        response = self._get(f"/{repo}/tags/list", params={"n": 10000})
        if response.status_code == 404:
            return []
        _expect(response, 200)
        return sorted(response.json().get("tags") or [])

    def manifest(self, repo: str, ref: str) -> tuple[str, bytes, str]:
        """(media type, body, sha256 digest of the body) of a manifest by tag or digest.

        Raises RegistryError if it is not served, or if the registry's
        Docker-Content-Digest header disagrees with the body.
        """
        response = self._get(f"/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        _expect(response, 200, f"manifest {_reference(repo, ref)}")
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        header = response.headers.get("Docker-Content-Digest")
        if header and header != digest:
            raise RegistryError(f"manifest {_reference(repo, ref)}: Docker-Content-Digest {header} but the body hashes to {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return media_type, body, digest

    def manifest_digest(self, repo: str, ref: str) -> str:
        return self.manifest(repo, ref)[2]

    def manifest_status(self, repo: str, ref: str) -> int:
        response = self.session.head(
            f"{self.base}/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}, timeout=self.timeout
        )
        return response.status_code

    def blob_status(self, repo: str, digest: str) -> int:
        """The status of ``HEAD /v2/<repo>/blobs/<digest>`` (200 when the repository serves it)."""
        return self.session.head(f"{self.base}/{repo}/blobs/{digest}", timeout=self.timeout).status_code

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (needs a registry started with delete=True); its tags go with it."""
        response = self.session.delete(f"{self.base}/{repo}/manifests/{digest}", timeout=self.timeout)
        _expect(response, 202, f"delete {repo}@{digest}")

    def servable_problems(self, repo: str, ref: str) -> list[str]:
        """What a client pulling ``repo:ref`` (or ``repo@digest``) would fail on; [] if nothing.

        Fetches the manifest, then recursively every child manifest of an index
        by digest, and HEADs the config and every non-foreign layer.
        """
        problems: list[str] = []
        self._check_manifest(repo, ref, None, problems, depth=0)
        return problems

    def _check_manifest(self, repo: str, ref: str, expected: str | None, problems: list[str], depth: int) -> None:
        where = _reference(repo, ref)
        try:
            _, body, digest = self.manifest(repo, ref)
        except RegistryError as exc:
            problems.append(str(exc))
            return
        except requests.RequestException as exc:
            problems.append(f"manifest {where}: {exc}")
            return
        if expected is not None and digest != expected:
            problems.append(f"manifest {where}: served with digest {digest}")
            return
        try:
            document = json.loads(body)
        except ValueError as exc:
            problems.append(f"manifest {where}: not JSON: {exc}")
            return
        if "manifests" in document:
            if depth > 4:
                problems.append(f"manifest {where}: indexes nested too deep")
                return
            for child in document["manifests"]:
                self._check_manifest(repo, child["digest"], child["digest"], problems, depth + 1)
            return
        descriptors = [document["config"]] if "config" in document else []
        descriptors += [layer for layer in document.get("layers", []) if not layer.get("urls")]
        descriptors += [{"digest": layer["blobSum"]} for layer in document.get("fsLayers", [])]
        for descriptor in descriptors:
            try:
                status = self.blob_status(repo, descriptor["digest"])
            except requests.RequestException as exc:
                problems.append(f"manifest {where}: blob {descriptor['digest']}: {exc}")
                continue
            if status != 200:
                problems.append(f"manifest {where}: HEAD blob {descriptor['digest']} answered {status}")


def _reference(repo: str, ref: str) -> str:
    return f"{repo}@{ref}" if ":" in ref else f"{repo}:{ref}"


def _expect(response: requests.Response, status: int, what: str | None = None) -> None:
    if response.status_code != status:
        what = what or f"{response.request.method} {response.url}"
        raise RegistryError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")


class Registry:
    """A running ``docker-registry serve`` on 127.0.0.1; a context manager that stops it.

    ``url`` is ``127.0.0.1:PORT`` (what skopeo's ``docker://`` references take);
    ``root`` is the filesystem rootdirectory, or None for S3 storage.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike | None = None,
        s3: S3Storage | None = None,
        read_only: bool = False,
        delete: bool = False,
        notifications: Notifications | None = None,
        workdir: str | os.PathLike | None = None,
        port: int | None = None,
    ) -> None:
        self.binary = require_tool("docker-registry")
        self.root = Path(root).absolute() if root is not None else None
        self.s3 = s3
        self.read_only = read_only
        self.delete = delete
        self.notifications = notifications
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="registry-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self._fixed_port = port
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log_offset = 0
        self.api: RegistryClient | None = None

    @classmethod
    def filesystem(cls, root: str | os.PathLike, **kwargs) -> "Registry":
        return cls(root=root, **kwargs).start()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RegistryError("the registry is not running")
        return f"127.0.0.1:{self.port}"

    def config(self, port: int) -> dict:
        """The registry's configuration for ``port`` (subclasses add to it)."""
        return registry_config(
            port, root=self.root, s3=self.s3, read_only=self.read_only, delete=self.delete,
            notifications=self.notifications,
        )

    def _client(self) -> RegistryClient:
        return RegistryClient(self.url)

    def start(self) -> "Registry":
        if self.process is not None:
            raise RegistryError("already started")
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)  # the s3 driver fails to start with it set (FIELD-NOTES)
        last_error = ""
        for _ in range(1 if self._fixed_port else _START_ATTEMPTS):
            port = self._fixed_port or free_port()
            self.config_path.write_text(json.dumps(self.config(port), indent=2))
            with open(self.log_path, "ab") as log:
                log.write(f"--- starting on port {port}\n".encode())
                log.flush()
                self._log_offset = log.tell()
                self.process = subprocess.Popen(
                    [self.binary, "serve", str(self.config_path)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,
                )
            self.port = port
            self.api = self._client()
            try:
                self._wait_ready()
                return self
            except RegistryError as exc:
                last_error = str(exc)
                self.stop()
                if "address already in use" not in last_error:
                    break
        raise RegistryError(last_error)

    def _listening(self) -> bool:
        """Whether this process logged that it holds the port (another one might answer on it)."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return f"listening on {self.url}".encode() in log.read()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RegistryError(
                    f"docker-registry exited with status {self.process.returncode} before answering; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self._listening() and self.api.ping():
                return
            time.sleep(0.05)
        raise RegistryError(
            f"docker-registry did not answer GET /v2/ on {self.url} within {READY_TIMEOUT:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the current (or last) process logged."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = text[max(text.rfind("--- starting on port"), 0):]
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then wait for the process to exit (SIGKILL after STOP_TIMEOUT)."""
        if self.api is not None:
            self.api.close()
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not self._fixed_port:
            self.port = None

    def __enter__(self) -> "Registry":
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # The read side of the API, for assertions.
    def catalog(self) -> list[str]:
        return self.api.catalog()

    def tags(self, repo: str) -> list[str]:
        return self.api.tags(repo)

    def manifest_digest(self, repo: str, ref: str) -> str:
        return self.api.manifest_digest(repo, ref)

    def servable_problems(self, repo: str, ref: str) -> list[str]:
        return self.api.servable_problems(repo, ref)
