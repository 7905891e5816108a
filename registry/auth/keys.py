"""Token signing keys: ES256 (EC P-256) and RS256 (RSA) through `cryptography`, their libtrust key
ids, certificates and JWKs.

Distribution (docker/distribution 2.x) finds the key that signed a token by the header's `kid`,
which it reads as a libtrust fingerprint: SHA-256 of the DER SubjectPublicKeyInfo, cut to 240
bits, base32, in twelve colon-separated groups of four. Its trusted keys are those of the
certificates in `rootcertbundle`, so a token whose `kid` is computed the same way verifies there.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

from ..errors import RegistryBaseError
from ..settings import Settings
from .files import create_exclusively

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: alg → (hash, curve name for EC or None for RSA, bytes per signature half for EC)
ALGORITHMS: dict[str, tuple[type[hashes.HashAlgorithm], str | None, int]] = {
    "ES256": (hashes.SHA256, "secp256r1", 32),
    "ES384": (hashes.SHA384, "secp384r1", 48),
    "ES512": (hashes.SHA512, "secp521r1", 66),
    "RS256": (hashes.SHA256, None, 0),
    "RS384": (hashes.SHA384, None, 0),
    "RS512": (hashes.SHA512, None, 0),
}
KEY_FILE, CERT_FILE = "token-key.pem", "token-cert.pem"


def key_directory(settings: Settings) -> Path:
    """Where the generated token key lives: `auth.token.key_dir`, else beside the data (the
    filesystem root), else a per-user state directory; never the current directory, which depends
    on where the server happened to be started."""
    if settings.auth.token.key_dir:
        return Path(settings.auth.token.key_dir)
    if settings.storage.driver == "filesystem":
        return Path(settings.storage.filesystem.root) / "auth"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cargobay" / "auth"


class KeyFileError(RegistryBaseError, ValueError):
    """A key, certificate or JWKS that cannot be used (message names the file)."""


def libtrust_kid(public_key: PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    for alg, (_, curve, _) in ALGORITHMS.items():
        if curve == key.curve.name:
            return alg
    raise KeyFileError(f"unsupported EC curve {key.curve.name}")


def suits(alg: str, key: PublicKey) -> bool:
    """Whether `key` is the kind `alg` needs (an RSA key never verifies ES256, and so on)."""
    spec = ALGORITHMS.get(alg)
    if spec is None:
        return False
    curve = spec[1]
    if curve is None:
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == curve


def sign(alg: str, key: PrivateKey, data: bytes) -> bytes:
    hash_cls, curve, half = ALGORITHMS[alg]
    if curve is None:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyFileError(f"{alg} needs an RSA key")
        return key.sign(data, padding.PKCS1v15(), hash_cls())
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{alg} needs an EC key")
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_cls())))
    return r.to_bytes(half, "big") + s.to_bytes(half, "big")  # JWS: fixed-width r || s


def verify_signature(alg: str, key: PublicKey, data: bytes, signature: bytes) -> bool:
    if not suits(alg, key):
        return False
    hash_cls, _, half = ALGORITHMS[alg]
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hash_cls())
        else:  # suits() admitted only RSA and EC keys
            if len(signature) != 2 * half:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
            key.verify(der, data, ec.ECDSA(hash_cls()))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class SigningKey:
    private_key: PrivateKey
    algorithm: str
    kid: str
    certificate: x509.Certificate | None = None

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def self_signed_certificate(key: PrivateKey, common_name: str, days: int = 3650) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or "cargobay")])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))


def pem_private(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_certificate(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_key_pair(key_path: Path, cert_path: Path, alg: str, common_name: str) -> bool:
    """Generate a key and its self-signed certificate into files that do not exist yet. False (and
    nothing written) when the key file already exists: another process made it first."""
    key = generate_private_key(alg)
    cert = self_signed_certificate(key, common_name)
    if not create_exclusively(key_path, pem_private(key)):
        return False
    cert_path.unlink(missing_ok=True)  # a stale certificate of an older key must not survive
    create_exclusively(cert_path, pem_certificate(cert), 0o644)
    return True


def load_signing_key(key_path: Path, cert_path: Path | None = None) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"cannot read token key {key_path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"token key {key_path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise KeyFileError(f"token key {key_path} must be an EC (P-256) or RSA key")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise KeyFileError(f"token key {key_path}: RSA keys must have at least 2048 bits")
    cert = None
    if cert_path is not None:
        certs = load_certificates(cert_path)
        cert = certs[0]
        if libtrust_kid(cert.public_key()) != libtrust_kid(key.public_key()):  # type: ignore[arg-type]
            raise KeyFileError(f"certificate {cert_path} is not the certificate of token key {key_path}")
    return SigningKey(key, algorithm_for(key), libtrust_kid(key.public_key()), cert)


def load_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read certificates {path}: {exc.strerror or exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise KeyFileError(f"{path} holds no PEM certificates") from None
    for cert in certs:
        if not isinstance(cert.public_key(), (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise KeyFileError(f"{path}: only EC and RSA certificates can sign tokens")
    return certs


# -- JWK -----------------------------------------------------------------------------------------
def _b64(n: int, length: int | None = None) -> str:
    raw = n.to_bytes(length or max(1, (n.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64_int(text: Any) -> int:
    if not isinstance(text, str):
        raise ValueError("not a base64url string")
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def to_jwk(key: PublicKey, kid: str) -> dict[str, str]:
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": _b64(numbers.n), "e": _b64(numbers.e)}
    alg = algorithm_for(key)
    half = ALGORITHMS[alg][2]
    point = key.public_numbers()
    crv = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
    return {"kty": "EC", "kid": kid, "use": "sig", "alg": alg, "crv": crv, "x": _b64(point.x, half),
            "y": _b64(point.y, half)}


def from_jwk(jwk: dict[str, Any]) -> PublicKey:
    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_unb64_int(jwk.get("e")), _unb64_int(jwk.get("n"))).public_key()
    if kty == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}.get(jwk.get("crv", ""))
        if curve is None:
            raise ValueError(f"unsupported curve {jwk.get('crv')!r}")
        return ec.EllipticCurvePublicNumbers(_unb64_int(jwk.get("x")), _unb64_int(jwk.get("y")), curve).public_key()
    raise ValueError(f"unsupported key type {kty!r}")


def load_jwks(path: Path) -> dict[str, PublicKey]:
    """kid → public key from a JWKS file (`{"keys": [...]}`); keys without a kid get their libtrust id."""
    try:
        data = json.loads(path.read_text())
        keys = {}
        for jwk in data["keys"]:
            if jwk.get("use", "sig") != "sig":
                continue
            key = from_jwk(jwk)
            keys[str(jwk.get("kid") or libtrust_kid(key))] = key
        return keys
    except OSError as exc:
        raise KeyFileError(f"cannot read JWKS {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"JWKS {path} is not usable: {exc}") from None
