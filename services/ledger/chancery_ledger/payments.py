"""The payment-processor port and its adapters.

The ledger talks to card networks only through :class:`PaymentProcessor`. The
:class:`TestPaymentProcessor` adapter answers from a fixed table of test card numbers
(documented in the service README), the way a real processor's test mode does; a real
adapter (Stripe, Adyen, ...) implements the same two methods.
"""

from __future__ import annotations

import abc
import dataclasses

from chancery_ledger.cards import CardDetails


@dataclasses.dataclass(frozen=True)
class ChargeResult:
    """What the processor said about one charge attempt."""

    approved: bool
    reference: str                  # the processor's id of the charge (or attempt)
    decline_code: str | None = None  # machine-readable, e.g. "insufficient_funds"
    decline_reason: str | None = None  # for the payer


class ProcessorUnavailable(Exception):
    """The processor could not be reached or failed; nothing was charged."""


class PaymentProcessor(abc.ABC):
    """The port: charge a card once per ``reference`` (our deposit id)."""

    name: str

    @abc.abstractmethod
    def charge(self, card: CardDetails, amount_cents: int, *, reference: str,
               description: str) -> ChargeResult:
        """Charge ``amount_cents`` USD; a repeat with the same ``reference`` charges nothing
        more and returns the first result. Raises :class:`ProcessorUnavailable`."""


# number -> (decline code, reason); None = approved
TEST_CARDS: dict[str, tuple[str, str] | None] = {
    "4242424242424242": None,
    "5555555555554444": None,
    "378282246310005": None,
    "6011111111111117": None,
    "4000000000000002": ("card_declined", "the card was declined"),
    "4000000000009995": ("insufficient_funds", "the card has insufficient funds"),
    "4000000000000069": ("expired_card", "the card issuer reports the card expired"),
    "4000000000000127": ("incorrect_cvc", "the security code is incorrect"),
}
UNAVAILABLE_CARD = "4000000000000119"  # simulates the processor being down


class TestPaymentProcessor(PaymentProcessor):
    """Deterministic answers for development and tests; never moves real money."""

    __test__ = False  # not a pytest test class
    name = "test"

    def __init__(self) -> None:
        self._charges: dict[str, ChargeResult] = {}

    def charge(self, card: CardDetails, amount_cents: int, *, reference: str,
               description: str) -> ChargeResult:
        if reference in self._charges:
            return self._charges[reference]
        if card.number == UNAVAILABLE_CARD:
            raise ProcessorUnavailable("the test processor simulates an outage for this card")
        if card.number not in TEST_CARDS:
            result = ChargeResult(False, f"test_{reference}", "unknown_test_card",
                                  "the test processor accepts only its documented test cards")
        elif TEST_CARDS[card.number] is None:
            result = ChargeResult(True, f"test_{reference}")
        else:
            code, reason = TEST_CARDS[card.number]  # type: ignore[misc]
            result = ChargeResult(False, f"test_{reference}", code, reason)
        self._charges[reference] = result
        return result


def build_processor(name: str) -> PaymentProcessor:
    """The adapter named by ``CHANCERY_LEDGER_PAYMENT_PROCESSOR``."""
    if name == "test":
        return TestPaymentProcessor()
    raise ValueError(f"unknown payment processor {name!r}; available: test")
