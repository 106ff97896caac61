"""Pullability through the registry API: would the destination registry serve this tag?

The storage checks (verify.py, the engine's read-back) prove the objects are
there; this module asks the registry itself, over HTTP, the way a client pulls:

1. ``GET /v2/<name>/manifests/<tag or digest>`` with an ``Accept`` header that
   lists every manifest type (OCI index, Docker manifest list, OCI manifest,
   Docker schema 2, OCI artifact, schema 1 signed and unsigned);
2. the body must hash to the ``Docker-Content-Digest`` the registry sent (and
   to the digest asked for, or expected for the tag);
3. the body is parsed with :func:`syncagent.manifest.parse_manifest`; for an
   index every child is fetched by digest, recursively; for an image every
   blob (config, layers, ...) is checked with ``HEAD /v2/<name>/blobs/<digest>``
   (optional, i.e. foreign/non-distributable layers are skipped).

Every check returns a list of human-readable reasons, ``[]`` when a client
could pull it. Connection failures become a reason too (and
:meth:`RegistryChecker.ping` raises :class:`RegistryUnreachable` for callers
that want to fail fast).

Registries that use token authentication (``auth: token`` in distribution's
configuration) answer 401 with a ``WWW-Authenticate: Bearer`` challenge. With
a :class:`TokenMinter` -- built from the registry's token issuer, service, and
the private key (plus certificate) whose certificate is in the registry's
``rootcertbundle`` -- the checker mints its own short-lived pull token per
repository and retries; no token server is involved. Distribution 2.8 finds
the verification key through the token's ``x5c`` header (a certificate chain
to ``rootcertbundle``), else ``jwk``, else ``kid`` in libtrust form
(:func:`libtrust_key_id`); the minter sends ``kid`` always and ``x5c`` when
asked (both are accepted by 2.8, see tests/e2e/test_registry_check.py).

Tokens and keys are never logged or put into a reason.

Files: ``errors.py`` (constants, the exception tree), ``tokens.py`` (minting
pull tokens), ``client.py`` (HTTP: sessions, tokens on a 401, size limits),
``walk.py`` (the checks a pull makes), ``wiring.py`` (a checker from options;
checking published or stored tags into a report).
"""

from .client import RegistryClient, normalize_base_url
from .errors import MANIFEST_ACCEPT, RegistryAuthError, RegistryCheckError, RegistryUnreachable, TokenConfigurationError
from .tokens import TokenMinter, libtrust_key_id
from .walk import RegistryChecker
from .wiring import check_backend_tags, check_published_tags, checker_from_options, checker_from_settings

__all__ = [
    "MANIFEST_ACCEPT", "RegistryAuthError", "RegistryCheckError", "RegistryChecker", "RegistryClient", "RegistryUnreachable",
    "TokenConfigurationError", "TokenMinter", "check_backend_tags", "check_published_tags", "checker_from_options",
    "checker_from_settings", "libtrust_key_id", "normalize_base_url",
]
