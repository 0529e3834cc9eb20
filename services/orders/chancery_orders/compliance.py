"""Dates the Baseline Requirements fix for the registration authority, in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# BR 4.2.1: how long a domain validation may be reused, by the date it was made.
# (start of the period, reuse period); the last entry whose start has passed applies.
_VALIDATION_REUSE = (
    (datetime(1970, 1, 1, tzinfo=UTC), timedelta(days=398)),
    (datetime(2026, 3, 15, tzinfo=UTC), timedelta(days=200)),
    (datetime(2027, 3, 15, tzinfo=UTC), timedelta(days=100)),
    (datetime(2029, 3, 15, tzinfo=UTC), timedelta(days=10)),
)


def validation_reuse_period(validated_at: datetime) -> timedelta:
    """How long a domain validation made at ``validated_at`` may back issuance."""
    period = _VALIDATION_REUSE[0][1]
    for starts, length in _VALIDATION_REUSE:
        if validated_at >= starts:
            period = length
    return period


def validation_valid_until(validated_at: datetime) -> datetime:
    return validated_at + validation_reuse_period(validated_at)
