"""The walking-skeleton scenario, through the gateway, identical in every run mode.

The admin validates example.com by a DNS TXT record, pays in $1,000.00 by card and adds a
limited user, who requests a certificate for www.example.com with a fresh P-256 CSR;
the admin approves; the order is issued; the chain verifies against the root with
openssl; the balance fell by exactly the price; the audit log tells the whole story
with the acting users and the client's address.
"""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from chancery_shared.testing import wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CLIENT_IP = "203.0.113.50"  # what the client says it is; the gateway is trusted to relay it
SETTLING_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "cvc": "123"}


@dataclass
class Api:
    base_url: str
    token: str | None = None

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Forwarded-For": CLIENT_IP, **kwargs.pop("headers", {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return requests.request(method, self.base_url + path, headers=headers, timeout=30,
                                **kwargs)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self._call("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self._call("POST", path, json=json, **kw)

    def login(self, email: str, password: str) -> Api:
        r = self.post("/api/identity/v1/sessions", {"email": email, "password": password})
        assert r.status_code == 201, r.text
        return Api(self.base_url, r.json()["access_token"])


def expect(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.url}: " \
                                           f"{response.status_code} {response.text}"
    return response.json() if response.content else {}


def validate_by_dns(admin: Api, dns: Any, name: str) -> dict[str, Any]:
    """Submit ``name`` for the admin's account (a resubmission's 409 names the domain)
    and validate it by DNS change (BR 3.2.2.4.7, good for public products): publish the
    token on the test stacks' loopback DNS server (``tests.conftest.LoopbackDns``), then
    ask for the check. An operator's manual review would count for private products
    only."""
    answer = admin.post("/api/orders/v1/domains", {"name": name, "method": "dns-txt"})
    if answer.status_code == 409:
        domain = expect(admin.get(f"/api/orders/v1/domains/{answer.json()['domain_id']}"),
                        200)
    else:
        domain = expect(answer, 201)
    dns.publish(f"_chancery-challenge.{domain['name']}", "TXT", f'"{domain["token"]}"')
    checked = expect(admin.post(f"/api/orders/v1/domains/{domain['id']}/check", {}), 200)
    assert checked["status"] == "validated", checked.get("last_attempt")
    assert checked["validated_with"] == "dns-txt", checked
    return checked


def p256_csr_without_names() -> str:
    """A CSR that only carries a key: the order decides the names."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def p256_csr(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def run_happy_path(base_url: str, password: str, dns: Any) -> dict[str, Any]:
    anonymous = Api(base_url)
    operator = anonymous.login("operator@chancery.local", password)
    # an account of its own: the development account is shared with other tests (the
    # README's walk-through submits example.com there too)
    tag = uuid.uuid4().hex[:8]
    admin_email, admin_password = f"admin-{tag}@skeleton-test.com", "Quartz-Meadow-Ferry-82"
    expect(operator.post("/api/identity/v1/accounts", {
        "name": f"Skeleton {tag}", "admin_email": admin_email, "admin_name": "Skeleton Admin",
        "admin_password": admin_password}), 201)
    admin = anonymous.login(admin_email, admin_password)
    admin_me = expect(admin.get("/api/identity/v1/me"), 200)

    # 1. the admin submits example.com and validates it by DNS change (a public product
    #    needs a BR method: the operator's manual review counts for private ones only)
    validated = validate_by_dns(admin, dns, "example.com")
    assert validated["status"] == "validated" and validated["validated_until"]

    # 2. the admin deposits $1,000.00 with the settling test card
    before = expect(admin.get("/api/ledger/v1/balance"), 200)
    deposit = expect(admin.post("/api/ledger/v1/deposits", {
        "method": "card", "amount_cents": 100_000, "card": SETTLING_CARD}), 201)
    assert deposit["status"] == "settled"
    funded = expect(admin.get("/api/ledger/v1/balance"), 200)
    assert funded["available_cents"] == before["available_cents"] + 100_000

    # 3. the admin adds a limited user, who requests a certificate
    email = f"lee-{uuid.uuid4().hex[:8]}@example.com"
    limited_user = expect(admin.post("/api/identity/v1/users", {
        "email": email, "name": "Lee Park", "role": "limited", "unit_ids": [],
        "password": "lee-password-123"}), 201)
    lee = anonymous.login(email, "lee-password-123")
    products = expect(lee.get("/api/orders/v1/products"), 200)
    product = next(p for p in products["items"] if p["validation_level"] == "dv"
                   and not p["wildcard"])
    order = expect(lee.post("/api/orders/v1/orders", {
        "product": product["code"], "term_years": 1, "server_type": "nginx",
        "common_name": "www.example.com", "sans": [], "csr": p256_csr("www.example.com"),
        "notes": "for the new web front"}), 201)
    assert order["status"] == "pending_approval"
    assert order["price_cents"] == product["prices_cents"]["1"]

    # 4. the admin approves; the order is issued within seconds
    expect(admin.post(f"/api/orders/v1/orders/{order['id']}/approve", {}), 200)
    issued = wait_for(lambda: (lambda o: o if o["status"] in ("issued", "failed") else None)(
        expect(lee.get(f"/api/orders/v1/orders/{order['id']}"), 200)),
        timeout=60, message="the order to be issued")
    assert issued["status"] == "issued", issued
    assert issued["certificate"]["serial"]

    # 5. the chain verifies against the root
    chain = lee.get(f"/api/orders/v1/orders/{order['id']}/certificate?format=pem-chain")
    assert chain.status_code == 200, chain.text
    issuers = expect(lee.get("/api/ca/v1/issuers"), 200)["items"]
    roots = [i for i in issuers if i.get("kind") == "root" and i.get("hierarchy") == "public"]
    assert roots, issuers
    root_der = anonymous.get(f"/ca/issuers/{roots[0]['id']}.crt")
    assert root_der.status_code == 200
    verify_chain(chain.text, x509.load_der_x509_certificate(root_der.content))

    # 6. the balance fell by exactly the price, once the capture is booked
    final = wait_for(lambda: (lambda b: b if b["reserved_cents"] == 0 else None)(
        expect(admin.get("/api/ledger/v1/balance"), 200)), message="the capture")
    assert final["available_cents"] == funded["available_cents"] - product["prices_cents"]["1"]

    # 7. the audit log holds every step, with who and from where
    wanted = {
        ("orders.domain.submitted", admin_me["id"]),
        ("orders.domain.validated", None),
        ("ledger.deposit.settled", admin_me["id"]),
        ("identity.user.created", admin_me["id"]),
        ("orders.order.submitted", limited_user["id"]),
        ("orders.order.approved", admin_me["id"]),
        ("ledger.funds.reserved", None),
        ("ca_signer.certificate.sign", None),
        ("ca_signer.certificate.issued", None),
        ("orders.order.issued", None),
        ("ledger.funds.captured", None),
    }

    def audit_has_all() -> list[dict[str, Any]] | None:
        items = expect(admin.get("/api/audit/v1/entries?limit=500"), 200)["items"]
        seen = {(e["action"], e["user_id"]) for e in items} | {(e["action"], None) for e in items}
        return items if wanted <= seen else None

    entries = wait_for(audit_has_all, timeout=30, message="every step in the audit log")
    people = [e for e in entries if e["user_id"] in (admin_me["id"], limited_user["id"])]
    assert people and all(e["ip"] == CLIENT_IP for e in people), people
    assert all(e["user_name"] and e["description"] for e in entries)
    return {"order": issued, "entries": entries}


def verify_chain(pem_chain: str, root: x509.Certificate) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        certs = x509.load_pem_x509_certificates(pem_chain.encode())
        assert len(certs) >= 2, "the chain holds the leaf and its issuing CA"
        leaf, intermediates = certs[0], certs[1:]
        paths = {name: Path(tmp) / f"{name}.pem" for name in ("root", "chain", "leaf")}
        paths["root"].write_bytes(root.public_bytes(serialization.Encoding.PEM))
        paths["chain"].write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                            for c in intermediates))
        paths["leaf"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        result = subprocess.run(
            ["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(paths["root"]),
             "-untrusted", str(paths["chain"]), str(paths["leaf"])],
            capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
