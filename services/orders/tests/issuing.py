"""Helpers for the inventory, seal, download and notice tests: orders taken through the
real saga (ledger's reservation, ca-signer's certificate) with chosen validity dates."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from chancery_shared.messaging.envelope import isoformat
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from .conftest import ACCOUNT, csr_pem

ORDERS = "/api/orders/v1/orders"
SIGN = "ca_signer.certificate.sign"
_serials = itertools.count(0x7F0000)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def certificate_pem(key: Any, common_name: str, *, organization: str | None = None,
                    not_before: datetime | None = None,
                    not_after: datetime | None = None) -> str:
    """A self-signed stand-in for what ca-signer issues (subject CN, and O for OV)."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name.removeprefix("*."))]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attributes)
    not_before = not_before or datetime.now(UTC) - timedelta(days=1)
    not_after = not_after or not_before + timedelta(days=90)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def place(harness: Any, key: Any, *, role: str = "admin", common_name: str = "www.example.com",
          sans: tuple[str, ...] = (), product: str = "ssl_dv", server_type: str = "nginx",
          unit_id: str | None = None, term_years: int = 1, **who: Any) -> dict[str, Any]:
    """POST /orders with a CSR for ``common_name``; the order as answered (201)."""
    body = {"product": product, "term_years": term_years, "server_type": server_type,
            "common_name": common_name, "sans": list(sans),
            "csr": csr_pem(key, common_name), "unit_id": unit_id}
    if "_ov" in product or "_ev" in product:
        body["organization_id"] = harness.organization(who.get("account_id", ACCOUNT))["id"]
    answer = harness.client.post(ORDERS, json=body, headers=harness.headers(role, **who))
    assert answer.status_code == 201, answer.json
    return answer.json


def issue(harness: Any, order: dict[str, Any], *, not_before: datetime, not_after: datetime,
          leaf_pem: str, chain_pem: str = "", serial: str | None = None,
          account_id: str = ACCOUNT) -> str:
    """ledger reserves the price, ca-signer issues a certificate valid ``not_before`` to
    ``not_after``: the order becomes issued. Returns the serial."""
    assert order["status"] == "approved", order
    harness.deliver("ledger.funds.reserved",
                    {"order_id": order["id"], "amount_cents": order["price_cents"],
                     "available_cents": 0}, account_id=account_id, correlation_id=order["id"])
    [command] = [c for c in harness.outbox(SIGN) if c["data"]["order_id"] == order["id"]]
    serial = serial or format(next(_serials), "x")
    harness.deliver("ca_signer.certificate.issued", {
        "order_id": order["id"], "issuance_id": command["data"]["issuance_id"],
        "serial": serial, "issuer_id": "issuer-1", "not_before": isoformat(not_before),
        "not_after": isoformat(not_after), "sans": command["data"]["sans"],
        "certificate_pem": leaf_pem, "chain_pem": chain_pem},
        source="ca_signer", account_id=account_id, correlation_id=order["id"])
    return serial
