"""The product catalog is data: catalog.json, loaded into ``products`` at migration.

:func:`load_catalog` is an idempotent upsert keyed by product code; a product that
disappears from the file is withdrawn (``active`` false), never deleted, because orders
keep referring to it. The file is checked as a whole before anything is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from chancery_shared.messaging.envelope import utcnow
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import select
from sqlalchemy.orm import Session

from chancery_orders.model import Product

log = logging.getLogger(__name__)
CATALOG_FILE = Path(__file__).with_name("catalog.json")
TERMS = ("1", "2", "3")
VALIDATION_LEVELS = ("dv", "ov", "ev", "private")

_Cents = fields.Integer(strict=True, validate=validate.Range(min=0))


class _ProductEntry(Schema):
    code = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{1,63}$"))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    validation_level = fields.String(required=True, validate=validate.OneOf(VALIDATION_LEVELS))
    wildcard = fields.Boolean(required=True)
    max_sans = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    included_sans = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    prices_cents = fields.Dict(keys=fields.String(validate=validate.OneOf(TERMS)),
                               values=_Cents, required=True,
                               validate=validate.Length(min=1))
    extra_san_prices_cents = fields.Dict(keys=fields.String(validate=validate.OneOf(TERMS)),
                                         values=_Cents, allow_none=True, load_default=None)

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_kw: Any) -> None:
        if data["included_sans"] > data["max_sans"]:
            raise ValidationError("must not exceed max_sans", "included_sans")
        extra = data.get("extra_san_prices_cents")
        if data["included_sans"] < data["max_sans"] and (
                not extra or set(extra) != set(data["prices_cents"])):
            raise ValidationError("needs a price for every term when names beyond "
                                  "included_sans are sold", "extra_san_prices_cents")


class _Catalog(Schema):
    about = fields.String()
    products = fields.List(fields.Nested(_ProductEntry), required=True,
                           validate=validate.Length(min=1))


def read_catalog(path: Path = CATALOG_FILE) -> list[dict[str, Any]]:
    """The products of ``path``, checked; raises ``ValueError`` naming what is wrong."""
    try:
        document = _Catalog().load(json.loads(path.read_text(encoding="utf-8")))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid product catalog {path}: {exc}") from exc
    codes = [entry["code"] for entry in document["products"]]
    if len(codes) != len(set(codes)):
        raise ValueError(f"invalid product catalog {path}: duplicate product codes")
    return document["products"]


def load_catalog(session: Session, path: Path = CATALOG_FILE) -> list[str]:
    """Upsert the catalog into ``products``; returns the codes that were added or changed."""
    entries = read_catalog(path)
    existing = {p.code: p for p in session.execute(select(Product)).scalars()}
    changed: list[str] = []
    now = utcnow()
    for position, entry in enumerate(entries):
        values = {**entry, "position": position, "active": True}
        product = existing.pop(entry["code"], None)
        if product is None:
            session.add(Product(**values, updated_at=now))
            changed.append(entry["code"])
            continue
        if any(getattr(product, key) != value for key, value in values.items()):
            for key, value in values.items():
                setattr(product, key, value)
            product.updated_at = now
            changed.append(entry["code"])
    for product in existing.values():
        if product.active:
            product.active = False
            product.updated_at = now
            changed.append(product.code)
    if changed:
        log.info("product catalog: added, changed or withdrawn %s", ", ".join(changed))
    return changed
