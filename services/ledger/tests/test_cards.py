"""Card checks and the test payment processor's documented numbers."""

from __future__ import annotations

from datetime import date

import pytest
from chancery_ledger import cards
from chancery_ledger.cards import CardDetails
from chancery_ledger.payments import (
    TEST_CARDS,
    UNAVAILABLE_CARD,
    ProcessorUnavailable,
    TestPaymentProcessor,
)


@pytest.mark.parametrize("number", [*TEST_CARDS, UNAVAILABLE_CARD])
def test_every_documented_test_card_passes_the_checks(number):
    assert cards.number_problem(number) is None


@pytest.mark.parametrize("number, problem", [
    ("4242424242424241", "checksum"), ("4242 4242 4242 424x", "digits"),
    ("4242", "12 to 19"), ("4" * 20, "12 to 19"), ("", "empty")])
def test_bad_numbers_are_explained_without_repeating_them(number, problem):
    message = cards.number_problem(number)
    assert message is not None and problem in message
    assert number.strip() == "" or number not in message


@pytest.mark.parametrize("number, brand", [
    ("4242424242424242", "visa"), ("5555555555554444", "mastercard"),
    ("2223003122003222", "mastercard"), ("378282246310005", "amex"),
    ("6011111111111117", "discover"), ("3566002020360505", "unknown")])
def test_the_brand_comes_from_the_issuer_prefix(number, brand):
    assert cards.brand_of(number) == brand


@pytest.mark.parametrize("month, year, expired", [
    (5, 2026, False), (4, 2026, True), (12, 2025, True), (1, 2027, False)])
def test_a_card_is_good_through_its_expiry_month(month, year, expired):
    today = date(2026, 5, 31)
    assert (cards.expiry_problem(month, year, today) is not None) is expired


@pytest.mark.parametrize("number, approved, code", [
    ("4242424242424242", True, None), ("4000000000000002", False, "card_declined"),
    ("4000000000009995", False, "insufficient_funds"),
    ("4111111111111111", False, "unknown_test_card")])
def test_the_test_processor_answers_from_its_table(number, approved, code):
    card = CardDetails.from_input(number=number, exp_month=1, exp_year=2099, cvc="123")
    result = TestPaymentProcessor().charge(card, 100, reference="dep-1", description="t")
    assert (result.approved, result.decline_code) == (approved, code)


def test_the_test_processor_charges_a_reference_once_and_can_simulate_an_outage():
    processor = TestPaymentProcessor()
    card = CardDetails.from_input(number="4242424242424242", exp_month=1, exp_year=2099,
                                  cvc="123")
    first = processor.charge(card, 100, reference="dep-1", description="t")
    assert processor.charge(card, 100, reference="dep-1", description="t") is first
    down = CardDetails.from_input(number=UNAVAILABLE_CARD, exp_month=1, exp_year=2099,
                                  cvc="123")
    with pytest.raises(ProcessorUnavailable):
        processor.charge(down, 100, reference="dep-2", description="t")
