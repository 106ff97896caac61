"""Walking what a registry serves the way a client pulls: manifests with every Accept type, index children, blobs."""

from __future__ import annotations

import hashlib
from urllib.parse import quote


from ...sync.layout import Digest
from ...sync.manifest import MAX_MANIFEST_BYTES, MalformedManifest, parse_manifest

from .client import RegistryClient, _detail, _reference
from .errors import MANIFEST_ACCEPT, MAX_INDEX_DEPTH, RegistryCheckError, RegistryUnreachable, RegistryAuthError


class RegistryChecker(RegistryClient):
    """Asks a registry whether it would serve tags and manifests, whole.

        checker = RegistryChecker("http://127.0.0.1:5000", minter)
        checker.check_tag("group/app", "v1")          # [] when a client could pull it
        checker.check_digest("group/app", "sha256:...")
        checker.check_repository_tags("group/app")    # {tag: reasons} for every listed tag

    Safe to share between threads (one HTTP session per thread).
    """

    def check_tag(self, repository: str, tag: str, expected_digest: str | None = None) -> list[str]:
        """Why the registry would not serve ``repository:tag`` (whole); [] when it would.

        ``expected_digest``: the digest the tag should point to (e.g. what was
        just published); a different one is reported.
        """
        return self._check(repository, tag, expected_digest)

    def check_digest(self, repository: str, digest: str) -> list[str]:
        """Why the registry would not serve ``repository@digest`` (whole); [] when it would."""
        return self._check(repository, digest, digest)

    def _check(self, repository: str, ref: str, expected: str | None) -> list[str]:
        problems: list[str] = []
        try:
            self._check_manifest(repository, ref, expected, problems, depth=0)
        except (RegistryUnreachable, RegistryAuthError) as exc:
            problems.append(f"{_reference(repository, ref)}: {exc}")
        return problems

    def check_repository_tags(self, repository: str) -> dict[str, list[str]]:
        """Every tag the registry lists for ``repository`` -> why it would not be served ([] if it would).

        If the tag list itself cannot be read, the result is ``{"": [reason]}``.
        """
        try:
            tags = self.list_tags(repository)
        except RegistryCheckError as exc:
            return {"": [f"{repository}: {exc}"]}
        return {tag: self.check_tag(repository, tag) for tag in tags}

    def _check_manifest(self, repository: str, ref: str, expected: str | None, problems: list[str], depth: int) -> None:
        where = _reference(repository, ref)
        response = self._request(
            "GET", f"/{repository}/manifests/{quote(ref, safe=':')}", repository, headers={"Accept": MANIFEST_ACCEPT}
        )
        if response.status != 200:
            problems.append(f"manifest {where}: HTTP {response.status}{_detail(response)}")
            return
        body = response.body
        if len(body) > MAX_MANIFEST_BYTES:
            problems.append(f"manifest {where}: larger than {MAX_MANIFEST_BYTES} bytes")
            return
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        header = response.headers.get("Docker-Content-Digest")
        if header is None:
            problems.append(f"manifest {where}: the registry sent no Docker-Content-Digest")
        elif header != actual:
            problems.append(f"manifest {where}: Docker-Content-Digest is {header} but the body hashes to {actual}")
            return
        if expected is not None and actual != expected:
            problems.append(f"manifest {where}: served {actual}, expected {expected}")
            return
        try:
            manifest = parse_manifest(body)
        except MalformedManifest as exc:
            problems.append(f"manifest {where} ({actual}): cannot be parsed: {exc}")
            return
        for child in manifest.children:
            if depth >= MAX_INDEX_DEPTH:
                problems.append(f"manifest {where}: indexes nested deeper than {MAX_INDEX_DEPTH}")
                return
            self._check_manifest(repository, str(child.digest), str(child.digest), problems, depth + 1)
        for blob in manifest.blobs:
            if blob.optional:
                continue
            self._check_blob(repository, where, blob.digest, problems)

    def _check_blob(self, repository: str, where: str, digest: Digest, problems: list[str]) -> None:
        response = self._request("HEAD", f"/{repository}/blobs/{digest}", repository)
        if response.status == 200:
            header = response.headers.get("Docker-Content-Digest")
            if header is not None and header != str(digest):
                problems.append(f"manifest {where}: HEAD blob {digest} answered with Docker-Content-Digest {header}")
            return
        if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
            return  # storage redirect: the registry found the blob (it stats before redirecting)
        problems.append(f"manifest {where}: blob {digest}: HTTP {response.status}{_detail(response, head=True)}")
