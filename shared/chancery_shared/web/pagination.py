"""Cursor pagination shared by every list endpoint: ``{"items": [...], "next_cursor"}``."""

from __future__ import annotations

import base64
import json
from typing import Any

from marshmallow import Schema, fields, validate

from chancery_shared.web.problems import InvalidField


class PageArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None)


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidField("cursor", "is not a cursor this endpoint returned") from exc
    if not isinstance(value, dict):
        raise InvalidField("cursor", "is not a cursor this endpoint returned")
    return value


class PageSchema(Schema):
    """Base for ``{items, next_cursor}`` responses; subclasses set ``items``."""

    next_cursor = fields.String(allow_none=True)
