"""The pure rules: name normalisation, the coverage rule and the validation reuse schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chancery_orders import names
from chancery_orders.compliance import ORGANIZATION, reusable_until
from chancery_orders.model import Domain, domain_covers, uncovered_names


@pytest.mark.parametrize(("raw", "expected"), [
    ("WWW.Example.COM", "www.example.com"),
    ("www.example.com.", "www.example.com"),
    ("  shop.example.co.uk ", "shop.example.co.uk"),
    ("bücher.de", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("*.Example.com", "*.example.com"),
])
def test_names_are_normalised_to_lower_case_punycode_without_the_trailing_dot(raw, expected):
    assert names.normalise(raw, allow_wildcard=True) == expected


@pytest.mark.parametrize(("raw", "reason"), [
    ("10.0.0.1", "IP address"),
    ("2001:db8::1", "IP address"),
    ("intranet", "single-label"),
    ("localhost", "single-label"),
    ("printer.local", "reserved or internal"),
    ("app.test", "reserved or internal"),
    ("www.example", "reserved or internal"),
    ("x.invalid", "reserved or internal"),
    ("db.internal", "reserved or internal"),
    ("host.corp", "reserved or internal"),
    ("host.notatld", "not under a public top-level domain"),
    ("co.uk", "public suffix"),
    ("under_score.example.com", "not a valid host name"),
    ("-dash.example.com", "not a valid host name"),
    ("a..example.com", "not a valid host name"),
    ("w*w.example.com", "wildcard must be the whole leftmost label"),
    ("*.example.com", "not allowed here"),
    ("*.co.uk", "public suffix"),
])
def test_names_that_are_not_public_registrable_names_are_refused(raw, reason):
    with pytest.raises(names.NameRejected, match=reason):
        names.normalise(raw, allow_wildcard=raw != "*.example.com")


def test_registrable_domain_is_one_label_under_the_public_suffix():
    assert names.registrable_domain("a.b.shop.example.co.uk") == "example.co.uk"
    assert names.registrable_domain("*.www.example.com") == "example.com"


NOW = datetime(2026, 11, 26, tzinfo=UTC)


def _domain(name: str, status: str = "validated", until: datetime | None = None) -> Domain:
    """A domain validated by DNS change (BR 3.2.2.4.7): the broadest public scope."""
    return Domain(name=name, status=status, validated_with="dns-txt",
                  validated_until=until if until is not None else NOW + timedelta(days=10))


@pytest.mark.parametrize(("domain", "name", "covered"), [
    (_domain("example.com"), "example.com", True),
    (_domain("example.com"), "www.example.com", True),
    (_domain("example.com"), "a.b.example.com", True),
    (_domain("example.com"), "*.example.com", True),
    (_domain("example.com"), "*.shop.example.com", True),
    (_domain("example.com"), "badexample.com", False),
    (_domain("example.com"), "example.com.evil.net", False),
    (_domain("shop.example.com"), "example.com", False),
    (_domain("shop.example.com"), "*.shop.example.com", True),
    (_domain("example.com", status="pending"), "www.example.com", False),
    (_domain("example.com", status="failed"), "www.example.com", False),
    (_domain("example.com", until=NOW), "www.example.com", False),
    (_domain("example.com", until=NOW - timedelta(days=1)), "example.com", False),
])
def test_a_validated_domain_covers_itself_and_everything_under_it_until_it_expires(
        domain, name, covered):
    assert domain_covers(domain, name, NOW, public=True) is covered
    assert domain_covers(domain, name, NOW, public=False) is covered


def test_uncovered_names_keeps_the_order_given():
    domains = [_domain("example.com"), _domain("other.org", status="pending")]
    assert uncovered_names(["x.other.org", "www.example.com", "a.net"], domains, NOW,
                           public=True) == ["x.other.org", "a.net"]


US = timedelta(microseconds=1)


@pytest.mark.parametrize(("validated_at", "until"), [
    # the 200-day rule, long before the next step
    (datetime(2026, 3, 14, 23, 59, tzinfo=UTC), datetime(2026, 9, 30, 23, 59, tzinfo=UTC) + US),
    # 2026-12-06 + 200 days would be 2027-06-24, but from 2027-03-15 only 100 days count
    (datetime(2026, 12, 6, tzinfo=UTC), datetime(2027, 3, 16, tzinfo=UTC) + US),
    (datetime(2027, 3, 14, tzinfo=UTC), datetime(2027, 6, 22, tzinfo=UTC) + US),
    # already more than 10 days old when the 10-day rule starts: dead on that day
    (datetime(2029, 3, 1, tzinfo=UTC), datetime(2029, 3, 15, tzinfo=UTC)),
    (datetime(2029, 3, 15, tzinfo=UTC), datetime(2029, 3, 25, tzinfo=UTC) + US),
])
def test_reusable_until_is_counted_at_the_signing_day(validated_at, until):
    assert reusable_until(validated_at) == until


def test_organization_data_follows_its_own_schedule():
    validated = datetime(2026, 12, 6, tzinfo=UTC)
    assert reusable_until(validated, ORGANIZATION) == validated + timedelta(days=398) + US
