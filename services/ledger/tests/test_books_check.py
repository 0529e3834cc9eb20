"""The proof that the books balance: the after-every-test check and ``chancery-ledger verify``.

Both must be able to fail, so each is shown failing on books corrupted through SQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chancery_ledger import cli
from sqlalchemy import text

from .conftest import TAMPERED, assert_books_balance, order_event

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def books(login, consumer):
    """An account with $100 paid in, $20 captured and $20 held."""
    customer = login("admin")
    assert customer.deposit_card(10_000).status_code == 201
    for order_id in ("a", "b"):
        consumer.handle(order_event("orders.order.approved", customer.account_id, order_id,
                                    price_cents=2_000))
    consumer.handle(order_event("ca_signer.certificate.issued", customer.account_id, "a"))
    return customer


def _corrupt(service, sql: str) -> None:
    with service.uow() as uow:
        uow.session.execute(text(sql))
        uow.commit()


def test_honest_books_pass_the_check(books, service):
    assert_books_balance(service)


@pytest.mark.books_tampered
@pytest.mark.parametrize("sql, reported", [
    ("UPDATE balances SET available_cents = available_cents + 1", "available_cents: journal "
     "says 6000, found 6001"),
    ("UPDATE balances SET reserved_cents = reserved_cents - 1", "reserved_cents: journal says "
     "2000, found 1999"),
    ("UPDATE postings SET amount_cents = amount_cents + 5 WHERE id = (SELECT min(id) FROM "
     "postings)", "sums: journal says 0, found 5"),
])
def test_the_check_fails_on_corrupted_books_naming_what_differs(books, service, sql, reported):
    _corrupt(service, sql)
    with pytest.raises(pytest.fail.Exception, match="do not balance") as failure:
        assert_books_balance(service)
    assert reported in str(failure.value)


def test_the_check_fails_a_test_that_leaves_the_books_corrupted(tmp_path):
    """Run this folder's conftest on two small tests in a separate pytest: the corrupting
    one errors at teardown with the discrepancy, the honest one passes."""
    shutil.copyfile(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_books.py").write_text(textwrap.dedent("""
        from sqlalchemy import text

        def test_that_corrupts_a_cached_balance(login, service):
            assert login("admin").deposit_card(1_000).status_code == 201
            with service.uow() as uow:
                uow.session.execute(text("UPDATE balances SET available_cents = 1001"))
                uow.commit()

        def test_that_keeps_honest_books(login, service):
            assert login("admin").deposit_card(1_000).status_code == 201
    """))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
         "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CI": "true"})
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "2 passed, 1 error" in output, output
    assert "ERROR at teardown of test_that_corrupts_a_cached_balance" in output, output
    assert "available_cents: journal says 1000, found 1001" in output, output


def _with_ledger_environment(monkeypatch, service) -> None:
    """Point ``build("ledger")`` (what the command uses) at the test's database."""
    monkeypatch.setenv("CHANCERY_LEDGER_DATABASE_URL", service.database_url)
    monkeypatch.setenv("CHANCERY_BROKER_URL", "memory://")


def test_verify_command_reports_honest_books_and_exits_0(books, service, monkeypatch, capsys):
    _with_ledger_environment(monkeypatch, service)
    assert cli.main(["verify"]) == 0
    out = capsys.readouterr().out
    assert "accounts checked: 1" in out
    assert "transfers checked: 4" in out  # deposit, two reservations, one capture
    assert "discrepancies: 0" in out
    assert "the books balance" in out


@pytest.mark.books_tampered
def test_verify_command_names_each_discrepancy_and_exits_3(books, service, monkeypatch, capsys):
    _corrupt(service, "UPDATE balances SET available_cents = 5000")
    _with_ledger_environment(monkeypatch, service)
    assert cli.main(["verify"]) == cli.BOOKS_DISAGREE == 3
    out = capsys.readouterr().out
    assert "discrepancies: 1" in out
    (line,) = [line for line in out.splitlines() if line.startswith(books.account_id)]
    assert line.split() == [books.account_id, "available_cents", "5000", "6000"]
    assert "THE BOOKS DO NOT BALANCE" in out


def test_verify_command_without_a_ledger_database_says_so_and_exits_1(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHANCERY_LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    assert cli.main(["verify"]) == 1
    assert "cannot read the ledger's database" in capsys.readouterr().err


def test_verify_command_is_installed_as_an_operator_script():
    run = subprocess.run([str(VENV_BIN / "chancery-ledger"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "chancery-ledger verify" in run.stdout and "exits 0" in run.stdout


def test_the_tampered_marker_is_registered():
    """Without registration ``-p strict-markers`` runs would reject the tests above."""
    assert TAMPERED == "books_tampered"
