"""``syncagent verify`` against a store that fails to answer: a read that failed is not damage.

Found by the RGW outage tests: the invariant sampler (verify_backend) reported
``broken-revision ... cannot read the manifest: ... Could not connect to the
endpoint URL`` while radosgw was down: verify.py folded every ClosureError,
``read-failed`` included, into ``broken-tag`` / ``broken-revision``, so a
network blip was reported as a broken invariant. Now it is ``read-failed``.
"""

from __future__ import annotations

import pytest

from backends import TransientError
from backends.memory import MemoryBackend
from syncagent.sync.layout import BLOBS_PREFIX
from syncagent.testing.synthetic import TreeShape, write_tree
from syncagent.check.verify import verify_backend

pytestmark = pytest.mark.faults


class UnansweredBlobs(MemoryBackend):
    """A store whose blob reads time out (listings, stats and link reads still work)."""

    def open_read(self, key):
        if key.startswith(BLOBS_PREFIX):
            raise TransientError(f"{key}: Read timeout on endpoint URL", key=key)
        return super().open_read(key)


def test_a_manifest_that_cannot_be_read_is_reported_as_read_failed_not_as_broken():
    store = UnansweredBlobs()
    write_tree(store, TreeShape(repositories=1, tags_per_repository=1))
    report = verify_backend(store, hygiene=False)
    assert report.problems, "the reads failed: something must be reported"
    assert {p.kind for p in report.problems} == {"read-failed"}, [p.describe() for p in report.problems]
