"""Automated domain validation against a real DNS server and a real HTTP server on
loopback: outcomes, evidence, single-use tokens, coverage, expiry and re-checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from chancery_orders.compliance import reusable_until
from chancery_orders.model import (
    VALIDATION_METHODS,
    Domain,
    covered_only_by_review,
    domain_covers,
    uncovered_names,
)
from chancery_orders.validation import (
    MAX_HTTP_BYTES,
    DnsTxtChecker,
    DomainValidation,
    HttpFileChecker,
    ValidationSettings,
)
from chancery_shared.messaging.envelope import utcnow

from .conftest import ACCOUNT, OTHER_ACCOUNT, REVIEW, FakeDns

DOMAINS = "/api/orders/v1/domains"
DNS_TIMEOUT = 0.5

# --- a real HTTP server on loopback ----------------------------------------------------


@dataclass
class FakeWeb:
    """Serves ``pages``: path -> (status, headers, body); remembers the Host headers."""

    pages: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    server: Any = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> FakeWeb:
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                web.hosts.append(self.headers.get("Host", ""))
                status, headers, body = web.pages.get(self.path, (404, {}, b"not found"))
                if status == 0:  # a server that accepts and never answers in time
                    time.sleep(1.0)
                    status = 200
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def dns_server() -> Iterator[FakeDns]:
    server = FakeDns()
    yield server
    server.close()


@pytest.fixture(scope="module")
def web_server() -> Iterator[FakeWeb]:
    server = FakeWeb().start()
    yield server
    server.close()


def loopback_settings(dns_server: FakeDns, web_server: FakeWeb) -> ValidationSettings:
    return ValidationSettings(dns_resolver="127.0.0.1", dns_port=dns_server.port,
                              dns_timeout_seconds=DNS_TIMEOUT, http_timeout_seconds=2.0,
                              http_port=web_server.port, http_host="127.0.0.1",
                              vantage="test-runner")


@pytest.fixture
def checks(shared_harness, dns_server, web_server):
    """The shared service checking against the loopback servers (records reset)."""
    dns_server.records.clear()
    web_server.pages.clear()
    shared_harness.service.domain_validation = DomainValidation(
        loopback_settings(dns_server, web_server))
    return shared_harness


@pytest.fixture
def fresh(harness, dns_server, web_server):
    """A fresh service checking against the loopback servers (records reset)."""
    dns_server.records.clear()
    web_server.pages.clear()
    harness.service.domain_validation = DomainValidation(
        loopback_settings(dns_server, web_server))
    return harness


_numbers = iter(range(10_000))


def submit(harness, method: str, name: str | None = None) -> dict[str, Any]:
    name = name or f"case{next(_numbers)}.example.com"
    answer = harness.client.post(DOMAINS, json={"name": name, "method": method},
                                 headers=harness.headers("admin"))
    assert answer.status_code == 201, answer.json
    return answer.json


def check(harness, domain_id: str, role: str = "admin", **kwargs: Any) -> Any:
    return harness.client.post(f"{DOMAINS}/{domain_id}/check",
                               headers=harness.headers(role, **kwargs))


def well_known(domain: dict[str, Any]) -> str:
    return domain["instructions"]["url"].split(domain["name"], 1)[1]


# --- outcomes, table-driven ------------------------------------------------------------

Setup = Callable[[FakeDns, FakeWeb, dict[str, Any]], None]


def txt_at_challenge(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("txt", ["other", d["token"]])


def txt_at_domain(dns_, web, d):
    dns_.records[d["name"]] = ("txt", ["v=spf1 -all", d["token"]])


def txt_in_parts(dns_, web, d):
    token = d["token"]
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("txt", [[token[:10], token[10:]]])


def txt_via_cname_chain(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("cname", "Hop.Validation.Example.NET.")
    dns_.records["hop.validation.example.net"] = ("cname", "final.validation.example.net")
    dns_.records["final.validation.example.net"] = ("txt", [d["token"]])


def txt_wrong_token(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("txt", ["not-the-token"])


def txt_token_in_different_case(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("txt", [d["token"].swapcase()])


def txt_token_as_a_substring(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("txt", [f"x{d['token']}x"])


def txt_nothing(dns_, web, d):
    pass


def txt_no_answer(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("cname", "elsewhere.example.net")
    dns_.records["elsewhere.example.net"] = ("cname", "nowhere.example.net")
    dns_.records[d["name"]] = ("txt", [])


def txt_servfail(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("servfail",)
    dns_.records[d["name"]] = ("servfail",)


def txt_silent(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("silent",)
    dns_.records[d["name"]] = ("silent",)


def txt_garbage(dns_, web, d):
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("garbage",)
    dns_.records[d["name"]] = ("garbage",)


def txt_oversized(dns_, web, d):
    filler = [f"{n:03d}{'x' * 247}" for n in range(20)]  # distinct: an RRset has no twins
    dns_.records[f"_chancery-challenge.{d['name']}"] = ("txt", [*filler, d["token"]])


def file_served(dns_, web, d):
    web.pages[well_known(d)] = (200, {"Content-Type": "text/plain"},
                                f"{d['token']}\r\n".encode())


def file_after_a_redirect(dns_, web, d):
    web.pages[well_known(d)] = (301, {"Location": "/.well-known/pki-validation/moved"}, b"")
    web.pages["/.well-known/pki-validation/moved"] = (200, {}, d["token"].encode())


def file_wrong_token(dns_, web, d):
    web.pages[well_known(d)] = (200, {}, b"somebody else's token")


def file_missing(dns_, web, d):
    pass


def file_oversized(dns_, web, d):
    web.pages[well_known(d)] = (200, {}, d["token"].encode() + b" " * (MAX_HTTP_BYTES * 4))


def file_redirect_to_another_port(dns_, web, d):
    web.pages[well_known(d)] = (302, {"Location": f"http://{d['name']}:8080/x"}, b"")


def file_redirect_to_ftp(dns_, web, d):
    web.pages[well_known(d)] = (302, {"Location": f"ftp://{d['name']}/x"}, b"")


def file_redirect_loop(dns_, web, d):
    web.pages[well_known(d)] = (302, {"Location": well_known(d)}, b"")


OUTCOMES = [
    # (method, setup, validated, what the outcome says)
    ("dns-txt", txt_at_challenge, True, "validated"),
    ("dns-txt", txt_at_domain, True, "validated"),
    ("dns-txt", txt_in_parts, True, "validated"),
    ("dns-txt", txt_via_cname_chain, True, "validated"),
    ("dns-txt", txt_wrong_token, False, "no TXT string equals the token"),
    ("dns-txt", txt_token_in_different_case, False, "no TXT string equals the token"),
    ("dns-txt", txt_token_as_a_substring, False, "no TXT string equals the token"),
    ("dns-txt", txt_nothing, False, "no such name (NXDOMAIN)"),
    ("dns-txt", txt_no_answer, False, "no TXT record"),
    ("dns-txt", txt_servfail, False, "the resolver failed (SERVFAIL"),
    ("dns-txt", txt_silent, False, "(timeout)"),
    ("dns-txt", txt_garbage, False, "failed: _chancery-challenge."),
    ("dns-txt", txt_oversized, False, "TXT answer too large"),
    ("http-file", file_served, True, "validated"),
    ("http-file", file_after_a_redirect, True, "validated"),
    ("http-file", file_wrong_token, False, "the file does not hold the token"),
    ("http-file", file_missing, False, "HTTP 404"),
    ("http-file", file_oversized, False, f"larger than {MAX_HTTP_BYTES} bytes"),
    ("http-file", file_redirect_to_another_port, False, "port 8080 (only 80 and 443"),
    ("http-file", file_redirect_to_ftp, False, "scheme other than http or https"),
    ("http-file", file_redirect_loop, False, "more than 3 redirects"),
]


@pytest.mark.parametrize(("method", "setup", "validated", "says"), OUTCOMES,
                         ids=[row[1].__name__ for row in OUTCOMES])
def test_a_check_gives_a_clear_outcome_and_keeps_the_evidence(checks, dns_server, web_server,
                                                              method, setup, validated, says):
    domain = submit(checks, method)
    setup(dns_server, web_server, domain)

    answer = check(checks, domain["id"])

    assert answer.status_code == 200, answer.json
    attempt = answer.json["last_attempt"]
    assert attempt["validated"] is validated
    assert says in attempt["outcome"]
    assert answer.json["status"] == ("validated" if validated else "failed")
    assert attempt["token"] == domain["token"]
    assert attempt["trigger"] == "on_demand"
    assert "test-runner" in attempt["vantage"]
    if method == "dns-txt":
        assert attempt["queried"].startswith(f"_chancery-challenge.{domain['name']}")
        assert f"127.0.0.1:{dns_server.port}" in attempt["vantage"]
    else:
        assert attempt["queried"].startswith(domain["instructions"]["url"])
        assert web_server.hosts[-1] == domain["name"]  # sent to 127.0.0.1 as the domain
    assert len(attempt["answer"]) <= 4096
    stored = checks.client.get(f"{DOMAINS}/{domain['id']}/attempts",
                               headers=checks.headers("admin")).json["items"]
    assert stored[0] == attempt
    event_type = "orders.domain.validated" if validated else "orders.domain.failed"
    [event] = [e for e in checks.outbox(event_type) if e["subject"]["id"] == domain["id"]]
    assert method in event["summary"] and domain["name"] in event["summary"]
    if not validated:
        assert says in event["summary"]


def test_a_cname_chain_is_shown_in_the_evidence(checks, dns_server, web_server):
    domain = submit(checks, "dns-txt")
    txt_via_cname_chain(dns_server, web_server, domain)

    attempt = check(checks, domain["id"]).json["last_attempt"]

    # the name as the server wrote it (names compare case-insensitively)
    assert "via cname to final.validation.example.net" in attempt["answer"].lower()
    assert domain["token"] in attempt["answer"]


def test_the_domain_name_is_looked_up_case_insensitively(checks, dns_server):
    domain = submit(checks, "dns-txt")
    dns_server.records[f"_chancery-challenge.{domain['name']}"] = ("cname",
                                                                   "UPPER.EXAMPLE.NET.")
    dns_server.records["upper.example.net"] = ("txt", [domain["token"]])
    assert check(checks, domain["id"]).json["status"] == "validated"


def test_a_web_server_too_slow_to_answer_is_a_timeout(dns_server, web_server):
    settings = loopback_settings(dns_server, web_server)
    checker = HttpFileChecker(ValidationSettings(**{**settings.__dict__,
                                                    "http_timeout_seconds": 0.3}))
    domain = Domain(id="slow", name="slow.example.com", method="http-file", token="t")
    web_server.pages[f"/.well-known/pki-validation/{domain.http_file_name}"] = (0, {}, b"t")

    finding = checker.check(domain, "t")

    assert not finding.validated
    assert "(timeout)" in finding.outcome


def test_the_system_resolver_is_the_default():
    checker = DnsTxtChecker(ValidationSettings(vantage="here"))
    assert checker._resolver().nameservers  # from /etc/resolv.conf
    assert "system resolver" in checker.vantage


# --- the endpoint, tokens and evidence --------------------------------------------------


def test_a_validated_check_spends_the_token_and_validates_for_the_reuse_period(fresh,
                                                                                dns_server):
    domain = submit(fresh, "dns-txt", "example.com")
    txt_at_challenge(dns_server, None, domain)

    before = utcnow()
    answer = check(fresh, domain["id"], role="unit_admin").json

    assert answer["status"] == "validated"
    assert answer["validated_with"] == "dns-txt"
    until = datetime.fromisoformat(answer["validated_until"])
    # reusable while a certificate signed then may rest on it (BR 4.2.1 at signing)
    assert reusable_until(before) <= until <= reusable_until(utcnow())
    assert answer["token"] != domain["token"]  # spent: the next validation needs a new one
    assert answer["instructions"]["record_value"] == answer["token"]
    assert answer["last_attempt"]["token"] == domain["token"]
    # the old record is still published: checking again finds no current token
    again = check(fresh, domain["id"]).json
    assert again["last_attempt"]["validated"] is False
    assert again["status"] == "validated"  # a failed re-check does not undo a validation
    assert again["validated_until"] == answer["validated_until"]
    attempts = fresh.client.get(f"{DOMAINS}/{domain['id']}/attempts",
                                headers=fresh.headers("admin")).json["items"]
    assert [a["validated"] for a in attempts] == [False, True]  # newest first


def test_a_manual_review_leaves_the_token_for_a_br_method_which_then_replaces_it(
        fresh, dns_server):
    """The token belongs to the BR methods: after a review (private products only) the
    record the account published still validates the domain for public products."""
    domain = submit(fresh, "dns-txt")
    approved = fresh.client.post(f"{DOMAINS}/{domain['id']}/approve", json=REVIEW,
                                 headers=fresh.headers("operator", account_id=None)).json
    assert approved["validated_with"] == "manual"
    assert approved["token"] == domain["token"]
    txt_at_challenge(dns_server, None, domain)

    checked = check(fresh, domain["id"]).json

    assert checked["validated_with"] == "dns-txt"
    assert checked["coverage"]["public"] is True
    assert checked["token"] != domain["token"]  # spent by the check
    attempts = fresh.client.get(f"{DOMAINS}/{domain['id']}/attempts",
                                headers=fresh.headers("admin")).json["items"]
    assert [a["method"] for a in attempts] == ["dns-txt", "manual"]


def test_a_manual_review_cannot_replace_a_current_br_validation(fresh, dns_server):
    domain = submit(fresh, "dns-txt")
    txt_at_challenge(dns_server, None, domain)
    assert check(fresh, domain["id"]).json["validated_with"] == "dns-txt"

    answer = fresh.client.post(f"{DOMAINS}/{domain['id']}/approve", json=REVIEW,
                               headers=fresh.headers("operator", account_id=None))

    assert answer.status_code == 409
    assert answer.json["code"] == "invalid_domain_state"
    assert "covers private products too" in answer.json["detail"]
    shown = fresh.client.get(f"{DOMAINS}/{domain['id']}", headers=fresh.headers("admin")).json
    assert shown["validated_with"] == "dns-txt"


def test_another_accounts_domain_cannot_be_checked(fresh):
    domain = submit(fresh, "dns-txt")
    other = check(fresh, domain["id"], account_id=OTHER_ACCOUNT)
    assert other.status_code == 404
    attempts = fresh.client.get(f"{DOMAINS}/{domain['id']}/attempts",
                                headers=fresh.headers("admin", account_id=OTHER_ACCOUNT))
    assert attempts.status_code == 404
    assert check(fresh, "no-such-domain").status_code == 404


@pytest.mark.parametrize("role", ["operator", "limited", "finance"])
def test_only_account_administrators_ask_for_checks(fresh, role):
    domain = submit(fresh, "dns-txt")
    answer = check(fresh, domain["id"], role=role,
                   account_id=None if role == "operator" else ACCOUNT)
    assert answer.status_code == 403
    assert answer.json["missing_permission"] == "manage_domains"
    assert fresh.outbox("orders.domain.failed") == []


# --- coverage: the scope of each method (model.VALIDATION_METHODS) ----------------------

COVERAGE = {
    # BR 3.2.2.4.7 DNS Change: the FQDN, every name under it, wildcards included
    "dns-txt": [("example.com", True), ("www.example.com", True), ("a.b.example.com", True),
                ("*.example.com", True), ("*.shop.example.com", True),
                ("badexample.com", False), ("example.org", False)],
    # BR 3.2.2.4.18 Agreed-Upon Change to Website v2: the exact FQDN only
    "http-file": [("example.com", True), ("www.example.com", False),
                  ("*.example.com", False), ("example.org", False)],
    # the operator's review: the name, names under it and wildcards, for private products
    "manual": [("example.com", True), ("www.example.com", True), ("*.example.com", True),
               ("badexample.com", False)],
}
COUNTS_FOR_PUBLIC = {"dns-txt": True, "http-file": True, "manual": False}


def _validated(method: str | None, name: str = "example.com") -> Domain:
    now = utcnow()
    return Domain(name=name, status="validated", validated_with=method,
                  validated_until=now + timedelta(days=1))


def test_every_method_of_the_rule_table_has_its_coverage_test():
    assert set(VALIDATION_METHODS) == set(COVERAGE) == set(COUNTS_FOR_PUBLIC)
    assert VALIDATION_METHODS["dns-txt"].br_section == "3.2.2.4.7"
    assert VALIDATION_METHODS["http-file"].br_section == "3.2.2.4.18"
    assert VALIDATION_METHODS["manual"].br_section is None


@pytest.mark.parametrize(("name", "covered"), COVERAGE["dns-txt"])
def test_a_dns_change_covers_the_name_its_subdomains_and_wildcards(name, covered):
    for public in (True, False):
        assert domain_covers(_validated("dns-txt"), name, utcnow(), public=public) is covered


@pytest.mark.parametrize(("name", "covered"), COVERAGE["http-file"])
def test_a_website_change_covers_the_exact_name_only(name, covered):
    for public in (True, False):
        assert domain_covers(_validated("http-file"), name, utcnow(), public=public) is covered


@pytest.mark.parametrize(("name", "covered"), COVERAGE["manual"])
def test_a_manual_review_covers_names_for_private_products_only(name, covered):
    assert domain_covers(_validated("manual"), name, utcnow(), public=False) is covered
    assert domain_covers(_validated("manual"), name, utcnow(), public=True) is False


@pytest.mark.parametrize("method", [None, "", "email", "legacy"])
def test_a_validation_by_an_unknown_method_covers_nothing(method):
    for public in (True, False):
        assert domain_covers(_validated(method), "example.com", utcnow(),
                             public=public) is False


def test_a_manual_review_does_not_count_for_a_public_product_beside_a_br_method():
    now = utcnow()
    reviewed, checked = _validated("manual"), _validated("http-file", "www.example.com")
    names = ["www.example.com", "shop.example.com", "*.example.com"]
    assert uncovered_names(names, [reviewed, checked], now, public=True) == [
        "shop.example.com", "*.example.com"]
    assert uncovered_names(names, [reviewed, checked], now, public=False) == []
    assert covered_only_by_review(names, [reviewed, checked], now) == [
        "shop.example.com", "*.example.com"]


@pytest.mark.parametrize("status", ["pending", "failed", "expired"])
def test_a_domain_not_validated_covers_nothing(status):
    now = utcnow()
    domain = Domain(name="example.com", status=status, validated_with="dns-txt",
                    validated_until=now + timedelta(days=1))
    assert domain_covers(domain, "example.com", now, public=False) is False


def test_a_validation_past_its_end_covers_nothing():
    now = utcnow()
    domain = Domain(name="example.com", status="validated", validated_with="dns-txt",
                    validated_until=now)
    assert domain_covers(domain, "example.com", now, public=False) is False


# --- the scheduled pass -----------------------------------------------------------------


def test_the_job_moves_a_validation_past_its_end_to_expired_with_an_event(fresh):
    domain = fresh.validate_domain("example.com")
    until = datetime.fromisoformat(domain["validated_until"])

    assert fresh.service.run_domain_checks(now=until - timedelta(seconds=1)).expired == []
    run = fresh.service.run_domain_checks(now=until)

    assert run.expired == [domain["id"]]
    with fresh.service.session_factory() as session:
        assert session.get(Domain, domain["id"]).status == "expired"
    [event] = fresh.outbox("orders.domain.expired")
    assert event["subject"]["id"] == domain["id"]
    assert "example.com" in event["summary"] and "ended" in event["summary"]
    assert fresh.service.run_domain_checks(now=until + timedelta(days=1)).expired == []


def test_the_job_validates_a_pending_domain_once_the_token_is_published(fresh, dns_server):
    domain = submit(fresh, "dns-txt")
    now = utcnow()
    first = fresh.service.run_domain_checks(now=now)
    assert first.checked == [domain["id"]] and first.validated == []
    txt_at_challenge(dns_server, None, domain)

    second = fresh.service.run_domain_checks(now=now + timedelta(minutes=5))

    assert second.validated == [domain["id"]]
    shown = fresh.client.get(f"{DOMAINS}/{domain['id']}", headers=fresh.headers("admin")).json
    assert shown["status"] == "validated"
    attempts = fresh.client.get(f"{DOMAINS}/{domain['id']}/attempts",
                                headers=fresh.headers("admin")).json["items"]
    assert [(a["trigger"], a["validated"]) for a in attempts] == [("scheduled", True),
                                                                  ("scheduled", False)]
    [event] = fresh.outbox("orders.domain.validated")
    assert event["actor"] == {"system": "orders"}
    assert "scheduled re-check" in event["summary"]


def test_the_job_stops_checking_a_pending_domain_thirty_days_after_submission(fresh):
    domain = submit(fresh, "dns-txt")
    created = datetime.fromisoformat(domain["created_at"])
    assert fresh.service.run_domain_checks(
        now=created + timedelta(days=30, seconds=1)).checked == []


def test_the_job_rechecks_a_validation_before_it_ends_and_extends_it(fresh, dns_server,
                                                                     web_server):
    domain = submit(fresh, "http-file", "shop.example.com")
    file_served(dns_server, web_server, domain)
    validated = check(fresh, domain["id"]).json
    until = datetime.fromisoformat(validated["validated_until"])
    # not yet due 31 days before the end
    assert fresh.service.run_domain_checks(now=until - timedelta(days=31)).checked == []
    file_served(dns_server, web_server, validated)  # the customer publishes the new token

    later = until - timedelta(days=10)
    run = fresh.service.run_domain_checks(now=later)

    assert run.validated == [domain["id"]]
    shown = fresh.client.get(f"{DOMAINS}/{domain['id']}", headers=fresh.headers("admin")).json
    assert datetime.fromisoformat(shown["validated_until"]) > until
    assert shown["validated_with"] == "http-file"


def test_a_failed_recheck_before_the_end_keeps_the_validation_quietly(fresh, dns_server):
    domain = submit(fresh, "dns-txt")
    txt_at_challenge(dns_server, None, domain)
    validated = check(fresh, domain["id"]).json
    until = datetime.fromisoformat(validated["validated_until"])

    run = fresh.service.run_domain_checks(now=until - timedelta(days=5))

    assert run.checked == [domain["id"]] and run.validated == []
    shown = fresh.client.get(f"{DOMAINS}/{domain['id']}", headers=fresh.headers("admin")).json
    assert shown["status"] == "validated"
    assert shown["validated_until"] == validated["validated_until"]
    assert fresh.outbox("orders.domain.failed") == []


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "10.1.2.3", "169.254.169.254",
                                  "192.168.0.1", "[::1]", "no-such-name.invalid"])
def test_the_http_check_never_fetches_from_a_non_public_address(name):
    """Without the test override, a domain or a redirect naming an internal address is
    refused before any connection (the check must not read the CA's own network)."""
    checker = HttpFileChecker(ValidationSettings(vantage="here", http_timeout_seconds=0.5))

    refusal = checker._connect_url(f"http://{name}/.well-known/pki-validation/x.txt")

    assert isinstance(refusal, str)
    assert "not a public address" in refusal or "does not resolve" in refusal


def test_a_domain_on_an_internal_address_fails_its_http_check_without_a_fetch():
    checker = HttpFileChecker(ValidationSettings(vantage="here", http_timeout_seconds=0.5))
    domain = Domain(id="l", name="localhost", method="http-file", token="t")

    finding = checker.check(domain, "t")

    assert not finding.validated
    assert "localhost resolves to" in finding.outcome
    assert "not a public address" in finding.outcome
    assert finding.answer == ""  # nothing was fetched


def test_a_public_address_is_connected_to_directly_over_http():
    checker = HttpFileChecker(ValidationSettings(vantage="here"))
    assert checker._connect_url("http://8.8.8.8/x") == ("http://8.8.8.8:80/x", "8.8.8.8")
    assert checker._connect_url("https://8.8.8.8/x") == ("https://8.8.8.8:443/x", "8.8.8.8")
