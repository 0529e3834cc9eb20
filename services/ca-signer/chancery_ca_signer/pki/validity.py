"""Validity periods of subscriber certificates and reuse periods of domain validation.

The CA/B Forum BR shorten both in steps (compliance.md):

=============  ======================  ===========================
from           max certificate days     max validation reuse days
=============  ======================  ===========================
(before)       398                      398
2026-03-15     200                      200
2027-03-15     100                      100
2029-03-15     47                       10
=============  ======================  ===========================

Validity is counted inclusively: ``notAfter - notBefore + 1 s``. pkilint errors above
the BR maximum and *warns* above one day less (it treats the last day as "SHOULD
NOT"), so Chancery caps certificates at the BR maximum minus one day (397/199/99/46
days): lint stays silent and a clock skew of a few hours cannot tip us over the limit.

All datetimes are timezone-aware; naive datetimes are rejected because mixing them
with UTC certificate times silently shifts periods by the local offset.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

__all__ = [
    "ValidityPeriodRule",
    "RULES",
    "rule_at",
    "max_validity_days",
    "max_validity",
    "validity_period",
    "cap_not_after",
    "max_validation_reuse_days",
    "validation_reusable",
    "validation_expires_at",
    "truncate_to_seconds",
]

UTC = _dt.UTC
ONE_SECOND = _dt.timedelta(seconds=1)


@dataclass(frozen=True)
class ValidityPeriodRule:
    """One step of the BR schedule, applying from ``starts`` (inclusive)."""

    starts: _dt.datetime
    max_validity_days: int
    max_validation_reuse_days: int

    @property
    def capped_validity_days(self) -> int:
        """What Chancery issues at most: the BR maximum minus one day (no pkilint warning)."""
        return self.max_validity_days - 1


#: The schedule, oldest first. The first rule covers everything before 2026-03-15.
RULES: tuple[ValidityPeriodRule, ...] = (
    ValidityPeriodRule(_dt.datetime.min.replace(tzinfo=UTC), 398, 398),
    ValidityPeriodRule(_dt.datetime(2026, 3, 15, tzinfo=UTC), 200, 200),
    ValidityPeriodRule(_dt.datetime(2027, 3, 15, tzinfo=UTC), 100, 100),
    ValidityPeriodRule(_dt.datetime(2029, 3, 15, tzinfo=UTC), 47, 10),
)


def _aware(value: _dt.datetime, name: str) -> _dt.datetime:
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def truncate_to_seconds(value: _dt.datetime) -> _dt.datetime:
    """UTC, without microseconds: what an X.509 time can hold."""
    return _aware(value, "value").replace(microsecond=0)


def rule_at(at: _dt.datetime) -> ValidityPeriodRule:
    """The rule in force at ``at``."""
    at = _aware(at, "at")
    current = RULES[0]
    for rule in RULES:
        if at >= rule.starts:
            current = rule
    return current


def max_validity_days(at: _dt.datetime) -> int:
    """The BR maximum validity (days, inclusive counting) for a certificate issued at ``at``."""
    return rule_at(at).max_validity_days


def max_validity(at: _dt.datetime) -> _dt.timedelta:
    """The longest validity Chancery issues at ``at`` (BR maximum minus one day)."""
    return _dt.timedelta(days=rule_at(at).capped_validity_days)


def validity_period(not_before: _dt.datetime, not_after: _dt.datetime) -> _dt.timedelta:
    """The validity period as the BR count it: inclusive of the last second."""
    return _aware(not_after, "not_after") - _aware(not_before, "not_before") + ONE_SECOND


def cap_not_after(
    not_before: _dt.datetime,
    requested_not_after: _dt.datetime | None = None,
    *,
    issued_at: _dt.datetime | None = None,
    max_days: int | None = None,
) -> _dt.datetime:
    """The notAfter to issue: the requested one, shortened to the allowed maximum.

    ``None`` asks for the maximum. The rule is chosen by the later of ``not_before``
    and ``issued_at`` (the signing time, defaulting to ``not_before``): the limits only
    shrink, so a backdated notBefore can never select a longer, older limit. The result
    satisfies ``validity_period(not_before, result) <= max_validity(...)``.
    ``max_days`` replaces the BR schedule with a fixed cap (inclusive days): the
    operator's cap for private certificates, which the BR do not govern.
    """
    nb = truncate_to_seconds(not_before)
    if max_days is not None:
        if max_days < 1:
            raise ValueError("max_days must be at least 1")
        longest = _dt.timedelta(days=max_days)
    else:
        effective = nb if issued_at is None else max(nb, _aware(issued_at, "issued_at"))
        longest = max_validity(effective)
    latest = nb + longest - ONE_SECOND
    if requested_not_after is None:
        return latest
    requested = truncate_to_seconds(requested_not_after)
    if requested <= nb:
        raise ValueError("requested notAfter must be later than notBefore")
    return min(requested, latest)


def max_validation_reuse_days(at: _dt.datetime) -> int:
    """How old (days) domain/organization validation data may be when issuing at ``at``."""
    return rule_at(at).max_validation_reuse_days


def validation_reusable(validated_at: _dt.datetime, at: _dt.datetime) -> bool:
    """True when a validation completed at ``validated_at`` may still back issuance at ``at``."""
    validated_at = _aware(validated_at, "validated_at")
    at = _aware(at, "at")
    if validated_at > at:
        return False
    return at - validated_at <= _dt.timedelta(days=max_validation_reuse_days(at))


def validation_expires_at(validated_at: _dt.datetime) -> _dt.datetime:
    """The first instant at which a validation made at ``validated_at`` can no longer be reused.

    Accounts for the schedule shrinking in between (a validation made before a step
    may expire on the step date itself).
    """
    validated_at = _aware(validated_at, "validated_at")
    candidates = []
    for i, rule in enumerate(RULES):
        end_of_rule = RULES[i + 1].starts if i + 1 < len(RULES) else None
        expiry = (
            validated_at
            + _dt.timedelta(days=rule.max_validation_reuse_days)
            + _dt.timedelta(microseconds=1)
        )
        start = max(rule.starts, validated_at)
        # In this rule's window the validation dies at `expiry` if that falls in the window,
        # or at the window's start if it is already too old there.
        if end_of_rule is not None and start >= end_of_rule:
            continue
        if expiry <= start:
            candidates.append(start)
        elif end_of_rule is None or expiry < end_of_rule:
            candidates.append(expiry)
    return min(candidates)
