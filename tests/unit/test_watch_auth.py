"""Who may post events: static tokens in constant time, JWTs (HS256, RS256, ES256) with exp/iss/aud checked."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syncagent.sidecar.auth import Authenticator, AuthSettings

ISSUER, AUDIENCE = "registry-primary", "syncagent"
SECRET = "a-shared-secret-of-at-least-32-bytes"


def claims(**overrides) -> dict:
    base = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "sub": "registry"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def pem(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_static_token():
    auth = Authenticator(AuthSettings(tokens=("s3cret-token", "next-token")))
    assert auth.check(bearer("s3cret-token")).ok
    assert auth.check(bearer("next-token")).ok, "two tokens: rotation without downtime"
    assert auth.check("bearer s3cret-token").ok, "the scheme is case-insensitive"
    assert auth.check(None).reason == "missing"
    assert auth.check("").reason == "missing"
    assert auth.check(bearer("s3cret-tokem")).reason == "wrong-token"
    assert auth.check(bearer("s3cret-token-and-more")).reason == "wrong-token"
    assert auth.check("Basic czNjcmV0LXRva2Vu").reason == "malformed-header"
    assert auth.check("Bearer").reason == "malformed-header"
    assert auth.check("s3cret-token").reason == "malformed-header"


def test_jwt_hs256():
    auth = Authenticator(AuthSettings(jwt_secret=SECRET.encode(), jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    assert auth.check(bearer(jwt.encode(claims(), SECRET, algorithm="HS256"))).ok
    assert auth.check(bearer(jwt.encode(claims(), "another-shared-secret-of-32-bytes-or-more", algorithm="HS256"))).reason == "bad-signature"
    expired = jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256")
    assert auth.check(bearer(expired)).reason == "expired"
    assert auth.check(bearer(jwt.encode(claims(iss="someone-else"), SECRET, algorithm="HS256"))).reason == "bad-claims"
    assert auth.check(bearer(jwt.encode(claims(aud="another-service"), SECRET, algorithm="HS256"))).reason == "bad-claims"
    assert auth.check(bearer(jwt.encode(claims(exp=None), SECRET, algorithm="HS256"))).reason == "bad-claims"
    assert auth.check(bearer(jwt.encode(claims(aud=None), SECRET, algorithm="HS256"))).reason == "bad-claims"
    future = jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256")
    assert auth.check(bearer(future)).reason == "bad-claims"
    assert auth.check(bearer("not.a.jwt")).reason == "malformed-token"
    assert auth.check(bearer("opaque-token")).reason == "wrong-token"


def test_jwt_hs256_tampered_payload_is_refused():
    auth = Authenticator(AuthSettings(jwt_secret=SECRET.encode(), jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    header, payload, signature = token.split(".")
    forged_payload = jwt.encode(claims(sub="attacker"), "x" * 32, algorithm="HS256").split(".")[1]
    assert auth.check(bearer(f"{header}.{forged_payload}.{signature}")).reason == "bad-signature"


def test_alg_none_is_refused():
    auth = Authenticator(AuthSettings(jwt_secret=SECRET.encode(), jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    unsigned = jwt.encode(claims(), None, algorithm="none")
    assert not auth.check(bearer(unsigned)).ok


def test_jwt_rs256(rsa_key):
    auth = Authenticator(AuthSettings(jwt_public_key=pem(rsa_key.public_key()), jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    assert auth.check(bearer(jwt.encode(claims(), rsa_key, algorithm="RS256"))).ok
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert auth.check(bearer(jwt.encode(claims(), other, algorithm="RS256"))).reason == "bad-signature"
    expired = jwt.encode(claims(exp=int(time.time()) - 3600), rsa_key, algorithm="RS256")
    assert auth.check(bearer(expired)).reason == "expired"


def test_public_key_cannot_be_used_as_an_hmac_secret(rsa_key):
    """The algorithm-confusion attack: an HS256 token 'signed' with the public key's PEM."""
    public_pem = pem(rsa_key.public_key())
    auth = Authenticator(AuthSettings(jwt_public_key=public_pem, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    import hashlib
    import hmac
    import base64
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims()).encode())
    signature = b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    assert auth.check(bearer(f"{signing_input}.{signature}")).reason == "bad-signature"


def test_jwt_es256(ec_key):
    auth = Authenticator(AuthSettings(jwt_public_key=pem(ec_key.public_key()), jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    assert auth.check(bearer(jwt.encode(claims(), ec_key, algorithm="ES256"))).ok
    other = ec.generate_private_key(ec.SECP256R1())
    assert auth.check(bearer(jwt.encode(claims(), other, algorithm="ES256"))).reason == "bad-signature"
    rsa_signed = jwt.encode(claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256")
    assert auth.check(bearer(rsa_signed)).reason == "bad-signature", "an EC key accepts ES256 only"


def test_static_token_and_jwt_together(ec_key):
    auth = Authenticator(AuthSettings(tokens=("static",), jwt_public_key=pem(ec_key.public_key()),
                                      jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    assert auth.check(bearer("static")).ok
    assert auth.check(bearer(jwt.encode(claims(), ec_key, algorithm="ES256"))).ok
    assert not auth.check(bearer("other")).ok


def test_jwt_needs_issuer_and_audience():
    with pytest.raises(ValueError):
        Authenticator(AuthSettings(jwt_secret=b"x", jwt_issuer=ISSUER))


def test_secrets_stay_out_of_repr_and_descriptions():
    settings = AuthSettings(tokens=("tok-123456",), jwt_secret=b"sec-654321", jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    assert "tok-123456" not in repr(settings) and "sec-654321" not in repr(settings)
    assert "tok-123456" not in settings.describe() and "sec-654321" not in settings.describe()
