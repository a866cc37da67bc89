"""Join tokens and the CA's signing of a joining host's request (no mesh)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gridmesh.adapters import pki
from gridmesh.common.errors import InvalidArgument
from gridmesh.core.access import PeerRole
from gridmesh.worker.join import JoinToken


def test_a_join_token_reads_back_as_it_was_made_and_a_damaged_one_is_refused():
    token = JoinToken("10.0.0.2:8080", "ab" * 32, "gmk_0123456789ab_" + "x" * 43)
    assert JoinToken.parse(f"  {token}\n") == token
    for damaged in ("gmk_0123456789ab_secret", str(token)[:20], "gmj_!!!"):
        with pytest.raises(InvalidArgument):
            JoinToken.parse(damaged)


def test_the_ca_signs_a_worker_certificate_for_the_requests_key_whatever_it_asks_for(tmp_path):
    pki.ensure(tmp_path / "mesh", [PeerRole.SCHEDULER])
    ca = pki.CertificateAuthority.load(tmp_path / "mesh")
    assert ca is not None
    key, csr = pki.signing_request("admin")  # asks for more than it gets
    certificate = ca.sign_request(csr, PeerRole.WORKER)
    pki.check_issued(certificate, ca.cert_pem, key)
    assert x509.load_pem_x509_certificate(certificate).subject.rfc4514_string() == "CN=worker,O=gridmesh"
    assert (
        pki.fingerprint(ca.cert_pem) == x509.load_pem_x509_certificate(ca.cert_pem).fingerprint(hashes.SHA256()).hex()
    )
    other_key, _ = pki.signing_request(PeerRole.WORKER)
    with pytest.raises(ValueError, match="key"):
        pki.check_issued(certificate, ca.cert_pem, other_key)
    pki.ensure(tmp_path / "foreign", [PeerRole.SCHEDULER])
    with pytest.raises(ValueError, match="not signed by the mesh's CA"):
        pki.check_issued(certificate, (tmp_path / "foreign" / pki.CA_CERT).read_bytes(), key)


def test_a_request_that_is_not_p256_or_not_a_request_is_refused(tmp_path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "worker")]))
        .sign(rsa_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(ValueError, match="P-256"):
        pki.check_signing_request(csr)
    with pytest.raises(ValueError, match="not a PEM"):
        pki.check_signing_request(b"nonsense")
    assert pki.CertificateAuthority.load(tmp_path) is None  # no ca.key: nothing to sign with
