"""The sidecar's Prometheus metrics, in a private registry (nothing global, several agents per process in tests).

========================================================  =========  ==========================================
name                                                      type       labels / meaning
========================================================  =========  ==========================================
syncagent_events_received_total                           counter    source: notification, fs, reconcile
syncagent_events_ignored_total                            counter    kind: pull, blob, other-action
syncagent_events_rejected_total                           counter    reason: missing, malformed-header,
                                                                     wrong-token, malformed-token,
                                                                     bad-signature, expired, bad-claims,
                                                                     too-large, malformed, too-deep,
                                                                     malformed-event, invalid-name,
                                                                     journal-unavailable, shutting-down,
                                                                     length-required
syncagent_queue_depth                                     gauge      repositories waiting for a pass
syncagent_passes_in_progress                              gauge      repositories being synced now
syncagent_passes_total                                    counter    result: ok, problems, error, cancelled
syncagent_pass_duration_seconds                           histogram  one pass over one repository
syncagent_tags_published_total                            counter    tags made current on the destination
syncagent_history_repaired_total                          counter    history links written after a dead pass
syncagent_blobs_copied_total                              counter
syncagent_bytes_copied_total                              counter
syncagent_errors_total                                    counter    kind: the engine's problem kinds, and
                                                                     internal-error, journal
syncagent_replication_lag_seconds                         histogram  event time -> tag published
syncagent_last_reconcile_timestamp_seconds                gauge      end of the last complete reconcile (epoch)
syncagent_last_reconcile_duration_seconds                 gauge
syncagent_last_reconcile_problems                         gauge      passes with problems in that reconcile
syncagent_blobs_awaiting                                  gauge      blobs awaited from the storage's replication
                                                                     (blobs = external)
syncagent_blob_wait_oldest_seconds                        gauge      age of the oldest wait, counted from the first
                                                                     pass that awaited the blob
syncagent_blob_wait_seconds                               histogram  awaited -> arrived on the destination
syncagent_blobs_copied_after_wait_total                   counter    blobs copied after copy_after
syncagent_tags_held_back                                  gauge      tags of passes in progress not published yet
syncagent_replication_too_wide                            gauge      1 while the destination holds the canary
syncagent_deletes_pending                                 gauge      repositories with a delete notification not
                                                                     carried out yet (watch --delete)
syncagent_delete_lag_seconds                              histogram  delete event -> deletes done on the destination
syncagent_backend_requests_total                          counter    backend: source, destination; operation:
                                                                     stat, read, put, delete, list; outcome:
                                                                     ok, error (every attempt, retries included)
syncagent_tags_unpublished_total                          counter    tags taken back because the primary's garbage
                                                                     collection deleted blobs they need (blobs =
                                                                     external; revisions: ..._revisions_unpublished)
========================================================  =========  ==========================================
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
WAIT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_received = Counter(
            "syncagent_events_received", "Changes accepted into the work queue, by source.", ["source"], registry=r
        )
        self.events_ignored = Counter(
            "syncagent_events_ignored", "Notification events that mean no work (blob, pull, ...).", ["kind"], registry=r
        )
        self.events_rejected = Counter(
            "syncagent_events_rejected", "Requests or events refused, by reason.", ["reason"], registry=r
        )
        self.queue_depth = Gauge("syncagent_queue_depth", "Repositories waiting for a pass.", registry=r)
        self.passes_in_progress = Gauge("syncagent_passes_in_progress", "Repositories being synced now.", registry=r)
        self.passes = Counter("syncagent_passes", "Passes over one repository, by result.", ["result"], registry=r)
        self.pass_duration = Histogram(
            "syncagent_pass_duration_seconds", "Duration of one pass over one repository.", buckets=PASS_BUCKETS, registry=r
        )
        self.tags_published = Counter("syncagent_tags_published", "Tags made current on the destination.", registry=r)
        self.history_repaired = Counter(
            "syncagent_history_repaired", "Tag history links written after a pass that did not finish.", registry=r
        )
        self.blobs_copied = Counter("syncagent_blobs_copied", "Blobs copied to the destination.", registry=r)
        self.bytes_copied = Counter("syncagent_bytes_copied", "Bytes of blob data copied to the destination.", registry=r)
        self.errors = Counter("syncagent_errors", "Problems met, by kind.", ["kind"], registry=r)
        self.replication_lag = Histogram(
            "syncagent_replication_lag_seconds",
            "From the change (the registry's event timestamp, or when a change was seen) to the tag being published.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.last_reconcile = Gauge(
            "syncagent_last_reconcile_timestamp_seconds", "When the last complete reconcile ended (Unix time).", registry=r
        )
        self.last_reconcile_duration = Gauge(
            "syncagent_last_reconcile_duration_seconds", "How long the last complete reconcile took.", registry=r
        )
        self.last_reconcile_problems = Gauge(
            "syncagent_last_reconcile_problems", "Repositories whose pass had problems in the last reconcile.", registry=r
        )

        self.blobs_awaiting = Gauge("syncagent_blobs_awaiting", "Blobs awaited from the storage's replication.", registry=r)
        self.blob_wait_oldest = Gauge(
            "syncagent_blob_wait_oldest_seconds", "Age of the oldest wait for a replicated blob.", registry=r
        )
        self.blob_wait = Histogram(
            "syncagent_blob_wait_seconds", "From a blob being awaited to its arrival on the destination.",
            buckets=WAIT_BUCKETS, registry=r,
        )
        self.blobs_copied_after_wait = Counter(
            "syncagent_blobs_copied_after_wait", "Blobs copied by the agent after copy_after.", registry=r
        )
        self.tags_held_back = Gauge("syncagent_tags_held_back", "Tags of passes in progress not published yet.", registry=r)
        self.replication_too_wide = Gauge(
            "syncagent_replication_too_wide", "1 while the destination holds the canary placed at the source.", registry=r
        )
        self.deletes_pending = Gauge(
            "syncagent_deletes_pending", "Repositories with a delete notification not carried out yet.", registry=r
        )
        self.delete_lag = Histogram(
            "syncagent_delete_lag_seconds", "From a delete event to the deletes done on the destination.",
            buckets=LAG_BUCKETS, registry=r,
        )

        self.backend_requests = Counter(
            "syncagent_backend_requests", "Requests to the backends, every attempt.", ["backend", "operation", "outcome"],
            registry=r,
        )

        self.tags_unpublished = Counter(
            "syncagent_tags_unpublished", "Tags taken back because blobs they need were deleted at the source "
            "(deleted-at-source).", registry=r,
        )
        self.revisions_unpublished = Counter(
            "syncagent_revisions_unpublished", "Revisions taken back because blobs they need were deleted at the source.",
            registry=r,
        )

    def request_observer(self, backend: str):
        """An observer for backends/observed.py counting ``backend``'s requests."""

        def observe(operation: str, seconds: float, error: BaseException | None) -> None:
            self.backend_requests.labels(backend, operation, "ok" if error is None else "error").inc()

        return observe

    def count_engine_event(self, name: str, amount: int) -> None:
        """The engine's ``count`` events that the sidecar exports."""
        if name == "tags_published":
            self.tags_published.inc(amount)
        elif name == "history_repaired":
            self.history_repaired.inc(amount)
        elif name == "blobs_copied":
            self.blobs_copied.inc(amount)
        elif name == "bytes_copied":
            self.bytes_copied.inc(amount)
        elif name == "blobs_copied_after_wait":
            self.blobs_copied_after_wait.inc(amount)
        elif name == "tags_unpublished":
            self.tags_unpublished.inc(amount)
        elif name == "revisions_unpublished":
            self.revisions_unpublished.inc(amount)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
