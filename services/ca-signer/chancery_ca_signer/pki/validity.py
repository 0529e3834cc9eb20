"""Validity periods of subscriber certificates, from the BR schedule.

The schedule itself (certificate validity and validation reuse, by date) lives in
``chancery_shared.br_schedule``, which orders reads too. Here: what the signer does
with it. Validity is counted inclusively: ``notAfter - notBefore + 1 s``. pkilint errors
above the BR maximum and *warns* above one day less (it treats the last day as "SHOULD
NOT"), so Chancery caps certificates at the BR maximum minus one day (397/199/99/46
days): lint stays silent and a clock skew of a few hours cannot tip us over the limit.

All datetimes are timezone-aware; naive datetimes are rejected because mixing them
with UTC certificate times silently shifts periods by the local offset.
"""

from __future__ import annotations

import datetime as _dt

from chancery_shared import br_schedule
from chancery_shared.br_schedule import (
    max_validation_reuse_days,
    max_validity_days,
    validation_reusable,
)

__all__ = [
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
_aware = br_schedule.aware


def truncate_to_seconds(value: _dt.datetime) -> _dt.datetime:
    """UTC, without microseconds: what an X.509 time can hold."""
    return _aware(value, "value").replace(microsecond=0)


def max_validity(at: _dt.datetime) -> _dt.timedelta:
    """The longest validity Chancery issues at ``at`` (BR maximum minus one day)."""
    return _dt.timedelta(days=max_validity_days(at) - 1)


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


def validation_expires_at(validated_at: _dt.datetime) -> _dt.datetime:
    """The first instant a domain validation made at ``validated_at`` can no longer be
    reused (``br_schedule.reusable_until``)."""
    return br_schedule.reusable_until(validated_at)
