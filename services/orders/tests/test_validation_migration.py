"""Validations made before evidence was kept: the migration writes an attempt for each,
flagged as migrated, and a migrated domain validation still counts for private products
only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chancery_orders.service import OrdersService
from chancery_shared import migrations
from chancery_shared.testing import TokenFactory, make_runtime
from sqlalchemy import text

from .conftest import ACCOUNT

BEFORE_EVIDENCE = "c21ceaa3f423"  # the revision before validation evidence by method


def test_old_manual_validations_get_flagged_evidence_and_stay_private_only(tmp_path, csr):
    tokens = TokenFactory()
    service = OrdersService(make_runtime(tmp_path, tokens, CHANCERY_CAA_CHECK="false"))
    try:
        migrations.upgrade(service.migrations_dir, service.engine, BEFORE_EVIDENCE)
        validated_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        until = validated_at + timedelta(days=100)
        with service.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO domains (id, account_id, name, method, status, token, created_at,"
                " submitted_by_id, submitted_by_name, validated_at, validated_until,"
                " validated_by_id, validated_by_name, validation_note, validated_with)"
                " VALUES ('d-1', :account, 'example.com', 'dns-txt', 'validated', 'tok',"
                " :at, 'u-1', 'Ann Admin', :at, :until, 'u-op', 'Olga Operator',"
                " 'checked by phone', 'manual')"),
                {"account": ACCOUNT, "at": validated_at, "until": until})
            connection.execute(text(
                "INSERT INTO domains (id, account_id, name, method, status, token, created_at,"
                " submitted_by_id, submitted_by_name) VALUES ('d-2', :account,"
                " 'pending.example.org', 'dns-txt', 'pending', 'tok2', :at, 'u-1', 'Ann')"),
                {"account": ACCOUNT, "at": validated_at})
            connection.execute(text(
                "INSERT INTO organizations (id, account_id, name, country, state_or_province,"
                " locality, status, created_at, validated_at, validated_until,"
                " validated_by_id, validated_by_name, validation_note) VALUES ('o-1',"
                " :account, 'Acme', 'US', 'Oregon', 'Portland', 'validated', :at, :at,"
                " :until, 'u-op', 'Olga Operator', 'state registry')"),
                {"account": ACCOUNT, "at": validated_at, "until": until})

        service.migrate()

        client = service.create_app().test_client()
        admin = tokens.headers(role="admin", account_id=ACCOUNT, user_id="u-adm",
                               name="Ann Admin", unit_ids=())
        [attempt] = client.get("/api/orders/v1/domains/d-1/attempts",
                               headers=admin).json["items"]
        assert attempt["method"] == "manual" and attempt["migrated"] is True
        assert attempt["checked"] == "checked by phone"
        assert attempt["reference"] == "none: migrated, no structured evidence"
        assert attempt["requested_by"] == {"id": "u-op", "name": "Olga Operator"}
        assert attempt["attempted_at"] == validated_at.isoformat() + "Z"
        assert client.get("/api/orders/v1/domains/d-2/attempts",
                          headers=admin).json["items"] == []
        [evidence] = client.get("/api/orders/v1/organizations/o-1/attempts",
                                headers=admin).json["items"]
        assert evidence["migrated"] is True and evidence["source"] == ""
        assert evidence["checked"] == "state registry"
        assert evidence["checked_by"] == {"id": "u-op", "name": "Olga Operator"}

        # the migrated review still covers a private order, never a public one
        for product, status in (("private_tls", "approved"), ("ssl_dv", "pending_approval")):
            placed = client.post("/api/orders/v1/orders", json={
                "product": product, "term_years": 1, "server_type": "nginx",
                "common_name": "www.example.com", "sans": [], "csr": csr}, headers=admin)
            assert placed.status_code == 201, placed.json
            assert placed.json["status"] == status
    finally:
        service.dispose()
