"""Built-in TLS (`http.tls.*`): a CA and certificates made here with `cryptography`; skopeo, podman
and puller push and pull over verified HTTPS (their CA configuration, never --tls-verify=false); a
client without the CA fails in the TLS handshake, not with an HTTP error; with `client_ca` (mutual
TLS) only clients presenting a certificate of that CA get in; unusable TLS files stop
`registry serve` at start with one line."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.registry.test_auth_api import PASSWORDS, auth_config
from tests.support.images import push_image, simple_image, write_oci_layout
from tests.support.servers import REPO_ROOT, RunningServer, free_port

from .clients import Engine, Skopeo, engine_image, oci_layout_contents, sha256_of


# -- a small PKI ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path             # the CA certificate (PEM), what clients trust
    server_cert: Path    # for localhost and 127.0.0.1, issued by the CA
    server_key: Path
    client_cert: Path    # a client certificate issued by the CA (mutual TLS)
    client_key: Path
    stranger_cert: Path  # a client certificate of a CA the server does not trust
    stranger_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, cn: str, server: bool
          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    ca_key, ca = _ca("cargobay test CA")
    server_key, server = _leaf(ca_key, ca, "cargobay test server", server=True)
    client_key, client = _leaf(ca_key, ca, "cargobay test client", server=False)
    other_key, other = _ca("some other CA")
    stranger_key, stranger = _leaf(other_key, other, "stranger", server=False)
    files = {
        "ca.pem": _pem_cert(ca), "server.pem": _pem_cert(server), "server.key": _pem_key(server_key),
        "client.pem": _pem_cert(client), "client.key": _pem_key(client_key),
        "stranger.pem": _pem_cert(stranger), "stranger.key": _pem_key(stranger_key),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
        (out / name).chmod(0o600 if name.endswith(".key") else 0o644)
    return Pki(out / "ca.pem", out / "server.pem", out / "server.key", out / "client.pem", out / "client.key",
               out / "stranger.pem", out / "stranger.key")


def cert_dir(path: Path, pki: Pki, client: bool = False) -> Path:
    """A containers-style certs directory: `*.crt` are CAs, `*.cert` + `*.key` a client certificate."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "ca.crt").write_bytes(pki.ca.read_bytes())
    if client:
        (path / "client.cert").write_bytes(pki.client_cert.read_bytes())
        (path / "client.key").write_bytes(pki.client_key.read_bytes())
    return path


def trusting(pki: Pki, client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


# -- an HTTPS registry ------------------------------------------------------------------------------
def start_tls_cargobay(workdir: Path, pki: Pki, client_ca: Path | None = None,
                       extra: dict[str, object] | None = None) -> RunningServer:
    """`registry serve` with http.tls set, on a free loopback port; ready once /v2/ answers over
    verified HTTPS (tests.support.servers waits over plain HTTP, which this server does not speak).
    `extra`: further top-level config sections (e.g. `proxy`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tls = {"certificate": str(pki.server_cert), "key": str(pki.server_key)}
    if client_ca:
        tls["client_ca"] = str(client_ca)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({"http": {"tls": tls}, "log": {"level": "info"},
                                      "storage": {"filesystem": {"root": str(workdir / "data")}}, **(extra or {})}))
    log_path = workdir / f"cargobay-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "registry", "serve", "--config", str(config),
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    server = RunningServer(f"https://127.0.0.1:{port}", "127.0.0.1", port, process, log_path, workdir / "data", env)
    context = trusting(pki, client=client_ca is not None)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/v2/", verify=context, timeout=2).status_code in (200, 401):  # 401: auth on
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server did not become ready:\n{server.log()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def https_registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RunningServer]:
    server = start_tls_cargobay(tmp_path_factory.mktemp("tls"), pki)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RunningServer]:
    server = start_tls_cargobay(tmp_path_factory.mktemp("mtls"), pki, client_ca=pki.ca)
    yield server
    server.stop()


def raw_https_get(server: RunningServer, context: ssl.SSLContext) -> bytes:
    """GET /v2/ over TLS with `context`; what the server sent back (raises on a TLS failure)."""
    with socket.create_connection((server.host, server.port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {server.hostport}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return data


# -- clients over verified TLS ----------------------------------------------------------------------
def test_skopeo_pushes_and_pulls_over_verified_tls(https_registry: RunningServer, skopeo: Skopeo, pki: Pki,
                                                    tmp_path: Path) -> None:
    image = simple_image("tls-skopeo", layer_count=2)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    certs = cert_dir(tmp_path / "certs", pki)
    ref = f"docker://{https_registry.hostport}/tls/skopeo:v1"
    skopeo("copy", "--quiet", "--dest-cert-dir", str(certs), f"oci:{layout}:v1", ref)
    skopeo("copy", "--quiet", "--src-cert-dir", str(certs), ref, f"oci:{tmp_path / 'out'}:v1")
    descriptors, blobs = oci_layout_contents(tmp_path / "out")
    assert [d["digest"] for d in descriptors] == [image.digest]
    assert blobs[image.digest] == image.manifest
    r = httpx.get(f"{https_registry.url}/v2/tls/skopeo/manifests/v1", verify=trusting(pki),
                  headers={"Accept": image.media_type})
    assert r.status_code == 200 and sha256_of(r.content) == image.digest


def test_podman_pushes_and_pulls_over_verified_tls(https_registry: RunningServer,
                                                   make_podman: Callable[[str], Engine], pki: Pki,
                                                   tmp_path: Path) -> None:
    image = simple_image("tls-podman", layer_count=1)
    layout = write_oci_layout(tmp_path / "layout", image, "v1")
    certs = cert_dir(tmp_path / "certs", pki)
    ref = f"{https_registry.hostport}/tls/podman:v1"
    pusher = make_podman("tls-pusher")
    pusher("pull", f"oci:{layout}:v1")
    pusher("push", "--cert-dir", str(certs), image.config.digest[7:], f"docker://{ref}")
    puller = make_podman("tls-puller")
    puller("pull", "--cert-dir", str(certs), ref)
    assert "sha256:" + engine_image(puller, ref)["Id"] == image.config.digest


def test_puller_fetches_with_its_ca_file(https_registry: RunningServer, pki: Pki, tmp_path: Path) -> None:
    image = simple_image("tls-puller", layer_count=1)
    with httpx.Client(verify=trusting(pki), timeout=30) as client:
        push_image(client, https_registry.url, "tls/puller", image, "v1")
    config = tmp_path / "puller.toml"
    config.write_text(f'[hosts."{https_registry.hostport}"]\nca_file = "{pki.ca}"\n')
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PULLER_CONFIG", "PULLER_STORE", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR",
                        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PYTHONPATH": str(REPO_ROOT)})

    def fetch(config_file: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "puller", "--config", str(config_file), "--store",
                               str(tmp_path / "store"), "--json", "fetch", f"{https_registry.hostport}/tls/puller:v1"],
                              capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)

    result = fetch(config)
    assert result.returncode == 0, result.stderr
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert image.digest in [m["digest"] for m in index["manifests"]]
    # The same fetch without the CA: refused by certificate verification.
    bare = tmp_path / "bare.toml"
    bare.write_text("[network]\nretries = 0\n")
    (tmp_path / "store").rename(tmp_path / "store-first")
    refused = fetch(bare)
    assert refused.returncode != 0
    assert "certificate" in refused.stderr.lower(), refused.stderr


# -- clients that may not get in ---------------------------------------------------------------------
def test_a_client_without_the_ca_fails_in_the_tls_handshake(https_registry: RunningServer, skopeo: Skopeo,
                                                            tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_https_get(https_registry, ssl.create_default_context())
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_registry.url}/v2/", timeout=30)
    result = skopeo("inspect", "--raw", f"docker://{https_registry.hostport}/tls/skopeo:v1", check=False)
    assert result.returncode != 0 and "x509" in result.stderr, result.stderr  # a certificate error, not a 4xx
    assert "Traceback" not in https_registry.log()


def test_mutual_tls_lets_in_only_clients_with_a_certificate_of_the_client_ca(mtls_registry: RunningServer, pki: Pki,
                                                                            skopeo: Skopeo, tmp_path: Path) -> None:
    assert raw_https_get(mtls_registry, trusting(pki, client=True)).startswith(b"HTTP/1.1 200 ")
    stranger = trusting(pki)
    stranger.load_cert_chain(str(pki.stranger_cert), str(pki.stranger_key))
    for context in (trusting(pki), stranger):  # no certificate; one of a CA the server does not trust
        try:
            answer = raw_https_get(mtls_registry, context)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            answer = b""  # TLS 1.3 reports the refusal on the first read or write
        assert not answer.startswith(b"HTTP/"), answer[:200]  # never an HTTP answer, however short
    image = simple_image("tls-mutual", layer_count=1)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    ref = f"docker://{mtls_registry.hostport}/tls/mutual:v1"
    refused = skopeo("copy", "--quiet", "--dest-cert-dir", str(cert_dir(tmp_path / "ca-only", pki)),
                     f"oci:{layout}:v1", ref, check=False)
    # The handshake is refused (the client sees the connection end in it), never an HTTP 401/403.
    assert refused.returncode != 0 and "pinging container registry" in refused.stderr, refused.stderr
    # Whole words: a digest or a port in the message may hold the digits.
    assert not re.search(r"\b(401|403|unauthorized|denied)\b", refused.stderr, re.IGNORECASE), refused.stderr
    with_cert = trusting(pki, client=True)
    missing = httpx.get(f"{mtls_registry.url}/v2/tls/mutual/manifests/v1", verify=with_cert, timeout=30)
    assert missing.status_code == 404  # nothing got through
    skopeo("copy", "--quiet", "--dest-cert-dir", str(cert_dir(tmp_path / "with-client", pki, client=True)),
           f"oci:{layout}:v1", ref)
    r = httpx.get(f"{mtls_registry.url}/v2/tls/mutual/manifests/v1", headers={"Accept": image.media_type},
                  verify=with_cert, timeout=30)
    assert r.status_code == 200 and sha256_of(r.content) == image.digest
    assert "Traceback" not in mtls_registry.log()


# -- unusable files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case,expected", [
    ("missing certificate", "http.tls.certificate: cannot read"),
    ("certificate is not PEM", "http.tls.certificate:"),
    ("missing key", "http.tls.key: cannot read"),
    ("key is not PEM", "http.tls.key:"),
    ("key of another certificate", "is not the private key of the certificate"),
    ("missing client CA", "http.tls.client_ca: cannot read"),
    ("key without certificate", "http.tls.key is set but http.tls.certificate is not"),
])
def test_unusable_tls_files_stop_the_server_with_one_line(pki: Pki, tmp_path: Path, case: str, expected: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    tls = {"certificate": str(pki.server_cert), "key": str(pki.server_key)}
    if case == "missing certificate":
        tls["certificate"] = str(tmp_path / "nope.pem")
    elif case == "certificate is not PEM":
        tls["certificate"] = str(garbage)
    elif case == "missing key":
        tls["key"] = str(tmp_path / "nope.key")
    elif case == "key is not PEM":
        tls["key"] = str(garbage)
    elif case == "key of another certificate":
        tls["key"] = str(pki.client_key)
    elif case == "missing client CA":
        tls["client_ca"] = str(tmp_path / "nope-ca.pem")
    elif case == "key without certificate":
        del tls["certificate"]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"http": {"tls": tls}, "storage": {"filesystem": {"root": str(tmp_path / "d")}}}))
    result = subprocess.run([sys.executable, "-m", "registry", "serve", "--config", str(config), "--port",
                             str(free_port())], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("registry: ") and expected in lines[0], result.stderr


def test_the_console_session_cookie_is_secure_over_tls(tmp_path: Path, pki: Pki) -> None:
    """Behind the built-in TLS, the web console's cookies (session and CSRF) carry Secure besides
    HttpOnly and SameSite=Strict: a browser never sends them over plain HTTP."""
    auth = auth_config(tmp_path / "auth", {"alice": PASSWORDS["alice"]}, "rules: []\n")["auth"]
    server = start_tls_cargobay(tmp_path / "console", pki, extra={"auth": auth})
    try:
        with httpx.Client(base_url=server.url, verify=trusting(pki), timeout=30) as browser:
            login = browser.get("/ui/login")
            assert login.status_code == 200
            token = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert token is not None
            answer = browser.post("/ui/login", data={"csrf": token.group(1), "username": "alice",
                                                     "password": PASSWORDS["alice"], "next": "/ui/"},
                                  headers={"Origin": server.url})
            assert answer.status_code == 303, answer.text[:300]
            cookies = {value.split("=", 1)[0]: value.lower() for value in answer.headers.get_list("set-cookie")}
            for name in ("cargobay_ui", "cargobay_ui_csrf"):
                assert all(flag in cookies[name] for flag in ("; secure", "; httponly", "samesite=strict")), cookies
    finally:
        server.stop()
