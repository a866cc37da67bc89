"""A new worker host joins the mesh with a join token.

``gridmesh worker join-token`` (on a host of the mesh, as its admin) makes a
token: a key of the ``join`` role, valid once and for a while, together with
the edge's address and the SHA-256 fingerprint of the mesh's CA certificate.
``gridmesh worker start --join TOKEN`` on the new host then:

1. fetches the CA certificate from the edge (``/v1/ca.crt``; anyone may) and
   goes on only if its fingerprint is the token's, so the token is sent to
   the mesh it was made for and to nothing posing as it;
2. makes its own key (it never leaves the host) and a certificate signing
   request;
3. calls ``Enrollment/Join`` through the edge, over TLS checked against that
   CA, with the token's key: the edge's authorizer uses the token up and
   answers a worker certificate (and the mesh's ZooKeeper password);
4. writes ``ca.crt``, ``worker.crt`` and ``worker.key`` (0600) into
   ``tls.dir`` and the password into ``secrets_dir``.

A host that holds its worker certificate already skips all this, so the same
command restarts the node.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.request
from dataclasses import dataclass

import grpc

from gridmesh.adapters import pki
from gridmesh.common.errors import InvalidArgument, PermissionDenied, Unavailable
from gridmesh.config import ZOOKEEPER_SECRET, MeshConfig
from gridmesh.core.access import PeerRole
from gridmesh.grpc_support.errors import error_of
from gridmesh.v1 import enrollment_pb2, enrollment_pb2_grpc

TOKEN_PREFIX = "gmj_"
CA_PATH = "/v1/ca.crt"
TIMEOUT_S = 10.0
UNKNOWN_KEY_RETRY_S = 0.5


@dataclass(frozen=True)
class JoinToken:
    edge: str
    """host:port of the edge the new host reaches."""
    ca_sha256: str
    """Fingerprint of the mesh's CA certificate (hex)."""
    key: str
    """The ``join`` key, used up by the Join."""

    def __str__(self) -> str:
        body = json.dumps({"edge": self.edge, "ca": self.ca_sha256, "key": self.key}, separators=(",", ":"))
        return TOKEN_PREFIX + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        text = text.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise InvalidArgument("a join token starts with gmj_ (`gridmesh worker join-token` prints one)")
        try:
            body = text[len(TOKEN_PREFIX) :]
            fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return cls(str(fields["edge"]), str(fields["ca"]), str(fields["key"]))
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument("the join token is malformed: copy it whole, as it was printed") from None


def has_certificate(config: MeshConfig) -> bool:
    return all(path.is_file() for path in pki.role_files(config.tls_path, PeerRole.WORKER))


def fetch_ca(edge: str, timeout_s: float = TIMEOUT_S) -> bytes:
    """The CA certificate the edge serves. Its own certificate is not checked
    here: the caller checks what comes back against a fingerprint."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://{edge}{CA_PATH}", timeout=timeout_s, context=unverified) as reply:
            return bytes(reply.read())
    except OSError as e:
        raise Unavailable(f"cannot fetch the mesh's CA certificate from https://{edge}{CA_PATH}: {e}") from None


def join(config: MeshConfig, token: JoinToken, timeout_s: float = TIMEOUT_S) -> None:
    """This host's worker certificate, by the steps of the module doc."""
    ca_pem = fetch_ca(token.edge, timeout_s)
    try:
        found = pki.fingerprint(ca_pem)
    except ValueError:
        found = "not a certificate"
    if found != token.ca_sha256:
        raise PermissionDenied(
            f"the edge at {token.edge} serves a CA ({found}) that is not the one the token names "
            f"({token.ca_sha256}): the token was not sent"
        )
    key_pem, csr_pem = pki.signing_request(PeerRole.WORKER)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    # The edge's certificate names its role; a host name the token carries may not be among its names.
    options = [("grpc.ssl_target_name_override", pki.role_dns_name(PeerRole.EDGE))]
    request = enrollment_pb2.JoinRequest(csr_pem=csr_pem.decode())
    deadline = time.monotonic() + timeout_s
    with grpc.secure_channel(token.edge, credentials, options) as channel:
        stub = enrollment_pb2_grpc.EnrollmentStub(channel)
        while True:
            try:
                answer = stub.Join(request, metadata=(("authorization", f"Bearer {token.key}"),), timeout=timeout_s)
                break
            except grpc.RpcError as e:
                # The edge reads its keys every auth.refresh_s: a token made a
                # moment ago may not be known there yet.
                unknown = e.code() == grpc.StatusCode.UNAUTHENTICATED and "unknown API key" in (e.details() or "")
                if not unknown or time.monotonic() > deadline:
                    raise error_of(e.code().value[0], f"the edge refused the join: {e.details()}") from None
                time.sleep(UNKNOWN_KEY_RETRY_S)
    certificate = answer.certificate_pem.encode()
    pki.check_issued(certificate, ca_pem, key_pem)
    directory = config.tls_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki.write_private(pki.key_path(directory, PeerRole.WORKER), key_pem)
    pki.cert_path(directory, PeerRole.WORKER).write_bytes(certificate)
    (directory / pki.CA_CERT).write_bytes(ca_pem)
    if answer.zookeeper_password:
        secret = config.secrets_path / ZOOKEEPER_SECRET
        secret.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pki.write_private(secret, answer.zookeeper_password.encode() + b"\n")


__all__ = ["JoinToken", "fetch_ca", "has_certificate", "join"]
