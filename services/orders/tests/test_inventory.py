"""The inventory: GET /orders filtered, paged and scoped; GET /orders.csv; the names index."""

from __future__ import annotations

import csv
import io
from urllib.parse import quote

import pytest
from chancery_orders import inventory
from chancery_orders.inventory import OrderName
from chancery_orders.model import Order
from chancery_orders.service import OrdersService
from chancery_shared import migrations
from chancery_shared.auth.tokens import Principal
from chancery_shared.testing import make_runtime
from chancery_shared.web.csv_export import spreadsheet_safe
from sqlalchemy import select, text

from .conftest import ACCOUNT, OTHER_ACCOUNT, UNIT_A, UNIT_B
from .issuing import ORDERS, at, certificate_pem, issue, place

FORMULA_UNIT = '=HYPERLINK("http://evil.example/x","Retail")'
FORMULA_PERSON = "=cmd|' /C calc'!A0"


@pytest.fixture(scope="module")
def inventory_orders(shared_harness, rsa_key, ec_key):
    """Six orders (one in another account); keys are the names the tests use."""
    harness = shared_harness
    for domain in ("example.com", "example.org", "example.net", "bücher.de"):
        harness.validate_domain(domain)
    harness.add_unit(UNIT_A, "Retail")
    harness.add_unit(UNIT_B, FORMULA_UNIT)
    leaf = certificate_pem(ec_key, "www.example.com")
    orders = {}
    orders["shop"] = place(harness, rsa_key, role="limited", user_id="u-lee", name="Lee Lim",
                           common_name="shop.example.com", units=(UNIT_A,))
    orders["www"] = place(harness, rsa_key, user_id="u-ada", name="Ada Admin",
                          common_name="www.example.com", sans=("api.example.com",))
    issue(harness, orders["www"], not_before=at("2026-10-01T00:00:00Z"),
          not_after=at("2027-01-10T00:00:00Z"), leaf_pem=leaf, serial="aa01")
    orders["portal"] = place(harness, rsa_key, user_id="u-ada", name="Ada Admin",
                             product="ssl_multi_domain_ov", common_name="portal.example.org",
                             sans=("bücher.de",), unit_id=UNIT_B)
    issue(harness, orders["portal"], not_before=at("2026-11-01T00:00:00Z"),
          not_after=at("2027-03-01T00:00:00Z"), leaf_pem=leaf, serial="aa02")
    orders["mail"] = place(harness, rsa_key, role="limited", user_id="u-kim", name="Kim Lim",
                           product="ssl_ov", common_name="mail.example.net", units=(UNIT_A,))
    rejected = harness.client.post(f"{ORDERS}/{orders['mail']['id']}/reject",
                                   json={"reason": "not ours"}, headers=harness.headers("admin"))
    assert rejected.status_code == 200
    orders["wild"] = place(harness, rsa_key, user_id="u-ada", name=FORMULA_PERSON,
                           product="ssl_wildcard_dv", common_name="*.example.com")
    issue(harness, orders["wild"], not_before=at("2026-09-15T00:00:00Z"),
          not_after=at("2026-12-20T00:00:00Z"), leaf_pem=leaf, serial="aa03")
    orders["foreign"] = place(harness, rsa_key, account_id=OTHER_ACCOUNT,
                              common_name="www.example.com")
    return {key: order["id"] for key, order in orders.items()}


ALL = ["wild", "mail", "portal", "www", "shop"]  # newest first

SEARCHES = [
    ("", ALL),
    ("status=issued", ["wild", "portal", "www"]),
    ("status=issued,rejected", ["wild", "mail", "portal", "www"]),
    ("status=pending_approval", ["shop"]),
    (f"unit_id={UNIT_A}", ["mail", "shop"]),
    ("requester_id=u-kim", ["mail"]),
    ("product=ssl_ov", ["mail"]),
    ("product=ssl_platinum", []),
    ("name=EXAMPLE.COM", ["wild", "www", "shop"]),
    ("name=api", ["www"]),  # a SAN, not the common name
    ("name=example.org.", ["portal"]),  # trailing dot, as typed from DNS
    ("name=" + quote("bücher"), ["portal"]),  # the Unicode form of an IDN
    ("name=xn--bcher", ["portal"]),  # its ASCII form
    ("name=*.example", ["wild"]),
    ("name=%25", []),  # LIKE's wildcard is a literal here
    ("name=_", []),
    ("expiring_before=2027-01-10T00:00:00Z", ["wild"]),  # strictly before
    ("expiring_before=2027-01-10T00:00:01Z", ["wild", "www"]),
    ("expiring_before=" + quote("2027-01-10T01:00:01+01:00"), ["wild", "www"]),
    ("issued_after=2026-10-01T00:00:00Z", ["portal", "www"]),
    ("issued_before=2026-10-01T00:00:00Z", ["wild"]),
    ("status=issued&name=example.com&expiring_before=2027-06-01T00:00:00Z", ["wild", "www"]),
    (f"unit_id={UNIT_A}&status=issued", []),
]


@pytest.mark.parametrize(("query", "expected"), SEARCHES, ids=[q or "all" for q, _ in SEARCHES])
def test_the_inventory_filters(shared_harness, inventory_orders, query, expected):
    answer = shared_harness.client.get(f"{ORDERS}?{query}",
                                       headers=shared_harness.headers("admin"))

    assert answer.status_code == 200, answer.json
    assert [o["id"] for o in answer.json["items"]] == [inventory_orders[k] for k in expected]
    assert answer.json["next_cursor"] is None


MALFORMED_FILTERS = [
    ("status=bogus", "status"),
    ("status=issued,bogus", "status"),
    ("status=,", "status"),
    ("expiring_before=2027-01-01", "expiring_before"),  # a date is not an RFC 3339 time
    ("expiring_before=2027-01-01T00:00:00", "expiring_before"),  # no offset
    ("expiring_before=20270101T000000Z", "expiring_before"),
    ("expiring_before=soon", "expiring_before"),
    ("expiring_before=2027-02-30T00:00:00Z", "expiring_before"),
    ("issued_after=yesterday", "issued_after"),
    ("issued_before=2027-13-01T00:00:00Z", "issued_before"),
    ("name=" + "a" * 254, "name"),
]
MALFORMED_PAGES = [
    ("limit=0", "limit"),
    ("limit=501", "limit"),
    ("limit=many", "limit"),
    ("cursor=not-a-cursor", "cursor"),
]
MALFORMED = ([(ORDERS, query, field) for query, field in MALFORMED_FILTERS + MALFORMED_PAGES]
             + [(f"{ORDERS}.csv", query, field) for query, field in MALFORMED_FILTERS])


@pytest.mark.parametrize(("path", "query", "field"), MALFORMED,
                         ids=[f"{p.rsplit('/', 1)[1]}?{q[:30]}" for p, q, _ in MALFORMED])
def test_a_malformed_filter_is_refused_naming_it(shared_harness, path, query, field):
    answer = shared_harness.client.get(f"{path}?{query}", headers=shared_harness.headers("admin"))

    assert answer.status_code == 422
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert field in answer.json["errors"], answer.json


def test_pages_follow_each_other_with_the_filter_kept(shared_harness, inventory_orders):
    admin = shared_harness.headers("admin")
    seen, cursor, pages = [], None, 0
    while True:
        query = "limit=1&name=example" + (f"&cursor={cursor}" if cursor else "")
        page = shared_harness.client.get(f"{ORDERS}?{query}", headers=admin).json
        seen += [o["id"] for o in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [inventory_orders[k] for k in ["wild", "mail", "portal", "www", "shop"]]
    assert pages == 5


SCOPES = [  # who asks -> what they find among every order matching "example"
    ({"role": "limited", "user_id": "u-lee"}, ["shop"]),
    ({"role": "limited", "user_id": "u-nobody"}, []),
    ({"role": "finance"}, ALL),
    ({"role": "unit_admin", "units": (UNIT_A,)}, ["mail", "shop"]),
    ({"role": "unit_admin", "units": (UNIT_B,)}, ["portal"]),
    ({"role": "admin"}, ALL),
    ({"role": "admin", "account_id": OTHER_ACCOUNT}, ["foreign"]),
]


@pytest.mark.parametrize(("who", "expected"), SCOPES,
                         ids=["-".join(map(str, w.values())) for w, _ in SCOPES])
def test_the_search_never_reaches_beyond_what_the_caller_may_see(shared_harness,
                                                                 inventory_orders, who,
                                                                 expected):
    who = dict(who)
    headers = shared_harness.headers(who.pop("role"), **who)
    for path in (f"{ORDERS}?name=example", f"{ORDERS}.csv?name=example"):
        answer = shared_harness.client.get(path, headers=headers)
        assert answer.status_code == 200
        if ".csv?" in path:
            found = [row["id"] for row in csv.DictReader(io.StringIO(answer.text))]
        else:
            found = [o["id"] for o in answer.json["items"]]
        assert found == [inventory_orders[k] for k in expected], path


@pytest.mark.parametrize("path", [ORDERS, f"{ORDERS}.csv"])
def test_the_operator_and_strangers_do_not_read_the_inventory(shared_harness, path):
    operator = shared_harness.client.get(path, headers=shared_harness.headers("operator",
                                                                              account_id=None))
    assert operator.status_code == 403
    assert operator.json["missing_permission"] == "read_orders"
    assert shared_harness.client.get(path).status_code == 401


# --- CSV ------------------------------------------------------------------------------------


def test_the_csv_export_has_every_column_and_the_certificates(shared_harness,
                                                              inventory_orders):
    answer = shared_harness.client.get(f"{ORDERS}.csv?status=issued",
                                       headers=shared_harness.headers("admin"))

    assert answer.status_code == 200
    assert answer.mimetype == "text/csv"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="certificates.csv"'
    reader = csv.reader(io.StringIO(answer.text))
    assert next(reader) == list(inventory.CSV_COLUMNS)
    rows = {row[0]: dict(zip(inventory.CSV_COLUMNS, row, strict=True)) for row in reader}
    assert list(rows) == [inventory_orders[k] for k in ("wild", "portal", "www")]
    www = rows[inventory_orders["www"]]
    assert www == {
        "id": inventory_orders["www"], "status": "issued", "product": "ssl_dv",
        "common_name": "www.example.com", "sans": "www.example.com api.example.com",
        "unit": "", "requester": "Ada Admin", "price_cents": "4900",
        "created_at": www["created_at"], "serial": "aa01",
        "not_before": "2026-10-01T00:00:00Z", "not_after": "2027-01-10T00:00:00Z"}
    assert www["created_at"].endswith("Z")


def test_csv_cells_a_spreadsheet_would_run_are_made_inert(shared_harness, inventory_orders):
    answer = shared_harness.client.get(f"{ORDERS}.csv", headers=shared_harness.headers("admin"))
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(answer.text))}

    assert rows[inventory_orders["portal"]]["unit"] == "'" + FORMULA_UNIT
    assert rows[inventory_orders["wild"]]["requester"] == "'" + FORMULA_PERSON
    assert rows[inventory_orders["shop"]]["serial"] == ""  # no certificate yet


@pytest.mark.parametrize(("cell", "written"), [
    ("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("a=b", "a=b"), ("", ""), ("www.example.com",
                                                                 "www.example.com"),
])
def test_spreadsheet_safe(cell, written):
    assert spreadsheet_safe(cell) == written


def test_the_export_reads_every_match_batch_by_batch(shared_harness, inventory_orders):
    admin = Principal(user_id="u-x", email="x@example.com", name="X", role="admin",
                      account_id=ACCOUNT, unit_ids=())
    exported = inventory.export(shared_harness.service.uow, admin, inventory.InventoryFilter(),
                                batch_size=2)
    assert [order.id for order in exported] == [inventory_orders[k] for k in ALL]


# --- the names index -------------------------------------------------------------------------


def names_of(harness, order_id):
    with harness.service.uow() as uow:
        return set(uow.session.execute(select(OrderName.name).where(
            OrderName.order_id == order_id)).scalars())


def test_every_name_of_an_order_is_indexed_in_both_forms(shared_harness, inventory_orders):
    assert names_of(shared_harness, inventory_orders["portal"]) == {
        "portal.example.org", "xn--bcher-kva.de", "bücher.de"}
    assert names_of(shared_harness, inventory_orders["wild"]) == {"*.example.com"}


def test_changing_an_orders_names_reindexes_them(harness, rsa_key):
    order = place(harness, rsa_key, role="limited", common_name="old.example.com")
    with harness.service.uow() as uow:
        stored = uow.session.get(Order, order["id"])
        stored.common_name, stored.sans = "new.example.com", ["new.example.com",
                                                              "extra.example.com"]
        uow.commit()

    assert names_of(harness, order["id"]) == {"new.example.com", "extra.example.com"}
    admin = harness.headers("admin")
    assert harness.client.get(f"{ORDERS}?name=old", headers=admin).json["items"] == []
    found = harness.client.get(f"{ORDERS}?name=extra", headers=admin).json["items"]
    assert [o["id"] for o in found] == [order["id"]]


def test_an_update_that_keeps_the_names_leaves_the_index_alone(harness, rsa_key):
    order = place(harness, rsa_key, role="limited", common_name="same.example.com")
    with harness.service.uow() as uow:
        uow.session.get(Order, order["id"]).notes = "changed"
        uow.commit()
    assert names_of(harness, order["id"]) == {"same.example.com"}


def test_the_migration_indexes_the_orders_placed_before_it(tmp_path):
    service = OrdersService(make_runtime(tmp_path))
    migrations.upgrade(service.migrations_dir, service.engine, "4c7c8d0decd8")  # the initial
    with service.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO products (code, name, validation_level, wildcard, max_sans, "
            "included_sans, prices_cents, position, active, updated_at) VALUES ('ssl_dv', "
            "'DV', 'dv', 0, 2, 2, '{\"1\": 4900}', 0, 1, '2026-01-01 00:00:00')"))
        connection.execute(text(
            "INSERT INTO orders (id, account_id, status, product_code, term_years, server_type, "
            "common_name, sans, csr_pem, key_description, requester_id, requester_name, "
            "price_cents, created_at, updated_at) VALUES ('o-1', 'a-1', 'issued', 'ssl_dv', 1, "
            "'nginx', 'www.example.com', '[\"www.example.com\", \"xn--bcher-kva.de\"]', "
            "'csr', 'RSA 2048', 'u-1', 'U', 4900, '2026-01-01 00:00:00', "
            "'2026-01-01 00:00:00')"))

    migrations.upgrade(service.migrations_dir, service.engine, "68701b5b366c")

    with service.engine.connect() as connection:
        indexed = set(connection.execute(text("SELECT name FROM order_names WHERE "
                                              "order_id = 'o-1'")).scalars())
    service.dispose()
    assert indexed == {"www.example.com", "xn--bcher-kva.de", "bücher.de"}
