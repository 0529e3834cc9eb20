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


# BR 6.3.2: the longest validity of a subscriber certificate, by its issuance date
# (a copy of ca-signer's pki/validity.py schedule; the signer remains the authority and
# caps every certificate itself). Chancery issues one day less than the BR maximum.
_CERTIFICATE_VALIDITY = (
    (datetime(1970, 1, 1, tzinfo=UTC), 398),
    (datetime(2026, 3, 15, tzinfo=UTC), 200),
    (datetime(2027, 3, 15, tzinfo=UTC), 100),
    (datetime(2029, 3, 15, tzinfo=UTC), 47),
)


def certificate_max_validity(issued_at: datetime) -> timedelta:
    """The longest validity ca-signer gives a certificate signed at ``issued_at``."""
    days = _CERTIFICATE_VALIDITY[0][1]
    for starts, br_days in _CERTIFICATE_VALIDITY:
        if issued_at >= starts:
            days = br_days
    return timedelta(days=days - 1)


def add_years(moment: datetime, years: int) -> datetime:
    """``moment`` plus whole calendar years (29 February becomes 28 February)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def not_after_for(term_ends_at: datetime | None, issued_at: datetime) -> datetime | None:
    """The notAfter orders asks ca-signer for: the end of the term when a certificate
    signed at ``issued_at`` can reach it (it must not outlast the term), else ``None``
    (the longest validity allowed; the plan reissues before it expires)."""
    if term_ends_at is None or term_ends_at > issued_at + certificate_max_validity(issued_at):
        return None
    return term_ends_at
