"""The mesh's own certificate authority, with the ``cryptography`` package.

``gridmesh up`` keeps one directory (``tls.dir``, by default
``<state_dir>/tls``) holding the CA certificate ``ca.crt`` and, per
component role, ``<role>.crt`` and ``<role>.key``. :func:`ensure` creates
what is missing: a CA (its key ``ca.key`` beside it) and a certificate per
role signed by it. An operator's own CA and certificates are used as they
are: put ``ca.crt`` and the role files there and leave ``ca.key`` out, and
nothing is issued.

A component's certificate names its role twice: as the subject's common name
(what a service reads from its peer to decide what it may call) and as the
DNS name ``<role>.gridmesh.internal`` (what a client checks the service it
reached against). It also names ``localhost``, ``127.0.0.1`` and the hosts
given, so ``grpcurl -cacert`` works against a component port directly.

Keys are ECDSA P-256, written 0600; certificates are valid for a year, the
CA for ten.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gridmesh.common.errors import ConfigError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
DNS_SUFFIX = ".gridmesh.internal"
CA_DAYS = 3650
CERT_DAYS = 365


def role_dns_name(role: str) -> str:
    """The DNS name a component's certificate carries for its role."""
    return f"{role}{DNS_SUFFIX}"


def cert_path(directory: Path, role: str) -> Path:
    return directory / f"{role}.crt"


def key_path(directory: Path, role: str) -> Path:
    return directory / f"{role}.key"


def ensure(directory: Path, roles: Iterable[str], hosts: Iterable[str] = (), *, new_ca: bool = True) -> list[str]:
    """Creates the CA (unless not ``new_ca``: a host joining a mesh must use
    the mesh's) and each role's certificate that ``directory`` lacks; returns
    the roles it issued a certificate for. Without ``ca.key`` (an operator's
    own CA, or a joining host), every role's files must be there already."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    missing = [r for r in roles if not (cert_path(directory, r).exists() and key_path(directory, r).exists())]
    if not missing:
        return []
    if (directory / CA_CERT).exists() and not (directory / CA_KEY).exists():
        names = ", ".join(f"{r}.crt/{r}.key" for r in missing)
        raise ConfigError(f"{directory} has a CA certificate but not its key, and lacks {names}: place them there")
    if not (directory / CA_CERT).exists():
        if not new_ca:
            names = ", ".join(f"{r}.crt/{r}.key" for r in missing)
            raise ConfigError(
                f"{directory} has no CA certificate: a host joining a mesh uses the mesh's; copy its ca.crt and "
                f"{names} there from the mesh's tls directory"
            )
        _write_ca(directory)
    ca = CertificateAuthority(directory)
    for role in missing:
        key, cert = ca.issue(role, hosts)
        write_private(key_path(directory, role), key)
        cert_path(directory, role).write_bytes(cert)
    return missing


def _certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    role: str,
    public_key: ec.EllipticCurvePublicKey,
    hosts: Iterable[str],
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(role_dns_name(role)), x509.DNSName("localhost")]
    for host in dict.fromkeys(["127.0.0.1", *hosts]):
        if host == "localhost":
            continue  # named above
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridmesh"), _cn(role)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class CertificateAuthority:
    """The mesh's CA as loaded from ``tls.dir``, to sign what a joining host asks for."""

    def __init__(self, directory: Path) -> None:
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{directory / CA_KEY} is not an ECDSA key")
        self._key = key
        self.cert_pem = (directory / CA_CERT).read_bytes()
        self._cert = x509.load_pem_x509_certificate(self.cert_pem)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority | None:
        """The CA of ``directory``; ``None`` where its key is not there (an
        operator's own CA, or a host that does not hold it)."""
        return cls(directory) if (directory / CA_KEY).is_file() else None

    def issue(self, role: str, hosts: Iterable[str] = ()) -> tuple[bytes, bytes]:
        """A new key and a certificate for ``role`` signed by the CA, both PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        return _pem_key(key), _certificate(self._cert, self._key, role, key.public_key(), hosts)

    def sign_request(self, csr_pem: bytes, role: str) -> bytes:
        """A certificate (PEM) for ``role`` carrying the public key of a
        certificate signing request, whatever names the request asks for
        (:func:`check_signing_request` first)."""
        return _certificate(self._cert, self._key, role, check_signing_request(csr_pem), ())


def check_signing_request(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of a well-formed, self-signed P-256 certificate
    signing request; ValueError saying what is wrong otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise ValueError("not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise ValueError("the certificate signing request's signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise ValueError("the certificate signing request's key must be ECDSA P-256")
    return public_key


def signing_request(role: str) -> tuple[bytes, bytes]:
    """A new key and a certificate signing request for ``role``, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([_cn(role)])).sign(key, hashes.SHA256())
    return _pem_key(key), csr.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of a certificate's DER form, hex: what a join token pins the CA by."""
    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()).hex()


def check_issued(cert_pem: bytes, ca_pem: bytes, key_pem: bytes) -> None:
    """ValueError unless ``cert_pem`` is signed by the CA and carries the public key of ``key_pem``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, TypeError) as e:
        raise ValueError(f"the certificate is not signed by the mesh's CA: {e!r}") from None
    key = serialization.load_pem_private_key(key_pem, password=None)
    if cert.public_key() != key.public_key():
        raise ValueError("the certificate does not carry this host's key")


def _write_ca(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridmesh"), _cn("gridmesh local CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(directory / CA_KEY, _pem_key(key))
    (directory / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cn(value: str) -> x509.NameAttribute:
    return x509.NameAttribute(NameOID.COMMON_NAME, value)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def role_files(directory: Path, role: str) -> tuple[Path, Path, Path]:
    """What a process of ``role`` needs: the CA certificate, its certificate and its key."""
    return directory / CA_CERT, cert_path(directory, role), key_path(directory, role)


def keystore(directory: Path, role: str) -> Path:
    """``<role>.pem``: the role's key and certificate in one 0600 file, the
    form Java's Kafka clients and brokers read (``ssl.keystore.type=PEM``);
    written again whenever the certificate changed."""
    path = directory / f"{role}.pem"
    bundle = key_path(directory, role).read_bytes() + cert_path(directory, role).read_bytes()
    if not path.is_file() or path.read_bytes() != bundle:
        write_private(path, bundle)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Written 0600 from the first byte (never readable by others in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


__all__ = [
    "CA_CERT",
    "CertificateAuthority",
    "cert_path",
    "check_issued",
    "check_signing_request",
    "ensure",
    "fingerprint",
    "key_path",
    "keystore",
    "role_dns_name",
    "role_files",
    "signing_request",
    "write_private",
]
