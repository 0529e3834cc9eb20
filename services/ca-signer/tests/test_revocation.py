"""Revocation commands: the signer records a revocation once and says so on the bus.

Driven through the real consumer (inbox included) on a migrated SQLite database; the
certificate records are written directly (signing is covered by the PKI tests).
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chancery_ca_signer.model import IssuedCertificate, Issuer, messaging
from chancery_ca_signer.service import CaSignerService
from chancery_shared.messaging.envelope import Actor, Context, new_envelope
from chancery_shared.testing import make_runtime
from sqlalchemy import select

ACCOUNT = "acct-" + "1" * 31
OTHER_ACCOUNT = "acct-" + "2" * 31
ORDER = str(uuid.uuid4())
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    service = CaSignerService(make_runtime(folder))
    service.migrate()
    service.dispose()
    return folder / "ca_signer.db"


@pytest.fixture
def signer(tmp_path: Path, migrated: Path):
    shutil.copyfile(migrated, tmp_path / "ca_signer.db")
    service = CaSignerService(make_runtime(tmp_path))
    with service.uow() as uow:
        uow.session.add(Issuer(id="ica-1", kind="issuing", subject="CN=Test Issuing CA",
                               certificate_pem="-", encrypted_key_pem="-", not_before=NOW,
                               not_after=NOW.replace(year=2030)))
        uow.session.flush()
        for serial, status in (("0a1b2c", "issued"), ("0d0d0d", "signing"),
                               ("0e0e0e", "rejected")):
            uow.session.add(IssuedCertificate(
                serial=serial, issuance_id=str(uuid.uuid4()), order_id=ORDER,
                account_id=ACCOUNT, issuer_id="ica-1", profile="dv", status=status,
                sans=["www.example.com"], not_before=NOW, not_after=NOW.replace(year=2027)))
        uow.commit()
    yield service
    service.dispose()


def revoke(service: CaSignerService, serial: str, reason: str = "key_compromise",
           account_id: str | None = ACCOUNT) -> bool:
    envelope = new_envelope(
        type="ca_signer.certificate.revoke", source="orders",
        context=Context(actor=Actor(user_id="u-1", user_name="Ada Admin"),
                        account_id=account_id, correlation_id=ORDER),
        subject_type="certificate", subject_id=serial, summary="test revoke",
        data={"serial": serial, "reason": reason})
    (consumer,) = service.consumers()
    return consumer.handle(envelope, consumer.handlers[envelope.type])


def record(service: CaSignerService, serial: str) -> IssuedCertificate:
    with service.uow() as uow:
        return uow.session.execute(select(IssuedCertificate).where(
            IssuedCertificate.serial == serial)).scalar_one()


def announced(service: CaSignerService) -> list[dict]:
    with service.engine.connect() as connection:
        rows = connection.execute(select(messaging.outbox.c.body).where(
            messaging.outbox.c.type == "ca_signer.certificate.revoked")
            .order_by(messaging.outbox.c.seq)).scalars()
        return [json.loads(row) for row in rows]


def test_a_revocation_is_recorded_and_announced(signer):
    assert revoke(signer, "0a1b2c", "key_compromise")

    revoked = record(signer, "0a1b2c")
    assert revoked.status == "revoked"
    assert revoked.revocation_reason == "key_compromise"
    assert revoked.revoked_at is not None
    [event] = announced(signer)
    assert event["data"]["serial"] == "0a1b2c"
    assert event["data"]["reason"] == "key_compromise"
    assert event["data"]["revoked_at"].endswith("Z")
    assert event["account_id"] == ACCOUNT
    assert event["correlation_id"] == ORDER
    assert event["actor"] == {"system": "ca-signer"}
    assert "revoked certificate 0a1b2c (key_compromise)" in event["summary"]


def test_a_second_revocation_keeps_the_first_date_and_reason(signer):
    revoke(signer, "0a1b2c", "superseded")
    first = record(signer, "0a1b2c")
    revoke(signer, "0a1b2c", "key_compromise")

    again = record(signer, "0a1b2c")
    assert (again.revoked_at, again.revocation_reason) == (first.revoked_at, "superseded")
    events = announced(signer)
    assert len(events) == 2  # repeated, so orders converges whatever it lost
    assert events[0]["data"] == events[1]["data"]
    assert "already revoked" in events[1]["summary"]


@pytest.mark.parametrize(("serial", "account_id"), [
    ("ffffff", ACCOUNT),          # never issued here
    ("0d0d0d", ACCOUNT),          # signing never finished
    ("0e0e0e", ACCOUNT),          # refused: nothing was signed
    ("0a1b2c", OTHER_ACCOUNT),    # another account's certificate
], ids=["unknown serial", "still signing", "rejected", "another account"])
def test_what_cannot_be_revoked_is_logged_and_ignored(signer, serial, account_id):
    assert revoke(signer, serial, account_id=account_id) is True  # handled, not retried
    assert announced(signer) == []
    assert record(signer, "0a1b2c").status == "issued"


def test_an_unknown_reason_is_recorded_as_unspecified(signer):
    revoke(signer, "0a1b2c", "because")
    assert record(signer, "0a1b2c").revocation_reason == "unspecified"
    assert announced(signer)[0]["data"]["reason"] == "unspecified"


def test_the_revoke_command_reaches_the_signers_queue():
    from chancery_shared.messaging.topology import QUEUES

    assert "ca_signer.certificate.revoke" in QUEUES["ca_signer.commands"].bindings
    assert "ca_signer.certificate.revoked" in QUEUES["orders.events"].bindings
