"""The Baseline Requirements' dated limits, in one place: how long a subscriber
certificate may be valid and how old the validation behind it may be.

orders uses it to say until when a validation can back issuance (``reusable_until``)
and to check every name again right before it asks for a signature; ca-signer uses it
to refuse a signing command whose evidence is too old on the day it signs, and to cap
validity. Both read this module, so they can never disagree.

The CA/B Forum shortens both in steps (ballot SC-081; design/compliance.md):

=============  =================  ===================  =========================
from           certificate days   domain reuse days    organization reuse days
=============  =================  ===================  =========================
(before)       398                398                  825
2026-03-15     200                200                  398
2027-03-15     100                100                  398
2029-03-15     47                 10                   398
=============  =================  ===================  =========================

Reuse is counted back from the moment a certificate is *signed* (BR 4.2.1): a domain
validated on 2026-12-06 may back a certificate signed until 2027-03-15 (the 200-day
rule), and from that day only for 100 days after the validation, so its last day is
2027-03-16. :func:`reusable_until` gives that instant for any validation date.

All datetimes are timezone-aware; a naive one is refused (it would shift every period
by the local offset).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

__all__ = ["UTC", "ScheduleStep", "STEPS", "DOMAIN", "ORGANIZATION", "VALIDATION_KINDS",
           "step_at", "max_validity_days", "max_validation_reuse_days",
           "validation_reusable", "reusable_until", "aware"]

UTC = _dt.UTC
DOMAIN, ORGANIZATION = "domain", "organization"
VALIDATION_KINDS = (DOMAIN, ORGANIZATION)
_ONE_MICROSECOND = _dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class ScheduleStep:
    """One step of the schedule, in force from ``starts`` (inclusive)."""

    starts: _dt.datetime
    max_validity_days: int
    domain_reuse_days: int
    organization_reuse_days: int

    def reuse_days(self, kind: str) -> int:
        if kind == DOMAIN:
            return self.domain_reuse_days
        if kind == ORGANIZATION:
            return self.organization_reuse_days
        raise ValueError(f"unknown validation kind {kind!r}; one of {VALIDATION_KINDS}")


#: Oldest first; the first step covers everything before 2026-03-15.
STEPS: tuple[ScheduleStep, ...] = (
    ScheduleStep(_dt.datetime.min.replace(tzinfo=UTC), 398, 398, 825),
    ScheduleStep(_dt.datetime(2026, 3, 15, tzinfo=UTC), 200, 200, 398),
    ScheduleStep(_dt.datetime(2027, 3, 15, tzinfo=UTC), 100, 100, 398),
    ScheduleStep(_dt.datetime(2029, 3, 15, tzinfo=UTC), 47, 10, 398),
)


def aware(value: _dt.datetime, name: str) -> _dt.datetime:
    """``value`` in UTC; TypeError/ValueError for anything but an aware datetime."""
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def step_at(at: _dt.datetime) -> ScheduleStep:
    """The step in force at ``at``."""
    at = aware(at, "at")
    current = STEPS[0]
    for step in STEPS:
        if at >= step.starts:
            current = step
    return current


def max_validity_days(at: _dt.datetime) -> int:
    """The BR maximum validity (days, counted inclusively) of a certificate signed at ``at``."""
    return step_at(at).max_validity_days


def max_validation_reuse_days(at: _dt.datetime, kind: str = DOMAIN) -> int:
    """How many days old validation data of ``kind`` may be when signing at ``at``."""
    return step_at(at).reuse_days(kind)


def validation_reusable(validated_at: _dt.datetime, at: _dt.datetime,
                        kind: str = DOMAIN) -> bool:
    """May a validation completed at ``validated_at`` back a certificate signed at ``at``?"""
    validated_at, at = aware(validated_at, "validated_at"), aware(at, "at")
    if validated_at > at:
        return False
    return at - validated_at <= _dt.timedelta(days=max_validation_reuse_days(at, kind))


def reusable_until(validated_at: _dt.datetime, kind: str = DOMAIN) -> _dt.datetime:
    """The first instant at which a validation made at ``validated_at`` can no longer
    back a signature: the earliest moment that is either past its reuse period under the
    step then in force, or the start of a step under which it is already too old."""
    validated_at = aware(validated_at, "validated_at")
    candidates = []
    for i, step in enumerate(STEPS):
        window_end = STEPS[i + 1].starts if i + 1 < len(STEPS) else None
        start = max(step.starts, validated_at)
        if window_end is not None and start >= window_end:
            continue
        expiry = validated_at + _dt.timedelta(days=step.reuse_days(kind)) + _ONE_MICROSECOND
        if expiry <= start:
            candidates.append(start)
        elif window_end is None or expiry < window_end:
            candidates.append(expiry)
    return min(candidates)
