"""The hub's own certificate authority: TLS for the broker's device listener and, optionally, for HTTPS.

On first start the hub creates a CA (an EC P-256 key, kept mode 0600 beside its certificate) in its data
directory and issues server certificates for the names and addresses it listens on; devices are given the CA
certificate and verify the broker against it. Certificates are re-issued when missing, near expiry or when the
names they must cover change; the CA itself is kept (devices trust it), so a restart changes nothing a device sees.
Client certificates for devices that authenticate with one carry the device id as their common name.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.errors import HubStartError, one_line

__all__ = [
    "Pki", "client_cert_pem", "ensure_ca", "https_context", "issue_client_cert", "issue_server_cert", "spki_sha256_b64",
]

CA_DAYS = 3650
LEAF_DAYS = 397
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Pki:
    cert_path: Path
    key_path: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    # Created 0600 from the start: never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _load(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.cert_path.read_bytes())
    key = serialization.load_pem_private_key(pki.key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pki.key_path}: not an EC private key")
    return cert, key


def ensure_ca(directory: Path, name: str = "fieldhub local CA") -> Pki:
    """The CA in ``directory`` (``ca.pem``, ``ca.key``), created on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory / "ca.pem", directory / "ca.key")
    if pki.cert_path.exists() and pki.key_path.exists():
        cert, _ = _load(pki)
        if cert.not_valid_after_utc - RENEW_BEFORE > _now():
            return pki
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldhub")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(pki.key_path, key)
    pki.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _issue(pki: Pki, directory: Path, name: str, common_name: str, usage: x509.ObjectIdentifier,
           hosts: Sequence[str]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    wanted = sorted(map(str, _san(hosts)))
    if cert_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            have = sorted(map(str, current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value))
        except x509.ExtensionNotFound:
            have = []
        ca_cert, _ = _load(pki)
        if (have == wanted and current.issuer == ca_cert.subject
                and current.not_valid_after_utc - RENEW_BEFORE > _now()):
            return cert_path, key_path
    cert, key = _build(pki, common_name, usage, hosts)
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _build(pki: Pki, common_name: str, usage: x509.ObjectIdentifier,
           hosts: Sequence[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = _load(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def client_cert_pem(pki: Pki, common_name: str) -> tuple[bytes, bytes]:
    """A new client certificate and its private key, as PEM, kept nowhere (handed to the device once)."""
    cert, key = _build(pki, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def issue_server_cert(pki: Pki, directory: Path, name: str, hosts: Sequence[str]) -> tuple[Path, Path]:
    """A server certificate ``{name}.pem``/``{name}.key`` valid for ``hosts`` (IP addresses and DNS names)."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    return _issue(pki, directory, name, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, hosts)


def issue_client_cert(pki: Pki, directory: Path, common_name: str) -> tuple[Path, Path]:
    """A client certificate whose common name is the identity (a device id)."""
    return _issue(pki, directory, common_name, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def spki_sha256_b64(cert_path: Path) -> str:
    """Base64 SHA-256 of the certificate's public key (what Chromium's SPKI pin list takes)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def https_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The HTTPS server context of ``cert`` and its ``key`` (PEM files); None for plain HTTP. HubStartError names
    the file when either cannot be read or they do not make a pair, so a bad file stops the start at once."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise HubStartError("tls: FIELDHUB_TLS_CERT and FIELDHUB_TLS_KEY (--tls-cert, --tls-key) go together")
    for what, path in (("certificate", cert), ("key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise HubStartError(f"tls: {what} {path}: cannot read: {exc.strerror or one_line(exc)}") from exc
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise HubStartError(f"tls: certificate {cert} with key {key} unusable: {one_line(exc)}") from exc
    return ctx
