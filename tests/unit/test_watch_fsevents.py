"""Which filesystem paths name a repository that needs a pass."""

import pytest

from syncagent.sidecar.fsevents import repository_of

R = "docker/registry/v2/repositories/"


@pytest.mark.parametrize("path, repository", [
    (R + "group/app/_manifests/tags/v1/current/link", "group/app"),
    (R + "group/app/_manifests/tags/v1/current/link.1234.tmp", "group/app"),
    (R + "a/b/c/_manifests/tags/v1", "a/b/c"),
    (R + "app/_manifests/revisions/sha256/" + "a" * 64 + "/link", "app"),
    (R + "app/_manifests/tags", "app"),
    (R + "app/_layers/sha256/" + "a" * 64 + "/link", None),
    (R + "app/_uploads/1234/data", None),
    (R + "app", None),
    ("docker/registry/v2/blobs/sha256/aa/" + "a" * 64 + "/data", None),
    (R + "UPPER/_manifests/tags/v1/current/link", None),
    (R + "../etc/_manifests/tags/v1/current/link", None),
])
def test_repository_of(path, repository):
    assert repository_of(path) == repository
