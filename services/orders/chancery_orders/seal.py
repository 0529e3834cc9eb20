"""The site seal: a small public SVG a customer shows on their site for a live certificate.

Anyone may fetch it without a token, so it says nothing about an order that is not
issued, revoked or expired: those are the same 404 as an order that does not exist.
It shows who the certificate vouches for — the organisation of an OV or EV certificate
(read from the certificate itself), otherwise its domain — and the end of its validity.
The SVG is built with :mod:`xml.etree.ElementTree`, which escapes every text, so a name
cannot add markup.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from datetime import datetime

from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import NotFound
from cryptography import x509
from cryptography.x509.oid import NameOID

from chancery_orders.model import ISSUED, Order

SVG_NS = "http://www.w3.org/2000/svg"
MAX_HEADLINE = 30  # characters that fit the seal's width at its font size
ORGANISATION_LEVELS = ("ov", "ev")
ET.register_namespace("", SVG_NS)  # serialise as the default namespace, no "ns0:"


@dataclasses.dataclass(frozen=True)
class Seal:
    headline: str         # the organisation or the domain
    validated: str        # "Organization validated" or "Domain validated"
    not_after: datetime


def seal_of(uow: UnitOfWork, order_id: str, now: datetime) -> Seal:
    """The seal of an order whose current certificate is issued, unrevoked and valid at
    ``now``; NotFound (the same answer as for no order at all) otherwise."""
    order = uow.session.get(Order, order_id)
    certificate = order.certificate if order is not None else None
    if (order is None or certificate is None or order.status != ISSUED
            or certificate.status != "issued"
            or not certificate.not_before <= now < certificate.not_after):
        raise NotFound("no seal for this certificate")
    organisation = None
    if order.product.validation_level in ORGANISATION_LEVELS:
        organisation = organisation_of(certificate.certificate_pem)
    if organisation:
        return Seal(organisation, "Organization validated", certificate.not_after)
    return Seal(order.common_name, "Domain validated", certificate.not_after)


def organisation_of(certificate_pem: str) -> str | None:
    """The subject's organizationName, if the certificate has one."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        return None
    values = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else None


def _shorten(text: str, limit: int = MAX_HEADLINE) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def render(seal: Seal) -> str:
    """The seal as an SVG document (180 x 64 px)."""

    def add(parent: ET.Element, tag: str, text: str | None = None, **attributes: str
            ) -> ET.Element:
        element = ET.SubElement(parent, f"{{{SVG_NS}}}{tag}",
                                {key.replace("_", "-"): value
                                 for key, value in attributes.items()})
        element.text = text
        return element

    until = seal.not_after.date().isoformat()
    svg = ET.Element(f"{{{SVG_NS}}}svg", {"width": "180", "height": "64",
                                          "viewBox": "0 0 180 64", "role": "img"})
    add(svg, "title", f"Secured by Chancery: {seal.headline}, {seal.validated.lower()}, "
                      f"valid until {until}")
    add(svg, "rect", x="0.5", y="0.5", width="179", height="63", rx="6", fill="#ffffff",
        stroke="#1f6f43")
    lock = add(svg, "g", fill="#1f6f43")
    add(lock, "rect", x="10", y="26", width="16", height="13", rx="2")
    add(lock, "path", d="M13 26v-4a5 5 0 0 1 10 0v4h-2.5v-4a2.5 2.5 0 0 0-5 0v4z")
    text = {"font_family": "Helvetica, Arial, sans-serif", "fill": "#1b1b1b"}
    add(svg, "text", "Secured by Chancery", x="34", y="18", font_size="11",
        font_weight="bold", **{**text, "fill": "#1f6f43"})
    add(svg, "text", _shorten(seal.headline), x="34", y="34", font_size="10", **text)
    add(svg, "text", seal.validated, x="34", y="46", font_size="8", **text)
    add(svg, "text", f"Valid until {until}", x="34", y="57", font_size="8", **text)
    return ET.tostring(svg, encoding="unicode", xml_declaration=False)
