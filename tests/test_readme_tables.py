"""The README's product and test-card tables say what the code does.

The catalog table is compared with ``catalog.json`` (codes, names, validation, name
limits, every price), the card table with the test processor's own list, so a price
or a card changed in one place and not the other fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from chancery_ledger.payments import TEST_CARDS, UNAVAILABLE_CARD
from chancery_orders import catalog as catalog_module

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
VALIDATION = {"dv": "domain", "ov": "organization", "ev": "extended",
              "private": "none (private hierarchy)"}


def table_after(marker: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after ``marker``."""
    rest = README.split(marker, 1)[1]
    rows = []
    started = False
    for line in rest.splitlines():
        if line.startswith("|"):
            started = True
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if not all(set(cell) <= {"-", ":"} for cell in cells):
                rows.append(cells)
        elif started:
            break
    assert rows, f"no table after {marker!r}"
    return rows[1:]  # without the heading row


def dollars(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def test_the_product_table_is_the_catalog():
    products = json.loads((Path(catalog_module.__file__).parent / "catalog.json")
                          .read_text())["products"]
    rows = table_after("The catalog (")
    assert len(rows) == len(products)
    for row, product in zip(rows, products, strict=True):
        assert row[0] == f"`{product['code']}` {product['name']}"
        assert row[1] == VALIDATION[product["validation_level"]]
        prices = product["prices_cents"]
        assert row[3:] == [dollars(prices[term]) for term in ("1", "2", "3")]
        if product["included_sans"] < product["max_sans"]:
            extra = product["extra_san_prices_cents"]
            assert row[2] == (f"{product['included_sans']} included, up to "
                              f"{product['max_sans']} ("
                              + " / ".join(dollars(extra[t]) for t in ("1", "2", "3"))
                              + " each further name)")
        else:
            assert row[2] == f"up to {product['max_sans']}"


def test_the_card_table_is_the_test_processor():
    rows = {row[0]: row[1] for row in table_after("It knows these numbers")}
    settled = [number for number, outcome in TEST_CARDS.items() if outcome is None]
    assert rows.pop(", ".join(settled)) == "settled"
    for number, outcome in TEST_CARDS.items():
        if outcome is not None:
            assert rows.pop(number) == f"declined: `{outcome[0]}`"
    assert rows.pop(UNAVAILABLE_CARD).startswith("the processor is unavailable (503")
    assert rows.pop("any other number") == "declined: `unknown_test_card`"
    assert rows == {}
    assert re.search(r'"number":"4242424242424242"', README)  # the walk-through's card
