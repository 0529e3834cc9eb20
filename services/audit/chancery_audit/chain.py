"""The hash chain that makes each audit log tamper-evident.

Every log (an account's, or the platform's) is a chain: entry *n* stores ``prev_hash``
(the hash of entry *n-1*, or the log's genesis value for the first entry) and ``hash``
= SHA-256 over ``prev_hash`` and a canonical encoding of the entry's content. Editing,
deleting, inserting or reordering an entry breaks the chain at that entry; the log's
``head_hash`` and ``last_sequence`` say where the chain must end, so cutting the tail
shows too — unless the cutter also rewrites the head, which is what signed checkpoints
(``checkpoints.py``) are for: a verifier who kept an old checkpoint sees the chain no
longer reaches it.

The canonical encoding is JSON with sorted keys, no spaces, UTF-8, over exactly the
fields in :data:`CONTENT_FIELDS` (times as RFC 3339 UTC with microseconds). It is
documented in docs/audit.md so anyone can verify a log without our code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["CONTENT_FIELDS", "genesis", "canonical_content", "entry_hash", "seal",
           "content_of"]

#: What an entry's hash covers, besides the previous hash.
CONTENT_FIELDS = ("log_key", "sequence", "event_id", "account_id", "at", "user_id",
                  "user_name", "ip", "service", "action", "subject_type", "subject_id",
                  "description", "correlation_id", "causation_id", "schema_version",
                  "envelope", "unit_ids")


def genesis(log_key: str) -> str:
    """The ``prev_hash`` of a log's first entry: bound to the log, so entries cannot be
    moved from one log to another."""
    return hashlib.sha256(b"chancery-audit-genesis\x00" + log_key.encode()).hexdigest()


def _time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_content(content: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an entry's content (``CONTENT_FIELDS`` only)."""
    values: dict[str, Any] = {}
    for name in CONTENT_FIELDS:
        value = content.get(name)
        if isinstance(value, datetime):
            value = _time(value)
        elif name == "unit_ids":
            value = sorted(value or [])
        values[name] = value
    return json.dumps(values, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def entry_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``prev_hash`` (hex, 64 characters) and the canonical content."""
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" +
                          canonical_content(content)).hexdigest()


def content_of(entry: Any, unit_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """The content fields of an entry object (an ``AuditEntry`` or anything alike)."""
    content = {name: getattr(entry, name, None) for name in CONTENT_FIELDS
               if name != "unit_ids"}
    content["unit_ids"] = list(unit_ids if unit_ids is not None
                               else getattr(entry, "unit_ids", []))
    return content


def seal(entry: Any, prev_hash: str, unit_ids: Sequence[str] | None = None) -> str:
    """Link ``entry`` after ``prev_hash``: set its ``prev_hash`` and ``hash``; return it."""
    entry.prev_hash = prev_hash
    entry.hash = entry_hash(prev_hash, content_of(entry, unit_ids))
    return entry.hash
