"""Who may post events: a static shared token, or a JWT (HS256 secret, or RS256/ES256 public key).

The ``Authorization`` header must be ``Bearer <credential>``. A credential is
first compared, in constant time, with every configured static token; if it is
none of them and JWT verification is configured, it is verified as a JWT:
signature with the key its algorithm calls for (HS256 only with the shared
secret; RS256 only with an RSA public key, ES256 only with an EC key; ``none``
and every other algorithm refused), and ``exp``, ``iss`` and ``aud`` required
and checked (``nbf`` too when present), with a small leeway.

Each refusal has a reason, used as a metrics label and in logs (never the
credential itself): ``missing``, ``malformed-header``, ``wrong-token``,
``malformed-token``, ``bad-signature``, ``expired``, ``bad-claims``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

MAX_CREDENTIAL_LENGTH = 16 * 1024


@dataclass(frozen=True)
class AuthSettings:
    """What the endpoint accepts. Secrets are kept out of ``repr``."""

    tokens: tuple[str, ...] = field(default=(), repr=False)
    jwt_secret: bytes | None = field(default=None, repr=False)
    jwt_public_key: bytes | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway: float = 30.0

    @property
    def jwt_enabled(self) -> bool:
        return self.jwt_secret is not None or self.jwt_public_key is not None

    @property
    def configured(self) -> bool:
        return bool(self.tokens) or self.jwt_enabled

    def describe(self) -> str:
        """A loggable summary: what kinds of credential are accepted, never their values."""
        kinds = []
        if self.tokens:
            kinds.append(f"{len(self.tokens)} static token(s)")
        if self.jwt_secret is not None:
            kinds.append("JWT HS256")
        if self.jwt_public_key is not None:
            kinds.append("JWT RS256/ES256")
        if self.jwt_enabled:
            kinds.append(f"iss={self.jwt_issuer!r} aud={self.jwt_audience!r}")
        return ", ".join(kinds) or "nothing (every request is refused)"


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    reason: str = "ok"
    subject: str | None = None


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        if settings.jwt_enabled and not (settings.jwt_issuer and settings.jwt_audience):
            raise ValueError("JWT verification needs both an issuer and an audience to check")
        self.settings = settings
        self._tokens = tuple(token.encode() for token in settings.tokens if token)
        self._public_key = None
        self._public_algorithm = None
        if settings.jwt_public_key is not None:
            key = load_pem_public_key(settings.jwt_public_key)
            if isinstance(key, rsa.RSAPublicKey):
                self._public_algorithm = "RS256"
            elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
                self._public_algorithm = "ES256"
            else:
                raise ValueError("the JWT public key must be RSA (RS256) or EC P-256 (ES256)")
            self._public_key = key

    def check(self, header: str | None) -> AuthResult:
        if not header:
            return AuthResult(False, "missing")
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or len(credential) > MAX_CREDENTIAL_LENGTH:
            return AuthResult(False, "malformed-header")
        if self._matches_static_token(credential.encode()):
            return AuthResult(True, subject="static-token")
        if not self.settings.jwt_enabled:
            return AuthResult(False, "wrong-token")
        if credential.count(".") != 2:
            return AuthResult(False, "wrong-token")
        return self._check_jwt(credential)

    def _matches_static_token(self, candidate: bytes) -> bool:
        matched = False
        for token in self._tokens:  # no early exit: the time taken does not say which token nearly matched
            matched |= hmac.compare_digest(candidate, token)
        return matched

    def _check_jwt(self, credential: str) -> AuthResult:
        try:
            header = jwt.get_unverified_header(credential)
        except jwt.PyJWTError:
            return AuthResult(False, "malformed-token")
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.settings.jwt_secret is not None:
            key = self.settings.jwt_secret
        elif algorithm is not None and algorithm == self._public_algorithm:
            key = self._public_key
        else:
            return AuthResult(False, "bad-signature")
        try:
            claims = jwt.decode(
                credential,
                key,
                algorithms=[algorithm],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            return AuthResult(False, "expired")
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.InvalidKeyError):
            return AuthResult(False, "bad-signature")
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError,
                jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            return AuthResult(False, "bad-claims")
        except jwt.PyJWTError:
            return AuthResult(False, "malformed-token")
        subject = claims.get("sub")
        return AuthResult(True, subject=subject[:200] if isinstance(subject, str) else "jwt")
