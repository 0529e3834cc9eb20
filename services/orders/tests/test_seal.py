"""The public site seal: only for a live certificate, safe SVG, cacheable, revealing nothing."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from chancery_orders.model import Certificate, Order
from sqlalchemy import select

from .issuing import ORDERS, certificate_pem, issue, place

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime.now(UTC)


def seal_url(order_id: str) -> str:
    return f"{ORDERS}/{order_id}/seal.svg"


@pytest.fixture(scope="module")
def harness(shared_harness):
    """One service for the module: every test makes its own order in it."""
    shared_harness.validate_domain("example.com")
    return shared_harness


def issued_order(harness, key, *, product="ssl_dv", organization=None,
                 common_name="www.example.com", not_before=None, not_after=None):
    order = place(harness, key, product=product, common_name=common_name)
    not_before = not_before or NOW - timedelta(days=1)
    not_after = not_after or NOW + timedelta(days=90)
    leaf = certificate_pem(key, common_name, organization=organization)
    issue(harness, order, not_before=not_before, not_after=not_after, leaf_pem=leaf)
    return order


def texts(svg: ET.Element) -> list[str]:
    return [element.text or "" for element in svg.iter(f"{SVG}text")]


def test_the_seal_of_a_live_dv_certificate_shows_its_domain_and_validity(harness, rsa_key):
    not_after = NOW + timedelta(days=90)
    order = issued_order(harness, rsa_key, not_after=not_after)

    answer = harness.client.get(seal_url(order["id"]))  # no token

    assert answer.status_code == 200
    assert answer.mimetype == "image/svg+xml"
    assert answer.headers["Cache-Control"] == "public, max-age=3600"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    svg = ET.fromstring(answer.data)
    assert svg.tag == f"{SVG}svg"
    assert texts(svg) == ["Secured by Chancery", "www.example.com", "Domain validated",
                          f"Valid until {not_after.date().isoformat()}"]
    assert "www.example.com" in svg.find(f"{SVG}title").text


def test_an_ov_seal_shows_the_organisation_named_in_the_certificate(harness, rsa_key):
    order = issued_order(harness, rsa_key, product="ssl_ov", organization="Example Corp")

    svg = ET.fromstring(harness.client.get(seal_url(order["id"])).data)

    assert texts(svg)[1:3] == ["Example Corp", "Organization validated"]


def test_a_dv_certificate_never_shows_an_organisation(harness, rsa_key):
    order = issued_order(harness, rsa_key, organization="Not Vetted Ltd")
    svg = ET.fromstring(harness.client.get(seal_url(order["id"])).data)
    assert texts(svg)[1] == "www.example.com"


HOSTILE = 'A&B"><script>alert(1)</script>'


def test_a_hostile_organisation_name_cannot_add_markup(harness, rsa_key):
    order = issued_order(harness, rsa_key, product="ssl_ov", organization=HOSTILE)

    answer = harness.client.get(seal_url(order["id"]))

    assert b"<script" not in answer.data
    svg = ET.fromstring(answer.data)  # still well-formed XML
    assert not list(svg.iter(f"{SVG}script")) and not list(svg.iter("script"))
    assert {element.tag for element in svg.iter()} <= {
        f"{SVG}{tag}" for tag in ("svg", "title", "rect", "g", "path", "text")}
    assert texts(svg)[1] == HOSTILE  # shown as the text it is
    assert HOSTILE in svg.find(f"{SVG}title").text


def test_a_long_name_is_shortened_to_fit(harness, rsa_key):
    order = issued_order(harness, rsa_key, product="ssl_ov",
                         organization="The Extremely Long Name Of An Organisation Inc.")
    headline = texts(ET.fromstring(harness.client.get(seal_url(order["id"])).data))[1]
    assert headline == "The Extremely Long Name Of An…"


def _set(harness, order_id, *, order_status=None, certificate_status=None):
    with harness.service.uow() as uow:
        if order_status:
            uow.session.get(Order, order_id).status = order_status
        if certificate_status:
            certificate = uow.session.execute(select(Certificate).where(
                Certificate.order_id == order_id)).scalar_one()
            certificate.status = certificate_status
        uow.commit()


NO_SEAL = {
    "pending approval": lambda h, key: place(h, key, role="limited"),
    "expired": lambda h, key: issued_order(h, key, not_before=NOW - timedelta(days=100),
                                           not_after=NOW - timedelta(seconds=1)),
    "not valid yet": lambda h, key: issued_order(h, key, not_before=NOW + timedelta(hours=1)),
    "certificate revoked": lambda h, key: _then(
        issued_order(h, key), lambda o: _set(h, o["id"], certificate_status="revoked")),
    "revocation requested": lambda h, key: _then(
        issued_order(h, key),
        lambda o: _set(h, o["id"], certificate_status="revocation_requested")),
    "order revoked": lambda h, key: _then(
        issued_order(h, key), lambda o: _set(h, o["id"], order_status="revoked")),
}


def _then(order, change):
    change(order)
    return order


@pytest.mark.parametrize("case", NO_SEAL)
def test_no_seal_unless_live_and_the_same_answer_as_for_no_order(harness, rsa_key, case):
    order = NO_SEAL[case](harness, rsa_key)
    nothing = harness.client.get(seal_url(str(uuid.uuid4())))

    answer = harness.client.get(seal_url(order["id"]))

    assert answer.status_code == nothing.status_code == 404
    assert answer.json == nothing.json
    assert "public" not in answer.headers["Cache-Control"]


def test_a_bad_token_does_not_hide_the_seal(harness, rsa_key):
    order = issued_order(harness, rsa_key)
    answer = harness.client.get(seal_url(order["id"]),
                                headers={"Authorization": "Bearer not-a-token"})
    assert answer.status_code == 200
