"""The registry check's constants and errors."""

from __future__ import annotations

from ...sync.manifest import ALL_MANIFEST_TYPES

MANIFEST_ACCEPT = ", ".join(ALL_MANIFEST_TYPES)
DEFAULT_TTL = 60
DEFAULT_TIMEOUT = 10.0
MAX_INDEX_DEPTH = 8
TAG_PAGE_SIZE = 1000
_REFRESH_MARGIN = 10  # seconds before expiry at which a cached token is minted anew


class RegistryCheckError(Exception):
    """Base of this module's errors."""


class RegistryUnreachable(RegistryCheckError):
    """The registry could not be reached at all (connection refused, DNS, TLS, timeout)."""


class RegistryAuthError(RegistryCheckError):
    """The registry refused our credentials (or wants some and we have none)."""


class TokenConfigurationError(RegistryCheckError):
    """The token key or certificate cannot be used (unreadable, wrong type, not matching)."""
