"""A real ``docker-registry`` with ``auth: token``, and the keys and certificates for it.

tests/support/registry.py's :class:`Registry` writes its configuration from
fixed options (no auth); this module adds a subclass that inserts an ``auth:
token`` block (realm, service, issuer, rootcertbundle) and treats the 401 that
``GET /v2/`` then answers as "ready".

    signer = make_signer(tmp_path / "keys", "signer")           # RSA key + self-signed certificate
    with TokenRegistry(root=storage, token=TokenAuth(service="registry.test", issuer="syncagent-test",
                       rootcertbundle=signer.cert), read_only=True) as registry:
        minter = TokenMinter("syncagent-test", "registry.test", signer.key, signer.cert)

No token server runs: the realm points nowhere, since the clients under test
mint their own tokens with the registry's signing key.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.registry import Registry, RegistryClient


@dataclass(frozen=True)
class KeyPair:
    key: Path
    cert: Path


def make_signer(directory: Path, name: str, *, kind: str = "rsa", common_name: str | None = None) -> KeyPair:
    """A private key (RSA 2048 or EC P-256) and a self-signed certificate for it, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"{name} token signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return KeyPair(key_path, cert_path)


@dataclass(frozen=True)
class TokenAuth:
    """The registry's ``auth: token`` block."""

    service: str
    issuer: str
    rootcertbundle: Path
    realm: str = "http://127.0.0.1:9/token"  # no token server: clients mint their own tokens

    def config(self) -> dict:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.rootcertbundle),
            }
        }


class _AuthClient(RegistryClient):
    """Ping only: with token auth, ``GET /v2/`` answers 401 with a Bearer challenge."""

    def ping(self) -> bool:
        try:
            response = self._get("/")
        except requests.RequestException:
            return False
        return response.status_code == 401 and response.headers.get("WWW-Authenticate", "").startswith("Bearer ")


class TokenRegistry(Registry):
    """A :class:`Registry` (filesystem storage) that requires distribution bearer tokens."""

    def __init__(self, *, token: TokenAuth, **kwargs) -> None:
        super().__init__(**kwargs)
        self.token = token

    def config(self, port: int) -> dict:
        config = super().config(port)
        config["auth"] = self.token.config()
        return config

    def _client(self) -> RegistryClient:
        return _AuthClient(self.url)
