"""HTTPS registries: a private CA from the config's `ca_file`; an unverifiable certificate fails
at once as a network error instead of being retried."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import images as im
from tests.support.servers import RunningServer

from .conftest import FAST_NETWORK, PullerRunner, verify_store
from tests.support.images import push_image


def self_signed(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "puller test registry")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_private_ca(upstream: RunningServer, http: httpx.Client, repo: str, make_proxy: object,
                    puller: PullerRunner, tmp_path: Path) -> None:
    push_image(http, upstream.url, repo, im.simple_image("tls"), "v1")
    cert, key = self_signed(tmp_path)
    proxy = make_proxy(tls=(cert, key))  # type: ignore[operator]
    ref = f"{proxy.hostport}/{repo}:v1"
    result = puller.run("fetch", ref)
    assert result.returncode == 6 and "TLS" in result.stderr
    assert not proxy.requests  # refused at the handshake, not retried into the registry
    puller.write_config(FAST_NETWORK + f'[hosts."{proxy.hostport}"]\nca_file = "{cert}"\n')
    puller.ok("fetch", ref)
    verify_store(puller.store)
