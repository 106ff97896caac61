"""Storage backends: stat, read, atomic put, delete and list over opaque keys.

This package knows keys and bytes, nothing of container registries, and never
imports ``syncagent``. See :mod:`backends.base` for the protocol and
:mod:`backends.errors` for the exception tree.
"""

from .base import (
    Backend,
    BaseBackend,
    BeforeCommit,
    Capabilities,
    Entry,
    IncompleteUpload,
    Leftovers,
    ObjectInfo,
    ServerCopy,
    StagedObject,
    StagedPuts,
    check_key,
    check_prefix,
    innermost,
    leftovers_of,
    server_copy_of,
    staged_puts_of,
)
from .errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    CopyUnverifiable,
    InvalidKey,
    NotFound,
    PermissionDenied,
    SymlinkRefused,
    TransientError,
)
from .opening import ENTRY_POINT_GROUP, backend_class, open_backend, open_for_run

__all__ = [
    "Backend",
    "BaseBackend",
    "BeforeCommit",
    "Capabilities",
    "Entry",
    "IncompleteUpload",
    "Leftovers",
    "ObjectInfo",
    "leftovers_of",
    "CopyUnverifiable",
    "ServerCopy",
    "innermost",
    "server_copy_of",
    "StagedObject",
    "StagedPuts",
    "staged_puts_of",
    "check_key",
    "check_prefix",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "InvalidKey",
    "NotFound",
    "PermissionDenied",
    "SymlinkRefused",
    "TransientError",
    "ENTRY_POINT_GROUP",
    "backend_class",
    "open_backend",
    "open_for_run",
]
