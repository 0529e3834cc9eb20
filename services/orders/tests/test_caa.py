"""CAA (RFC 8659) against a real DNS server on loopback, and its effect on the saga."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from chancery_orders import caa

from .test_saga import SIGN, reserve, show

# name -> CAA records ("flags tag value"); names listed with no records exist but have no
# CAA; names in SERVFAIL answer SERVFAIL; anything else is NXDOMAIN.
ZONE: dict[str, list[str]] = {
    "example.com": [],
    "www.example.com": [],
    "ours.com": ['0 issue "chancery.example"'],
    "shop.ours.com": [],
    "theirs.com": ['0 issue "other-ca.example"', '0 iodef "mailto:sec@theirs.com"'],
    "params.com": ['0 issue "chancery.example; account=42; validationmethods=dns-01"'],
    "nobody.com": ['0 issue ";"'],
    "wild.com": ['0 issue "chancery.example"', '0 issuewild "other-ca.example"'],
    "wildok.com": ['0 issue "other-ca.example"', '0 issuewild "chancery.example"'],
    "critical.com": ['0 issue "chancery.example"', '128 tbs "unknown"'],
    "noncritical.com": ['0 issue "chancery.example"', '0 tbs "unknown"'],
    "iodefonly.com": ['0 iodef "mailto:sec@iodefonly.com"'],
}
SERVFAIL = {"broken.com"}


class LoopbackDns:
    """A tiny authoritative server on 127.0.0.1 (UDP) answering from ``ZONE``."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.port = self.socket.getsockname()[1]
        self.queries: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                wire, peer = self.socket.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.queries.append(name)
            if name in SERVFAIL:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif name not in ZONE:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.CAA and ZONE[name]:
                rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.CAA)
                for text in ZONE[name]:
                    rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CAA, text),
                              ttl=60)
                response.answer.append(rrset)
            self.socket.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.socket.close()


@pytest.fixture(scope="module")
def dns_server() -> Iterator[LoopbackDns]:
    server = LoopbackDns()
    yield server
    server.close()


def checker(server: LoopbackDns) -> caa.CaaChecker:
    return caa.CaaChecker(caa.CaaSettings(resolver="127.0.0.1", port=server.port,
                                          timeout_seconds=1.0))


@pytest.mark.parametrize(("name", "refusal"), [
    ("www.example.com", None),                      # no CAA anywhere
    ("shop.ours.com", None),                       # CAA at the parent names us
    ("a.b.shop.ours.com", None),                   # climbing past NXDOMAIN levels
    ("ours.com", None),
    ("theirs.com", "allows only other-ca.example"),
    ("deep.theirs.com", "allows only other-ca.example"),
    ("params.com", None),                          # parameters after ; are ignored
    ("nobody.com", "no CA"),                       # issue ";"
    ("*.wild.com", "allows only other-ca.example"),  # issuewild wins for a wildcard
    ("wild.com", None),                            # ... and is ignored for other names
    ("*.wildok.com", None),
    ("www.wildok.com", "allows only other-ca.example"),
    ("*.ours.com", None),                          # no issuewild: issue applies
    ("critical.com", "critical property 'tbs'"),
    ("noncritical.com", None),
    ("iodefonly.com", None),                       # a set with no issue restricts nothing
    ("broken.com", "SERVFAIL"),
    ("www.broken.com", "SERVFAIL"),
])
def test_caa_decides_by_the_first_set_found_climbing(dns_server, name, refusal):
    if refusal is None:
        checker(dns_server).check([name])
    else:
        with pytest.raises(caa.CaaRefused, match=refusal):
            checker(dns_server).check([name])


def test_a_timeout_refuses():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        settings = caa.CaaSettings(resolver="127.0.0.1", port=silent.getsockname()[1],
                                   timeout_seconds=0.3)
        with pytest.raises(caa.CaaRefused, match="timed out"):
            caa.CaaChecker(settings).check(["www.example.com"])
    finally:
        silent.close()


def test_every_name_is_checked_and_switching_off_checks_nothing(dns_server):
    with pytest.raises(caa.CaaRefused, match="theirs.com"):
        checker(dns_server).check(["ours.com", "theirs.com"])
    settings = caa.CaaSettings(check=False, resolver="127.0.0.1", port=dns_server.port)
    caa.CaaChecker(settings).check(["theirs.com"])


def test_issuer_domains_come_from_the_setting(dns_server):
    checker = caa.from_environment({"CHANCERY_CAA_ISSUER_DOMAINS": "x.example, Other-CA.example.",
                                     "CHANCERY_DNS_RESOLVER": "127.0.0.1",
                                     "CHANCERY_DNS_PORT": str(dns_server.port)})
    assert checker.settings.issuer_domains == ("x.example", "Other-CA.example.")
    checker.check(["theirs.com"])
    with pytest.raises(caa.CaaRefused):
        checker.check(["ours.com"])


@pytest.fixture
def caa_on(harness, dns_server):
    """The harness's service checks CAA against the loopback server."""
    switched_off = harness.service.caa
    harness.service.caa = caa.from_environment({
        "CHANCERY_DNS_RESOLVER": "127.0.0.1", "CHANCERY_DNS_PORT": str(dns_server.port),
        "CHANCERY_DNS_TIMEOUT_SECONDS": "1"})
    yield harness
    harness.service.caa = switched_off


def test_a_caa_refusal_fails_the_order_without_a_sign_command(caa_on, order_body):
    harness = caa_on
    harness.validate_domain("theirs.com")
    order = harness.client.post("/api/orders/v1/orders",
                                json=order_body(common_name="theirs.com", csr=_csr("theirs.com")),
                                headers=harness.headers("admin", user_id="u-admin")).json
    assert order["status"] == "approved", order

    handled, _ = reserve(harness, order)

    assert handled
    shown = show(harness, order["id"])
    assert shown["status"] == "failed"
    assert harness.outbox(SIGN) == []
    [failed] = harness.outbox("orders.order.failed")
    assert failed["data"]["order_id"] == order["id"]
    assert "CAA" in failed["data"]["reason"] and "other-ca.example" in failed["data"]["reason"]
    assert failed["correlation_id"] == order["id"]
    assert "other-ca.example" in shown["history"][-1]["details"]["reason"]


def test_a_caa_allowed_order_is_sent_to_signing(caa_on, order_body):
    harness = caa_on
    harness.validate_domain("ours.com")
    order = harness.client.post("/api/orders/v1/orders",
                                json=order_body(common_name="shop.ours.com",
                                                csr=_csr("shop.ours.com")),
                                headers=harness.headers("admin", user_id="u-admin")).json
    reserve(harness, order)
    shown = show(harness, order["id"])
    assert shown["status"] == "issuing"
    assert len(harness.outbox(SIGN)) == 1
    # the check that passed keeps its evidence: the records seen, where, from which resolver
    [checked] = [h for h in shown["history"] if h["action"] == "caa_checked"]
    [finding] = checked["details"]["names"]
    assert finding["name"] == "shop.ours.com" and finding["found_at"] == "ours.com"
    assert any("issue" in record and "chancery.example" in record
               for record in finding["records"])
    assert finding["outcome"].startswith("allowed: issue at ours.com names chancery.example")
    assert f"127.0.0.1:{caa_on.service.caa.resolver.port}" in checked["details"]["vantage"]
    assert checked["details"]["checked_at"]


def test_a_name_without_caa_is_recorded_as_allowed_by_absence(dns_server):
    [finding] = checker(dns_server).check(["www.example.com"])
    assert (finding.found_at, finding.records) == (None, [])
    assert finding.outcome.startswith("allowed: no CAA records")


def _csr(name: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    from .conftest import csr_pem
    return csr_pem(ec.generate_private_key(ec.SECP256R1()), name)


def test_a_caa_refused_reissue_keeps_the_current_certificate(caa_on, csr, self_signed,
                                                              monkeypatch):
    from .lifecycle_support import ORDERS, call, issued_order, show

    harness = caa_on
    order = issued_order(harness, csr, self_signed)  # example.com has no CAA yet
    monkeypatch.setitem(ZONE, "example.com", ['0 issue "other-ca.example"'])
    sent_before = len(harness.outbox(SIGN))

    answer = call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "admin", {"csr": csr})

    assert answer.status_code == 200, answer.json
    assert len(harness.outbox(SIGN)) == sent_before
    shown = show(harness, order["id"])
    assert shown["status"] == "issued" and shown["reissue_pending"] is False
    assert shown["certificate"] == order["certificate"]
    assert shown["history"][-1]["action"] == "reissue_failed"
    assert "other-ca.example" in shown["history"][-1]["details"]["reason"]
    [failed] = harness.outbox("orders.order.reissue_failed")
    assert failed["data"]["reason"].startswith("CAA: ")
    assert harness.outbox("orders.order.failed") == []
