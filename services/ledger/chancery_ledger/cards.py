"""Payment cards: the checks a number passes before it reaches a processor.

A :class:`CardDetails` holds the full number only in memory, for the one call to the
payment processor; its ``repr`` masks it so that it never reaches a log or a traceback.
What the ledger keeps is :attr:`CardDetails.brand` and :attr:`CardDetails.last4`.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import date

_SEPARATORS = re.compile(r"[ -]")
MIN_DIGITS, MAX_DIGITS = 12, 19


def normalise_number(raw: str) -> str:
    """Strip the spaces and dashes people type; the result may still be invalid."""
    return _SEPARATORS.sub("", raw.strip())


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) checksum every payment card number carries."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def number_problem(raw: str) -> str | None:
    """Why ``raw`` is not a usable card number, or None. Never echoes the number."""
    digits = normalise_number(raw)
    if not digits:
        return "must not be empty"
    if not digits.isdigit():
        return "must contain only digits (spaces and dashes are allowed)"
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        return f"must have {MIN_DIGITS} to {MAX_DIGITS} digits"
    if not luhn_ok(digits):
        return "is not a valid card number (checksum failed)"
    return None


def brand_of(digits: str) -> str:
    """The card network from the issuer prefix (``unknown`` when not recognised)."""
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in ("34", "37"):
        return "amex"
    if 51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720:
        return "mastercard"
    if digits.startswith(("6011", "65")) or 644 <= int(digits[:3]) <= 649:
        return "discover"
    return "unknown"


def expiry_problem(month: int, year: int, today: date) -> str | None:
    """A card is good through the last day of its expiry month."""
    if (year, month) < (today.year, today.month):
        return "the card has expired"
    return None


def cvc_problem(cvc: str) -> str | None:
    if not (cvc.isdigit() and 3 <= len(cvc) <= 4):
        return "must be 3 or 4 digits"
    return None


@dataclasses.dataclass(frozen=True, repr=False)
class CardDetails:
    """A card as typed by the payer, already validated; lives only for one charge."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str

    @classmethod
    def from_input(cls, *, number: str, exp_month: int, exp_year: int, cvc: str) -> CardDetails:
        return cls(number=normalise_number(number), exp_month=exp_month, exp_year=exp_year,
                   cvc=cvc)

    @property
    def brand(self) -> str:
        return brand_of(self.number)

    @property
    def last4(self) -> str:
        return self.number[-4:]

    def __repr__(self) -> str:
        return (f"CardDetails({self.brand} ending {self.last4}, "
                f"exp {self.exp_month:02d}/{self.exp_year})")

    __str__ = __repr__
