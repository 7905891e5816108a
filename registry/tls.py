"""`http.tls`: the server's certificate, key and (for mutual TLS) client CAs, checked at start with
one clear line per problem, and the `ssl.SSLContext` uvicorn serves with.

The context allows TLS 1.2 and 1.3 only and announces `http/1.1` by ALPN (the only protocol spoken).
With `client_ca`, a client must present a certificate issued by one of those CAs, or the handshake
fails: such a client never reaches HTTP, so it never gets a 4xx.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .settings import SettingsError, TlsSettings


def enabled(tls: TlsSettings) -> bool:
    return bool(tls.certificate)


def check(tls: TlsSettings) -> None:
    """Raise SettingsError naming the setting and the file when the TLS files cannot serve."""
    if not tls.certificate:
        for name in ("key", "client_ca"):
            if getattr(tls, name):
                raise SettingsError(f"http.tls.{name} is set but http.tls.certificate is not")
        return
    _certificates(tls.certificate, "http.tls.certificate")
    if tls.key:
        data = _read(tls.key, "http.tls.key")
        try:
            serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise SettingsError(f"http.tls.key: {tls.key} is encrypted; give an unencrypted PEM key") from None
        except ValueError:
            raise SettingsError(f"http.tls.key: {tls.key} is not a PEM private key") from None
    if tls.client_ca:
        _certificates(tls.client_ca, "http.tls.client_ca")
    try:
        context(tls)
    except ssl.SSLError as exc:
        if tls.key:
            problem = f"http.tls.key: {tls.key} is not the private key of the certificate in {tls.certificate}"
        else:
            problem = f"http.tls.key is empty and {tls.certificate} holds no private key of its certificate"
        raise SettingsError(f"{problem} ({exc.reason or exc})") from None


def context(tls: TlsSettings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.certificate, tls.key or None)
    if tls.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=tls.client_ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def context_factory(tls: TlsSettings) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """uvicorn's `ssl_context_factory` (picklable: worker processes build the same context)."""
    return functools.partial(_factory, tls)


def _factory(tls: TlsSettings, config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    return context(tls)


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


def _certificates(path: str, key: str) -> list[x509.Certificate]:
    data = _read(path, key)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise SettingsError(f"{key}: {path} holds no PEM certificate") from None
