"""The message envelope of ``design/events.md``, validated with marshmallow on both sides."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from chancery_shared.messaging import contracts

TYPE_PATTERN = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z``, the one time format on the wire."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who caused a message: a person (id, name, client IP) or a service acting on its own."""

    user_id: str | None = None
    user_name: str | None = None
    ip: str | None = None
    system: str | None = None

    @classmethod
    def service(cls, name: str) -> Actor:
        return cls(system=name)

    def as_dict(self) -> dict[str, Any]:
        if self.system:
            return {"system": self.system, **({"ip": self.ip} if self.ip else {})}
        return {"user_id": self.user_id, "user_name": self.user_name, "ip": self.ip}


@dataclasses.dataclass(frozen=True)
class Envelope:
    event_id: str
    type: str
    schema_version: int
    occurred_at: str
    source: str
    account_id: str | None
    actor: dict[str, Any]
    correlation_id: str
    causation_id: str | None
    subject: dict[str, str]
    summary: str
    data: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True)

    @property
    def actor_name(self) -> str:
        return self.actor.get("user_name") or self.actor.get("system") or "someone"


class ActorSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    user_id = fields.String(allow_none=True)
    user_name = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    system = fields.String(allow_none=True)

    @validates_schema
    def _someone(self, data: dict[str, Any], **_kw: Any) -> None:
        if not data.get("system") and not data.get("user_id"):
            raise ValidationError("actor needs user_id or system")


class SubjectSchema(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1))
    id = fields.String(required=True, validate=validate.Length(min=1))


class EnvelopeSchema(Schema):
    """Validates the envelope, then the payload with the schema of ``(type, version)``."""

    class Meta:
        unknown = EXCLUDE  # additive changes must not break older consumers

    event_id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.Regexp(TYPE_PATTERN))
    schema_version = fields.Integer(required=True, validate=validate.Range(min=1))
    occurred_at = fields.AwareDateTime(required=True)
    source = fields.String(required=True)
    account_id = fields.String(required=True, allow_none=True)
    actor = fields.Nested(ActorSchema, required=True)
    correlation_id = fields.String(required=True)
    causation_id = fields.String(required=True, allow_none=True)
    subject = fields.Nested(SubjectSchema, required=True)
    summary = fields.String(required=True, validate=validate.Length(min=1))
    data = fields.Dict(required=True)

    @validates_schema
    def _payload(self, data: dict[str, Any], **_kw: Any) -> None:
        errors = contracts.validate_data(data["type"], data["schema_version"], data["data"])
        if errors:
            raise ValidationError({"data": errors})


_schema = EnvelopeSchema()


def parse(raw: bytes | str | dict[str, Any]) -> Envelope:
    """Decode and validate a message body; raises ``ValidationError`` or ``ValueError``."""
    obj = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
    if not isinstance(obj, dict):
        raise ValidationError("message body must be a JSON object")
    _schema.load(obj)  # validation only; keep the wire values as they are
    return Envelope(
        event_id=obj["event_id"], type=obj["type"], schema_version=obj["schema_version"],
        occurred_at=obj["occurred_at"], source=obj["source"], account_id=obj["account_id"],
        actor=obj["actor"], correlation_id=obj["correlation_id"],
        causation_id=obj["causation_id"], subject=obj["subject"], summary=obj["summary"],
        data=obj["data"],
    )


@dataclasses.dataclass(frozen=True)
class Context:
    """Who and which business flow a new message belongs to.

    HTTP entrypoints build it from the caller; message handlers from the message they
    are handling, so correlation and causation ids carry through the whole saga.
    """

    actor: Actor
    account_id: str | None
    correlation_id: str | None = None
    causation_id: str | None = None

    @classmethod
    def following(cls, envelope: Envelope, service: str) -> Context:
        """A service's automatic reaction to ``envelope``."""
        return cls(actor=Actor.service(service), account_id=envelope.account_id,
                   correlation_id=envelope.correlation_id, causation_id=envelope.event_id)

    def with_account(self, account_id: str | None) -> Context:
        return dataclasses.replace(self, account_id=account_id)


def new_envelope(*, type: str, source: str, context: Context, subject_type: str, subject_id: str,
                 summary: str, data: dict[str, Any], schema_version: int = 1,
                 correlation_id: str | None = None) -> Envelope:
    """Build and validate a message; invalid payloads fail here, inside the transaction."""
    envelope = Envelope(
        event_id=str(uuid.uuid4()), type=type, schema_version=schema_version,
        occurred_at=isoformat(utcnow()), source=source, account_id=context.account_id,
        actor=context.actor.as_dict(),
        correlation_id=correlation_id or context.correlation_id or str(uuid.uuid4()),
        causation_id=context.causation_id, subject={"type": subject_type, "id": str(subject_id)},
        summary=summary, data=data,
    )
    errors = _schema.validate(json.loads(envelope.to_json()))
    if errors:
        raise ValidationError(errors)
    return envelope
