"""Pull tokens the checker mints itself for a registry with token authentication (see the package docstring)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from pathlib import Path


from .errors import DEFAULT_TTL, TokenConfigurationError


def libtrust_key_id(public_key) -> str:
    """The key id distribution (via docker/libtrust) derives from a public key.

    SHA-256 of the DER-encoded SubjectPublicKeyInfo, first 30 bytes (240 bits),
    base32 without padding (48 characters), as 12 groups of 4 joined by ``:``.
    """
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenMinter:
    """Mints distribution-style registry bearer tokens (JWT) granting ``pull`` on one repository.

    ``key_file``: PEM private key, RSA (signs RS256) or EC P-256 (ES256).
    ``cert_file``: PEM certificate of that key, as listed in the registry's
    ``rootcertbundle``; the key id is computed from its public key, and it is
    the ``x5c`` header when ``include_x5c``. Without a certificate the key id
    is computed from the private key's public half.
    """

    def __init__(
        self,
        issuer: str,
        service: str,
        key_file: str | Path,
        cert_file: str | Path | None = None,
        ttl: int = DEFAULT_TTL,
        *,
        subject: str = "syncagent",
        include_x5c: bool = False,
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if not issuer or not service:
            raise TokenConfigurationError("a token needs both an issuer and a service")
        if ttl <= 0:
            raise TokenConfigurationError("the token lifetime must be positive")
        self.issuer = issuer
        self.service = service
        self.subject = subject
        self.ttl = int(ttl)
        self.key_file = str(key_file)
        self.cert_file = str(cert_file) if cert_file is not None else None
        try:
            key_pem = Path(key_file).read_bytes()
        except OSError as exc:
            raise TokenConfigurationError(f"cannot read the token key {key_file}: {exc.strerror or exc}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            # The message of cryptography's errors never includes key material.
            raise TokenConfigurationError(f"{key_file} is not an unencrypted PEM private key: {exc}") from None
        if isinstance(key, rsa.RSAPrivateKey):
            self.algorithm = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise TokenConfigurationError(f"{key_file}: EC key on {key.curve.name}; ES256 needs P-256")
            self.algorithm = "ES256"
        else:
            raise TokenConfigurationError(f"{key_file}: only RSA and EC P-256 keys can sign registry tokens")
        self._key = key
        public = key.public_key()
        self._x5c: list[str] | None = None
        if cert_file is not None:
            try:
                cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
            except OSError as exc:
                raise TokenConfigurationError(f"cannot read the token certificate {cert_file}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise TokenConfigurationError(f"{cert_file} is not a PEM certificate: {exc}") from None
            spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            if cert.public_key().public_bytes(*spki) != public.public_bytes(*spki):
                raise TokenConfigurationError(f"the certificate {cert_file} is not for the key {key_file}")
            self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        if include_x5c and self._x5c is None:
            raise TokenConfigurationError("x5c needs the certificate (cert_file)")
        self.include_x5c = include_x5c
        self.key_id = libtrust_key_id(public)

    def __repr__(self) -> str:  # never the key
        return f"TokenMinter(issuer={self.issuer!r}, service={self.service!r}, kid={self.key_id!r}, alg={self.algorithm})"

    def claims(self, repository: str, *, now: float | None = None) -> dict:
        now = int(time.time() if now is None else now)
        return {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.service,
            "exp": now + self.ttl,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [{"type": "repository", "name": repository, "actions": ["pull"]}],
        }

    def headers(self) -> dict:
        headers = {"kid": self.key_id, "typ": "JWT"}
        if self.include_x5c:
            headers["x5c"] = list(self._x5c)
        return headers

    def token(self, repository: str, *, now: float | None = None) -> str:
        """A signed pull token for ``repository``, valid for ``ttl`` seconds from ``now``."""
        import jwt

        return jwt.encode(self.claims(repository, now=now), self._key, algorithm=self.algorithm, headers=self.headers())
