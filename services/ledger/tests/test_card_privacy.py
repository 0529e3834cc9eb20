"""The full card number never reaches the database, an event or a log."""

from __future__ import annotations

import logging

import pytest
from chancery_ledger.cards import CardDetails

from .conftest import VISA_DECLINED, VISA_OK, card_deposit, outbox


def _spellings(number: str) -> list[bytes]:
    grouped = " ".join(number[i:i + 4] for i in range(0, len(number), 4))
    return [form.encode() for form in (number, grouped, grouped.replace(" ", "-"),
                                       number[:12])]  # not even the first twelve digits


def test_card_numbers_are_nowhere_in_the_database_files_events_or_logs(
        login, service, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    admin = login("admin")
    key = {"Idempotency-Key": "privacy-check"}
    assert admin.post("/deposits", card_deposit(1_000, "4242 4242 4242 4242", cvc="987"),
                      headers=key).json["status"] == "settled"
    assert admin.deposit_card(1_000, VISA_DECLINED).json["status"] == "declined"
    bad = card_deposit(1_000, "4000 0000 0000 0003")  # fails the Luhn check
    assert admin.post("/deposits", bad).status_code == 422
    response_texts = [admin.get("/transactions").get_data(),
                      admin.get("/deposits").get_data()]
    service.dispose()  # flush SQLite's WAL so the main file holds everything

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "ledger.db" for p in files)
    stored = b"".join(p.read_bytes() for p in files)
    events = "\n".join(str(m) for m in outbox(service)).encode()
    logs = caplog.text.encode()
    for number in (VISA_OK, VISA_DECLINED, "4000000000000003"):
        for spelling in _spellings(number):
            assert spelling not in stored, f"card digits {spelling!r} found on disk"
            assert spelling not in events
            assert spelling not in logs
            for text in response_texts:
                assert spelling not in text
    # what is kept: brand and last four
    assert b"4242" in stored


@pytest.mark.parametrize("render", [repr, str, lambda c: f"{c}", lambda c: f"{c!r}"])
def test_a_card_never_prints_its_number(render):
    card = CardDetails.from_input(number="4242 4242 4242 4242", exp_month=1, exp_year=2030,
                                  cvc="123")
    text = render(card)
    assert "4242424242424242" not in text and "424242424242" not in text
    assert "123" not in text
    assert "visa ending 4242" in text
