"""What a relying party sees of an issued certificate, through the gateway, in both modes.

A customer orders and the admin approves a certificate; then only public tools judge it:
``openssl verify`` builds the chain to the root fetched from the issuing CA's caIssuers
URL, pkilint's CA/B Forum server-auth linter finds no error, ``openssl ocsp`` asks the
responder named in the certificate (good, then revoked after a revocation through the
API, and unknown for a serial nobody issued), and ``openssl crl`` finds the revoked
serial on the CRL named in the certificate once it is republished.

The URLs in certificates name the configured public host; the tests keep their paths and
send them to the stack's gateway, which serves ``/ca/`` for any host.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from chancery_shared.testing import wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from tests.conftest import PASSWORD, stack_environment
from tests.e2e.scenario import SETTLING_CARD, Api, expect, p256_csr, validate_by_dns

pytestmark = pytest.mark.e2e
STRONG = "Cobalt-Harbour-Lantern-47"
#: Margin on top of the CRL job's interval for the republication to be served.
CRL_MARGIN_SECONDS = 30.0


# --- an account with one issued certificate --------------------------------------------


def open_account(base_url: str, dns) -> Api:
    """A new customer account (its admin), with example.com validated and $1,000 paid in."""
    anonymous = Api(base_url)
    operator = anonymous.login("operator@chancery.local", PASSWORD)
    tag = uuid.uuid4().hex[:8]
    expect(operator.post("/api/identity/v1/accounts", {
        "name": f"Chain {tag}", "admin_email": f"admin-{tag}@chain-test.com",
        "admin_name": "Chain Admin", "admin_password": STRONG}), 201)
    admin = anonymous.login(f"admin-{tag}@chain-test.com", STRONG)
    validate_by_dns(admin, dns, "example.com")
    expect(admin.post("/api/ledger/v1/deposits", {
        "method": "card", "amount_cents": 100_000, "card": SETTLING_CARD}), 201)
    return admin


def order_status(admin: Api, order_id: str, wanted: str) -> dict:
    def probe() -> dict | None:
        order = expect(admin.get(f"/api/orders/v1/orders/{order_id}"), 200)
        assert order["status"] != "failed", order
        return order if order["status"] == wanted else None

    return wait_for(probe, timeout=60, message=f"order {order_id} to be {wanted}")


def write_pem(path: Path, *certificates: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


def aia_url(certificate: x509.Certificate, method: x509.ObjectIdentifier) -> str:
    aia = certificate.extensions.get_extension_for_oid(
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    [url] = [d.access_location.value for d in aia if d.access_method == method]
    return url


def crl_url(certificate: x509.Certificate) -> str:
    points = certificate.extensions.get_extension_for_oid(
        ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    [url] = [name.value for point in points for name in point.full_name or ()]
    return url


def via_gateway(base_url: str, url: str) -> str:
    """``url``'s path on the stack's gateway (certificates name the public host)."""
    return base_url + urlsplit(url).path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def issued(stack, loopback_dns, tmp_path: Path):
    """An issued DV certificate, its chain as downloaded, and the root from caIssuers."""
    admin = open_account(stack.base_url, loopback_dns)
    name = f"chain-{uuid.uuid4().hex[:8]}.example.com"
    order = expect(admin.post("/api/orders/v1/orders", {
        "product": "ssl_dv", "term_years": 1, "server_type": "nginx", "common_name": name,
        "sans": [], "csr": p256_csr(name)}), 201)
    if order["status"] == "pending_approval":  # an admin's own order may be approved already
        expect(admin.post(f"/api/orders/v1/orders/{order['id']}/approve", {}), 200)
    order = order_status(admin, order["id"], "issued")
    download = admin.get(f"/api/orders/v1/orders/{order['id']}/certificate?format=pem-chain")
    assert download.status_code == 200, download.text
    leaf, issuing, *rest = x509.load_pem_x509_certificates(download.content)
    assert rest == [], "the chain is the leaf and its issuing CA; the root is not sent"
    root_response = requests.get(via_gateway(stack.base_url, aia_url(
        issuing, AuthorityInformationAccessOID.CA_ISSUERS)), timeout=30)
    assert root_response.status_code == 200, root_response.text
    root = x509.load_der_x509_certificate(root_response.content)
    assert format(leaf.serial_number, "x") == order["certificate"]["serial"].lower()
    return _Issued(stack.base_url, admin, order, leaf, issuing, root, tmp_path)


class _Issued:
    def __init__(self, base_url: str, admin: Api, order: dict, leaf: x509.Certificate,
                 issuing: x509.Certificate, root: x509.Certificate, folder: Path) -> None:
        self.base_url, self.admin, self.order = base_url, admin, order
        self.leaf, self.issuing, self.root = leaf, issuing, root
        self.leaf_pem = write_pem(folder / "leaf.pem", leaf)
        self.issuing_pem = write_pem(folder / "issuing.pem", issuing)
        self.root_pem = write_pem(folder / "root.pem", root)
        self.trusted_pem = write_pem(folder / "trusted.pem", issuing, root)
        self.folder = folder

    def ocsp_url(self) -> str:
        return via_gateway(self.base_url, aia_url(self.leaf, AuthorityInformationAccessOID.OCSP))

    def openssl_ocsp(self) -> str:
        """``openssl ocsp`` asks the responder about the leaf; returns its verified answer."""
        result = run("openssl", "ocsp", "-issuer", str(self.issuing_pem), "-cert",
                     str(self.leaf_pem), "-url", self.ocsp_url(), "-CAfile",
                     str(self.trusted_pem), "-no_nonce", "-timeout", "20")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Response verify OK" in result.stdout + result.stderr, result.stderr
        return result.stdout


def eventually(probe: Callable[[], str | None], timeout: float, message: str) -> str:
    return wait_for(probe, timeout=timeout, interval=0.5, message=message)


def crl_republish_timeout(loopback_dns) -> float:
    """The CRL job's check interval in the test stacks, plus a margin."""
    environ = {**os.environ, **stack_environment(loopback_dns)}
    return float(environ.get("CHANCERY_CRL_CHECK_SECONDS", "60")) + CRL_MARGIN_SECONDS


# --- the tests -------------------------------------------------------------------------


def test_openssl_verifies_the_chain_up_to_the_root_named_by_caissuers(issued):
    result = run("openssl", "verify", "-purpose", "sslserver", "-CAfile",
                 str(issued.root_pem), "-untrusted", str(issued.issuing_pem),
                 str(issued.leaf_pem))

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    assert issued.root.issuer == issued.root.subject  # the caIssuers chain ends at a root
    issuers = expect(issued.admin.get("/api/ca/v1/issuers"), 200)["items"]
    root_pems = [i["certificate_pem"] for i in issuers if i.get("kind") == "root"]
    assert issued.root.public_bytes(serialization.Encoding.PEM).decode() in root_pems


def test_pkilint_finds_no_error_in_the_issued_certificate(issued):
    tool = Path(sys.executable).parent / "lint_cabf_serverauth_cert"

    result = run(str(tool), "lint", "-d", "-o", "-s", "ERROR", str(issued.leaf_pem))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "DV-FINAL-CERTIFICATE" in result.stderr  # detected as what was ordered
    assert result.stdout.strip() == ""  # nothing at ERROR or FATAL


def test_openssl_ocsp_says_good_then_revoked_after_a_revocation(issued):
    assert f"{issued.leaf_pem}: good" in issued.openssl_ocsp()

    path = f"/api/orders/v1/orders/{issued.order['id']}"
    expect(issued.admin.post(f"{path}/revoke", {"reason": "key_compromise"}), 200)
    order_status(issued.admin, issued.order["id"], "revoked")

    answer = eventually(lambda: (lambda out: out if ": revoked" in out else None)(
        issued.openssl_ocsp()), timeout=30, message="OCSP to answer revoked")
    assert f"{issued.leaf_pem}: revoked" in answer
    assert "Reason: keyCompromise" in answer


def test_ocsp_says_unknown_for_a_serial_nobody_issued(issued):
    template = (ocsp.OCSPRequestBuilder().add_certificate(issued.leaf, issued.issuing,
                                                          hashes.SHA1()).build())
    serial = x509.random_serial_number()
    request = (ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        template.issuer_name_hash, template.issuer_key_hash, serial, hashes.SHA1())
        .build().public_bytes(serialization.Encoding.DER))

    response = requests.post(issued.ocsp_url(), data=request, timeout=30,
                             headers={"Content-Type": "application/ocsp-request"})

    assert response.status_code == 200
    answer = issued.folder / "unknown.der"
    answer.write_bytes(response.content)
    result = run("openssl", "ocsp", "-respin", str(answer), "-issuer", str(issued.issuing_pem),
                 "-serial", hex(serial), "-CAfile", str(issued.trusted_pem), "-no_nonce")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Response verify OK" in result.stdout + result.stderr, result.stderr
    assert f"{hex(serial)}: unknown" in result.stdout
    parsed = ocsp.load_der_ocsp_response(response.content)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def crl_serials(crl_text: str) -> set[int]:
    return {int(s, 16) for s in re.findall(r"Serial Number:\s*([0-9A-Fa-f]+)", crl_text)}


def test_openssl_crl_finds_the_revoked_serial_once_republished(issued, loopback_dns):
    url = via_gateway(issued.base_url, crl_url(issued.leaf))
    expect(issued.admin.post(f"/api/orders/v1/orders/{issued.order['id']}/revoke",
                             {"reason": "superseded"}), 200)
    order_status(issued.admin, issued.order["id"], "revoked")

    def republished() -> str | None:
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, response.text
        path = issued.folder / "issuing.crl"
        path.write_bytes(response.content)
        result = run("openssl", "crl", "-inform", "DER", "-in", str(path), "-CAfile",
                     str(issued.trusted_pem), "-noout", "-text")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "verify OK" in result.stdout + result.stderr
        return result.stdout if issued.leaf.serial_number in crl_serials(result.stdout) \
            else None

    text = eventually(republished, timeout=crl_republish_timeout(loopback_dns),
                      message="the revoked serial on the CRL")
    assert "Superseded" in text
