"""HTTPS registries: a private CA from the config's `ca_file`; an unverifiable certificate fails
at once as a network error instead of being retried."""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import images as im
from tests.support.faultproxy import ProxyConfig
from tests.support.images import push_image
from tests.support.servers import RunningServer

from .conftest import FAST_NETWORK, PullerRunner, verify_store
from .fakes import ScriptedServer, Seen


def self_signed(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "puller test registry")])
    now = datetime.datetime.now(datetime.UTC)
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


def test_token_realm_on_the_same_host_uses_its_private_ca(upstream: RunningServer, http: httpx.Client, repo: str,
                                                          make_proxy: object, puller: PullerRunner,
                                                          tmp_path: Path) -> None:
    push_image(http, upstream.url, repo, im.simple_image("tls-token"), "v1")
    cert, key = self_signed(tmp_path)
    proxy = make_proxy(ProxyConfig(token_auth=True, public={repo}), tls=(cert, key))  # type: ignore[operator]
    puller.write_config(FAST_NETWORK + f'[hosts."{proxy.hostport}"]\nca_file = "{cert}"\n')
    puller.ok("fetch", f"{proxy.hostport}/{repo}:v1")  # the realm is https://<the same host>/token
    assert proxy.token_requests
    verify_store(puller.store)


def test_token_requests_keep_credentials_on_the_registry_scheme_and_host(puller: PullerRunner,
                                                                        tmp_path: Path) -> None:
    """An HTTPS registry whose realm is plain HTTP gets no password in clear (anonymous tokens are
    fine); a token server's redirect is followed on its own host only."""
    cert, key = self_signed(tmp_path)
    realm = {"path": "http://{host}/token"}

    def script(seen: Seen, _: object) -> tuple[int, dict[str, str], bytes]:
        if seen.path.startswith("/token"):
            if seen.path.startswith("/token/moved"):
                return 307, {"Location": "/token?again=1&" + seen.path.split("?", 1)[1]}, b""
            if seen.path.startswith("/token/away"):
                return 302, {"Location": f"https://localhost:{server.port}/token"}, b""
            return 200, {"Content-Type": "application/json"}, json.dumps({"token": "tok"}).encode()
        if seen.headers.get("Authorization") != "Bearer tok":
            return 401, {"WWW-Authenticate": f'Bearer realm="{realm["path"].format(host=server.hostport)}"'}, b""
        return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}'

    server = ScriptedServer(script, tls=(cert, key))
    try:
        puller.write_config(FAST_NETWORK + f'[hosts."{server.hostport}"]\nca_file = "{cert}"\n')
        ref = f"{server.hostport}/app:v1"
        assert puller.run("fetch", ref).returncode == 3  # anonymous: a token over plain HTTP, then not found
        auth_file = tmp_path / "auth.json"
        auth_file.write_text(json.dumps({"auths": {server.hostport: {"auth": "Z2luYTpwdw=="}}}))  # gina:pw
        env = {"REGISTRY_AUTH_FILE": str(auth_file)}
        server.seen.clear()
        refused = puller.run("fetch", ref, env=env)
        assert refused.returncode == 4 and "refusing to send credentials" in refused.stderr
        assert all(s.tls for s in server.seen)

        realm["path"] = "https://{host}/token/moved"
        assert puller.run("fetch", ref, env=env).returncode == 3
        assert any("again=1" in s.path and s.headers.get("Authorization") == "Basic Z2luYTpwdw==" for s in server.seen)
        realm["path"] = "https://{host}/token/away"
        server.seen.clear()
        away = puller.run("fetch", ref, env=env)
        assert away.returncode == 4 and "redirect" in away.stderr
        assert not [s for s in server.seen if s.path == "/token"]
    finally:
        server.stop()
