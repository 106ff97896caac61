"""The sidecar (``syncagent watch``): event sources feeding a journaled work queue, each repository
synced by the core engine; health, metrics and the notification listener.

    service.py        WatchService: wires everything together
    config.py         flags, TOML and environment as one table
    listener.py       POST /events, /healthz, /livez, /metrics;  auth.py: who may notify
    notifications.py  registry events -> changes;  fsevents.py: filesystem events -> changes
    workqueue.py      one item per repository, coalesced;  journal.py: durable pending work (SQLite)
    metrics.py        Prometheus metrics;  logformat.py: text or JSON log lines
"""

from importlib import import_module

_EXPORTS = {"ConfigError": ".config", "WatchConfig": ".config", "load_config": ".config", "WatchService": ".service"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # imported on first use: the sync command starts without the sidecar's libraries
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
