"""docs/sidecar.md lists every option of `syncagent watch` and every metric it exports; docs/supplement.md
every metric of the supplement mode."""

from pathlib import Path

import pytest

from syncagent.sidecar.config import OPTIONS
from syncagent.sidecar.metrics import Metrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
SUPPLEMENT_METRICS = (
    "blobs_awaiting", "blob_wait_oldest_seconds", "blob_wait_seconds", "blobs_copied_after_wait_total", "tags_held_back",
    "replication_too_wide", "deletes_pending", "delete_lag_seconds", "tags_unpublished_total", "revisions_unpublished_total",
)


def exported_metrics() -> list[str]:
    """The names Prometheus shows (a counter's with ``_total``)."""
    return sorted(family.name + ("_total" if family.type == "counter" else "") for family in Metrics().registry.collect())


@pytest.mark.parametrize("option", [option.name for option in OPTIONS])
def test_the_configuration_reference_lists_every_watch_option(option):
    assert f"| `{option}` |" in (DOCS / "sidecar.md").read_text()


def test_the_metrics_table_lists_every_metric():
    text = (DOCS / "sidecar.md").read_text()
    assert [name for name in exported_metrics() if f"`{name}`" not in text] == []


def test_the_supplement_page_lists_its_metrics():
    text = (DOCS / "supplement.md").read_text()
    assert [name for name in SUPPLEMENT_METRICS if f"`syncagent_{name}`" not in text] == []
    assert {f"syncagent_{name}" for name in SUPPLEMENT_METRICS} <= set(exported_metrics())
