"""Fixtures for the orders service: a migrated service on SQLite, tokens, CSRs, messages."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from chancery_orders.service import QUEUE, OrdersService
from chancery_orders.validation import DomainValidation, ValidationSettings
from chancery_shared.messaging.envelope import Actor, Context, Envelope, new_envelope
from chancery_shared.testing import TokenFactory, make_runtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

ACCOUNT = "acct-" + "1" * 31
OTHER_ACCOUNT = "acct-" + "2" * 31
UNIT_A = "unit-" + "a" * 31
UNIT_B = "unit-" + "b" * 31


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_pem(key: Any, common_name: str = "www.example.com") -> str:
    """A real PEM CSR signed by ``key`` (None as hash for Ed25519)."""
    algorithm = None if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) \
        else hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]),
                          critical=False)
           .sign(key, algorithm))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="session")
def csr(rsa_key: rsa.RSAPrivateKey) -> str:
    return csr_pem(rsa_key)


@pytest.fixture(scope="session")
def self_signed(ec_key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    """(leaf PEM, "issuing CA" PEM): two self-signed certificates standing in for a chain."""
    def make(name: str) -> str:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(ec_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + timedelta(days=30))
                .sign(ec_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    return make("www.example.com"), make("Test Issuing CA")


# --- a tiny authoritative-ish DNS server on loopback -----------------------------------


class FakeDns:
    """Answers from ``records``: name -> ("txt", [strings or [parts]]), ("cname", target),
    ("servfail",), ("silent",), ("garbage",); unknown names are NXDOMAIN."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[Any, ...]] = {}
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                data, peer = self.socket.recvfrom(4096)
            except OSError:
                return
            if self.stopped:  # close()'s wake-up call
                return
            try:
                reply = self._answer(data)
            except Exception:  # noqa: BLE001 - a test server ignores what it cannot parse
                continue
            if reply is not None:
                self.socket.sendto(reply, peer)

    def _answer(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        name = question.name.to_text(omit_final_dot=True).lower()
        record = self.records.get(name)
        if record is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif record[0] == "silent":
            return None
        elif record[0] == "garbage":
            return data[:2] + b"\x81\x80garbage that is no DNS message"
        elif record[0] == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            self._add(response, question.name, record, depth=0)
        return response.to_wire(max_size=65000)

    def _add(self, response: dns.message.Message, owner: dns.name.Name,
             record: tuple[Any, ...], depth: int) -> None:
        if record[0] == "cname":
            target = dns.name.from_text(record[1])
            response.answer.append(dns.rrset.from_text(owner, 60, "IN", "CNAME",
                                                       target.to_text()))
            follow = self.records.get(record[1].lower().rstrip("."))
            if follow and follow[0] in ("txt", "cname") and depth < 8:
                self._add(response, target, follow, depth + 1)
        elif record[0] == "txt":
            rdatas = []
            for value in record[1]:
                parts = value if isinstance(value, list) else [value]
                rdatas.append(dns.rdata.from_text(
                    dns.rdataclass.IN, dns.rdatatype.TXT,
                    " ".join(f'"{part}"' for part in parts)))
            response.answer.append(dns.rrset.from_rdata_list(owner, 60, rdatas))

    def close(self) -> None:
        """Stop the server thread, then close its socket: closing it under the thread
        would fail the thread's next ``sendto``."""
        self.stopped = True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"", ("127.0.0.1", self.port))
        self.thread.join(5)
        self.socket.close()



@pytest.fixture(scope="session")
def harness_dns() -> Iterator[FakeDns]:
    """The DNS server ``Harness.validate_domain`` publishes its TXT records on."""
    server = FakeDns()
    yield server
    server.close()


REVIEW = {"checked": "WHOIS registrant is the account's company; confirmed by phone with "
                     "the registrant", "reference": "https://tickets.example.net/T-1001"}


@dataclass
class Harness:
    """The orders service under test, and ways to drive it as people and as other services."""

    service: OrdersService
    client: Any
    tokens: TokenFactory
    dns: FakeDns

    def headers(self, role: str, *, account_id: str | None = ACCOUNT, user_id: str | None = None,
                name: str | None = None, units: tuple[str, ...] = ()) -> dict[str, str]:
        user_id = user_id or f"user-{role}-{uuid.uuid4().hex[:8]}"
        return self.tokens.headers(role=role, account_id=account_id, user_id=user_id,
                                   name=name or f"{role.title()} {user_id[-4:]}",
                                   unit_ids=units)

    def deliver(self, type_: str, data: dict[str, Any], *, account_id: str | None = ACCOUNT,
                source: str = "ledger", correlation_id: str | None = None,
                envelope: Envelope | None = None) -> tuple[bool, Envelope]:
        """Hand one message to the real consumer (inbox, handler, commit)."""
        envelope = envelope or new_envelope(
            type=type_, source=source,
            context=Context(actor=Actor.service(source), account_id=account_id,
                            correlation_id=correlation_id),
            subject_type="order", subject_id=str(data.get("order_id") or data.get("unit_id")
                                                 or data.get("user_id")),
            summary=f"test {type_}", data=data)
        consumer = self.consumers[QUEUE]
        return consumer.handle(envelope, consumer.handlers[type_]), envelope

    @property
    def consumers(self) -> dict[str, Any]:
        if not hasattr(self, "_consumers"):
            self._consumers = {c.queue: c for c in self.service.consumers()}
        return self._consumers

    def outbox(self, type_: str | None = None) -> list[dict[str, Any]]:
        table = self.service.messaging.outbox
        query = select(table.c.body).order_by(table.c.seq)
        if type_:
            query = query.where(table.c.type == type_)
        with self.service.engine.connect() as connection:
            return [json.loads(row[0]) for row in connection.execute(query)]

    def add_unit(self, unit_id: str, name: str, account_id: str = ACCOUNT) -> None:
        self.deliver("identity.unit.created", {"unit_id": unit_id, "name": name},
                     account_id=account_id, source="identity")

    def validate_domain(self, name: str, account_id: str = ACCOUNT, *,
                        method: str = "dns-txt") -> dict[str, Any]:
        """Submit ``name`` as an admin of the account and validate it: by ``dns-txt`` (the
        record published on the loopback DNS server, then checked: a BR method, good for
        every product) or by the operator's ``manual`` review (private products only)."""
        submitted = self.client.post("/api/orders/v1/domains",
                                     json={"name": name, "method": "dns-txt"},
                                     headers=self.headers("admin", account_id=account_id))
        assert submitted.status_code == 201, submitted.json
        domain = submitted.json
        if method == "manual":
            approved = self.client.post(f"/api/orders/v1/domains/{domain['id']}/approve",
                                        json=REVIEW,
                                        headers=self.headers("operator", account_id=None))
            assert approved.status_code == 200, approved.json
            return approved.json
        assert method == "dns-txt", method
        return self.check_by_dns(domain, account_id)

    def check_by_dns(self, domain: dict[str, Any], account_id: str = ACCOUNT) -> dict[str, Any]:
        """Publish ``domain``'s current token on the loopback DNS server and ask for the
        check (a first validation, or a new one after the token was spent)."""
        self.dns.records[f"_chancery-challenge.{domain['name']}"] = ("txt",
                                                                     [domain["token"]])
        configured = self.service.domain_validation
        self.service.domain_validation = DomainValidation(ValidationSettings(
            dns_resolver="127.0.0.1", dns_port=self.dns.port, dns_timeout_seconds=2.0,
            vantage="test-runner"))
        try:
            checked = self.client.post(f"/api/orders/v1/domains/{domain['id']}/check",
                                       headers=self.headers("admin", account_id=account_id))
        finally:
            self.service.domain_validation = configured
        assert checked.status_code == 200, checked.json
        assert checked.json["status"] == "validated", checked.json["last_attempt"]
        return checked.json

    def organization(self, account_id: str = ACCOUNT, *, validate: bool = True,
                     name: str = "Example Holdings LLC") -> dict[str, Any]:
        """Submit an organization as an admin of the account (and validate it as the
        operator unless ``validate`` is false)."""
        submitted = self.client.post("/api/orders/v1/organizations", json={
            "name": name, "country": "US", "state_or_province": "California",
            "locality": "San Francisco"}, headers=self.headers("admin", account_id=account_id))
        assert submitted.status_code == 201, submitted.json
        if not validate:
            return submitted.json
        approved = self.client.post(
            f"/api/orders/v1/organizations/{submitted.json['id']}/approve",
            json={"source": "government_agency", "checked": "California Secretary of "
                  "State business search: active, name and address match",
                  "reference": "https://tickets.example.net/T-2002"},
            headers=self.headers("operator", account_id=None))
        assert approved.status_code == 200, approved.json
        return approved.json


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once per run; each test starts from a copy (fast, isolated)."""
    folder = tmp_path_factory.mktemp("template")
    service = OrdersService(make_runtime(folder))
    service.migrate()
    service.dispose()
    return folder / "orders.db"


def _harness(folder: Path, migrated_database: Path, dns: FakeDns) -> Harness:
    tokens = TokenFactory()
    shutil.copyfile(migrated_database, folder / "orders.db")
    # CAA is checked against a DNS server on loopback in test_caa.py; elsewhere it is off
    service = OrdersService(make_runtime(folder, tokens, CHANCERY_CAA_CHECK="false"))
    return Harness(service=service, client=service.create_app().test_client(), tokens=tokens,
                   dns=dns)


@pytest.fixture
def harness(tmp_path: Path, migrated_database: Path, harness_dns: FakeDns) -> Harness:
    """A fresh service and database for one test."""
    harness = _harness(tmp_path, migrated_database, harness_dns)
    yield harness
    harness.service.dispose()


@pytest.fixture(scope="module")
def shared_harness(tmp_path_factory: pytest.TempPathFactory, migrated_database: Path,
                   harness_dns: FakeDns) -> Harness:
    """One service for a module's refusal tables: each case asserts it wrote nothing."""
    harness = _harness(tmp_path_factory.mktemp("shared"), migrated_database, harness_dns)
    yield harness
    harness.service.dispose()


@pytest.fixture
def order_body(csr: str) -> Callable[..., dict[str, Any]]:
    def make(**overrides: Any) -> dict[str, Any]:
        body = {"product": "ssl_dv", "term_years": 1, "server_type": "nginx",
                "common_name": "www.example.com", "sans": [], "csr": csr}
        body.update(overrides)
        return body

    return make
