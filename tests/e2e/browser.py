"""Debian's Chromium, driven by Playwright, for the e2e tests of the web
console (no browser download: the network is closed)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, sync_playwright

from gridmesh.adapters import pki
from gridmesh.core.access import PeerRole
from tests.conftest import TEST_TLS_DIR

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("GRIDMESH_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, without a GPU, on a machine with no outside network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def edge_spki_sha256() -> str:
    """Base64 SHA-256 of the test edges' public key (Chromium's pin format)."""
    cert = x509.load_pem_x509_certificate(pki.cert_path(TEST_TLS_DIR, PeerRole.EDGE).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: ./dev test installs Debian's chromium"
    with sync_playwright() as playwright:
        # The edge's certificate is trusted by its public key, as a user
        # trusting the mesh's CA would (no certificate errors ignored).
        trust = f"--ignore-certificate-errors-spki-list={edge_spki_sha256()}"
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, trust])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
