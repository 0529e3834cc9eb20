"""What the Baseline Requirements' dated limits mean for the registration authority.

The schedule itself is ``chancery_shared.br_schedule`` (ca-signer reads the same one):
certificate validity and validation reuse, both counted from the moment a certificate
is *signed*. Here: the questions orders asks of it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from chancery_shared import br_schedule
from chancery_shared.br_schedule import DOMAIN, ORGANIZATION

__all__ = ["DOMAIN", "ORGANIZATION", "reusable_until", "certificate_max_validity",
           "add_years", "not_after_for"]


def reusable_until(validated_at: datetime, kind: str = DOMAIN) -> datetime:
    """The first instant a validation made at ``validated_at`` can no longer back a
    certificate (BR 4.2.1 as of the signing day): what the API shows as
    ``reusable_until`` and what every coverage check compares with."""
    return br_schedule.reusable_until(validated_at, kind)


def certificate_max_validity(issued_at: datetime) -> timedelta:
    """The longest validity ca-signer gives a certificate signed at ``issued_at`` (one
    day less than the BR maximum; ca-signer caps every certificate itself)."""
    return timedelta(days=br_schedule.max_validity_days(issued_at) - 1)


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
