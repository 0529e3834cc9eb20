"""How fast a filtered page of the audit log comes back over 1,000,000 entries (make bench-audit).

    .venv/bin/python services/audit/bench_audit.py [--entries N] [--json PATH]

One run:

a) starts a private PostgreSQL from the repo's deploy package (``Stack``, on free ports
   in a temporary directory; only PostgreSQL, since nothing here uses RabbitMQ and its
   idle scheduler threads would share the two CPUs with the measurement) and migrates
   the audit database with ``AuditService.migrate()``;
b) seeds ``--entries`` entries, generated in Python and loaded with PostgreSQL ``COPY``
   (psycopg 3) into audit_entries, audit_entry_units and audit_logs: 200 accounts of
   very different sizes, 2,000 users, 5 units per account, 40 event types, two years of
   timestamps, order flows whose entries share a target and a correlation id, the whole
   envelope of each message. Rows are written in time order (the log is append-only, so
   its heap is too) with each log's ``sequence`` dense, and, when the schema has them,
   ``prev_hash``/``hash``/``head_hash`` filled with ``chancery_audit.chain`` exactly as
   recording does, so the seeded chains verify. The load drops the tables' indexes and
   constraints and recreates them from their own definitions afterwards (the schema
   ends exactly as migrated), then ``ANALYZE``;
c) times ``handlers.search(uow, principal, EntryFilter(...), limit=50, cursor=...)`` —
   one unit of work per call, as the view does, the units' selectin load included — for
   each role (operator, operator narrowed to one account, an admin, a unit admin of two
   units) and each kind of filter (user, one month, action prefix, target, free text,
   combined), on the first page and on a deep page (a cursor in the middle of the
   results). Kinds take turns, so a change of load on a shared box spreads over all;
   each has at most ``QUERIES`` queries and ``CELL_BUDGET`` seconds;
d) prints p50/p95/p99 per kind and the headline p95, runs ``EXPLAIN ANALYZE`` on the
   slowest query of each kind over the target and writes everything to JSON.

The cluster and its files are always stopped and deleted at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import queue as queue_module
import random
import signal
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chancery_audit import handlers
from chancery_audit.handlers import EntryFilter
from chancery_audit.model import HEAD_CHARS, PLATFORM_LOG, log_key, searchable_text
from chancery_audit.service import AuditService
from chancery_shared.auth.tokens import OPERATOR, Principal
from chancery_shared.messaging.envelope import isoformat
from chancery_shared.service import Runtime
from chancery_shared.web.pagination import encode_cursor
from sqlalchemy import event, select
from sqlalchemy.engine import make_url

try:  # the hash chain (issue 8); seeded only when the schema has its columns
    from chancery_audit import chain
except ImportError:  # pragma: no cover - before the chain exists
    chain = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = REPO / "var" / "bench" / "audit.json"
TARGET_MS = 100.0
PAGE = 50
#: Queries per kind (role x filter x page) at most.
QUERIES = 200
#: Seconds of query time one kind may use; a kind slower than that stops early.
CELL_BUDGET = 4.0
#: ... but not before it has this many samples (unless HARD_CELL_BUDGET is reached).
MIN_QUERIES = 20
HARD_CELL_BUDGET = 12.0
WARMUP_QUERIES = 3
SEED = 20260801

ACCOUNTS = 200
USERS = 2_000
UNITS_PER_ACCOUNT = 5
OPERATORS = 6
YEARS = 2
PLATFORM = "platform"
AUDIT_TABLES = ("audit_logs", "audit_entries", "audit_entry_units", "audit_entry_texts")
#: The big tables, loaded without their indexes and constraints (restored afterwards).
BULK_TABLES = ("audit_entries", "audit_entry_units", "audit_entry_texts")

# --- the world the entries describe --------------------------------------------------

FIRST = ("Alice", "Bruno", "Chen", "Dara", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas",
         "Kenji", "Lena", "Marta", "Nikhil", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tara",
         "Ugo", "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Amara", "Björn", "Chloé", "Diego",
         "Emeka", "Fatima", "Goran", "Hana", "Ivan", "José", "Kofi", "Leila", "Mateo", "Nora")
LAST = ("Ng", "Okafor", "Schmidt", "Rossi", "Haddad", "Kowalski", "Tanaka", "Silva", "Novak",
        "Dubois", "Andersen", "Ivanova", "Moreau", "Petrov", "Müller", "García", "Nakamura",
        "Osei", "Kaur", "Fischer", "Lindqvist", "Mensah", "O'Brien", "Costa", "Yilmaz",
        "Horvat", "Jansen", "Kim", "Larsen", "Mahlangu", "Nielsen", "Papadopoulos", "Quispe",
        "Reyes", "Sato", "Torres", "Ueda", "Varga", "Wójcik", "Zhang")
WORDS = ("north", "wind", "blue", "harbor", "maple", "summit", "river", "cedar", "atlas",
         "orbit", "nova", "pixel", "granite", "meadow", "falcon", "ember", "quartz", "delta",
         "lumen", "aspen", "coral", "vertex", "sierra", "tidal", "zephyr", "copper", "willow",
         "beacon", "prairie", "lotus", "saffron", "nimbus", "canyon", "polar", "ridge",
         "violet", "hollow", "crest", "fable", "keystone", "lattice", "mosaic", "onyx",
         "pioneer", "quill", "radiant", "solstice", "trellis", "umber", "vantage")
TLDS = ("com", "net", "io", "org", "de", "co.uk", "fr", "eu")
HOSTS = ("www", "api", "mail", "shop", "portal", "vpn", "login", "app", "cdn", "intranet")
UNIT_NAMES = ("Finance", "Engineering", "Marketing", "Operations", "Legal", "Sales",
              "Support", "Research")
PRODUCTS = ("DV", "OV", "EV", "DV wildcard", "OV multi-domain")


@dataclasses.dataclass(frozen=True)
class Action:
    type: str
    weight: float
    subject: str          # subject type
    actor: str            # "user", "system", "operator"
    summary: str          # str.format template
    platform: bool = False  # recorded in the platform's log (no account)

    @property
    def source(self) -> str:
        return self.type.split(".")[0].replace("_", "-")


# 40 event types of the catalogue, weighted as a busy platform would see them.
ACTIONS = (
    Action("identity.session.created", 12, "session", "user", "{user} signed in from {ip}"),
    Action("identity.session.ended", 7, "session", "user", "{user} signed out"),
    Action("identity.login.failed", 1.5, "user", "system",
           "Failed sign-in for {email} from {ip} (wrong password)"),
    Action("identity.user.created", 0.4, "user", "user", "{user} created user {other} ({email})"),
    Action("identity.user.updated", 0.4, "user", "user",
           "{user} moved user {other} to unit {unit}"),
    Action("identity.user.deactivated", 0.1, "user", "user", "{user} deactivated user {other}"),
    Action("identity.user.password_changed", 0.4, "user", "user", "{user} changed their password"),
    Action("identity.user.unlocked", 0.05, "user", "user", "{user} unlocked user {other}"),
    Action("identity.unit.created", 0.05, "unit", "user", "{user} created unit {unit}"),
    Action("identity.unit.updated", 0.1, "unit", "user", "{user} renamed unit {unit}"),
    Action("identity.api_key.created", 0.2, "api_key", "user",
           "{user} created API key {key} for unit {unit}"),
    Action("identity.api_key.revoked", 0.1, "api_key", "user", "{user} revoked API key {key}"),
    Action("identity.account.created", 0.02, "account", "operator",
           "{user} created account {account}", platform=True),
    Action("identity.signing_key.rotated", 0.01, "signing_key", "system",
           "Rotated the token signing key {key}", platform=True),
    Action("orders.order.submitted", 6, "order", "user",
           "{user} submitted order {order} for {domain} ({product}, {years} year)"),
    Action("orders.order.approved", 5, "order", "user",
           "{user} approved order {order} for {domain}"),
    Action("orders.order.rejected", 0.4, "order", "user",
           "{user} rejected order {order} for {domain}: not our domain"),
    Action("orders.order.cancelled", 0.4, "order", "user", "{user} cancelled order {order}"),
    Action("orders.order.edited", 0.8, "order", "user",
           "{user} edited order {order}: added {domain}"),
    Action("orders.order.awaiting_funds", 0.4, "order", "system",
           "Order {order} for {domain} waits for funds ({amount} short)"),
    Action("orders.order.issued", 5, "order", "system",
           "Order {order} for {domain} issued: certificate {serial}"),
    Action("orders.order.failed", 0.1, "order", "system",
           "Order {order} for {domain} failed: CAA record forbids issuance"),
    Action("orders.order.expired", 1, "order", "system", "Order {order} for {domain} expired"),
    Action("orders.order.revoked", 0.4, "order", "user",
           "{user} revoked order {order} for {domain} (key compromise)"),
    Action("orders.order.reissue_requested", 0.4, "order", "user",
           "{user} asked to reissue order {order} for {domain}"),
    Action("orders.order.reissued", 0.35, "order", "system",
           "Order {order} for {domain} reissued: certificate {serial}"),
    Action("orders.order.refunded", 0.15, "order", "system",
           "Order {order} refunded {amount} to unit {unit}"),
    Action("orders.domain.submitted", 0.8, "domain", "user",
           "{user} submitted domain {domain} for validation"),
    Action("orders.domain.validated", 0.8, "domain", "system",
           "Domain {domain} validated by DNS TXT record"),
    Action("orders.renewal.notice_sent", 1.5, "order", "system",
           "Renewal notice sent to {email} for {domain} (order {order}, expires in 30 days)"),
    Action("ledger.funds.reserved", 5, "order", "system",
           "Reserved {amount} for order {order} from unit {unit}"),
    Action("ledger.funds.captured", 5, "order", "system", "Captured {amount} for order {order}"),
    Action("ledger.funds.released", 0.4, "order", "system",
           "Released {amount} reserved for order {order}"),
    Action("ledger.funds.refunded", 0.15, "order", "system",
           "Refunded {amount} for order {order}"),
    Action("ledger.deposit.pending", 0.3, "deposit", "user",
           "{user} announced a deposit of {amount} (wire transfer)"),
    Action("ledger.deposit.settled", 0.3, "deposit", "system", "Deposit of {amount} settled"),
    Action("ledger.unit_funds.allocated", 0.25, "unit", "user",
           "{user} allocated {amount} to unit {unit}"),
    Action("ca_signer.certificate.issued", 5, "certificate", "system",
           "Certificate {serial} issued for {domain} (order {order})"),
    Action("ca_signer.certificate.revoked", 0.4, "certificate", "system",
           "Certificate {serial} for {domain} revoked (keyCompromise)"),
    Action("ca_signer.crl.published", 1, "crl", "system",
           "CRL {number} of Chancery Issuing CA published with {count} entries", platform=True),
)
assert len({a.type for a in ACTIONS}) == 40
ORDER_FLOW = {"order", "certificate"}
UNITS_FROM_ORDER = {"order", "certificate"}


@dataclasses.dataclass
class User:
    id: str
    name: str
    email: str
    ip: str
    unit_id: str


@dataclasses.dataclass
class Order:
    id: str
    short: str
    unit_id: str
    domain: str
    correlation_id: str
    certificate_id: str
    serial: str
    cents: int


@dataclasses.dataclass
class Account:
    id: str
    key: str
    weight: float
    name: str
    users: list[User]
    user_cum: list[float]
    units: list[tuple[str, str]]  # (id, name)
    domains: list[str]
    orders: list[Order] = dataclasses.field(default_factory=list)
    entries: int = 0


def fake_uuid(rng: random.Random) -> str:
    """A random version-4 UUID string (the uuid module's objects cost more per row)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


class World:
    """Accounts, users, units, domains and the orders that appear as entries are made."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.accounts: list[Account] = []
        # very different sizes, as on a real platform: the largest is ~50x the median
        weights = [1 / (i + 1) ** 0.8 for i in range(ACCOUNTS)]
        user_counts = self._split(USERS, weights, minimum=2)
        for i, weight in enumerate(weights):
            account_id = "acct-" + rng.getrandbits(124).to_bytes(16, "big").hex()[:31]
            label = f"{rng.choice(WORDS)}{rng.choice(WORDS)}"
            units = [(fake_uuid(rng), UNIT_NAMES[j]) for j in range(UNITS_PER_ACCOUNT)]
            domains = [f"{label}.{rng.choice(TLDS)}"] + [
                f"{rng.choice(WORDS)}-{label}.{rng.choice(TLDS)}" for _ in range(3)]
            users = [self._user(label, units) for _ in range(user_counts[i])]
            activity = [1 / (j + 1) ** 0.7 for j in range(len(users))]
            self.accounts.append(Account(account_id, log_key(account_id), weight, label, users,
                                         cumulative(activity), units, domains))
        self.account_cum = cumulative(weights)
        self.operators = [self._user("chancery", [("", "")]) for _ in range(OPERATORS)]

    def _split(self, total: int, weights: Sequence[float], minimum: int) -> list[int]:
        scale = (total - minimum * len(weights)) / sum(weights)
        counts = [minimum + int(w * scale) for w in weights]
        counts[0] += total - sum(counts)
        return counts

    def _user(self, label: str, units: Sequence[tuple[str, str]]) -> User:
        rng = self.rng
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}".lower().replace("'", "") + f"@{label}.example"
        ip = rng.choice((f"203.0.113.{rng.randrange(1, 255)}",
                         f"198.51.100.{rng.randrange(1, 255)}",
                         f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                         f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"))
        return User(fake_uuid(rng), f"{first} {last}", email, ip, rng.choice(units)[0])

    def user_of(self, account: Account) -> User:
        return self.rng.choices(account.users, cum_weights=account.user_cum)[0]

    def new_order(self, account: Account, unit_id: str | None = None) -> Order:
        rng = self.rng
        order_id = fake_uuid(rng)
        order = Order(order_id, order_id[:8], unit_id or rng.choice(account.units)[0],
                      f"{rng.choice(HOSTS)}.{rng.choice(account.domains)}", fake_uuid(rng),
                      fake_uuid(rng), f"{rng.getrandbits(128):032X}",
                      rng.choice((4900, 9900, 14900, 29900, 59900)))
        account.orders.append(order)
        return order

    def recent_order(self, account: Account) -> Order:
        """An order submitted a little earlier: the next steps of its flow."""
        if not account.orders:
            return self.new_order(account)
        back = min(len(account.orders) - 1, int(self.rng.expovariate(1 / 6)))
        return account.orders[-1 - back]


# --- the entries ----------------------------------------------------------------------


def money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


class EntryMaker:
    """One entry's column values (and its units) at a time, in time order."""

    def __init__(self, world: World, sealer: Sealer | None, accounts: Sequence[Account],
                 platform_share: float) -> None:
        self.world = world
        self.rng = world.rng
        self.sealer = sealer
        self.logs: dict[str, dict[str, Any]] = {}  # key -> {sequence, head, created_at, ...}
        self.accounts = list(accounts)
        self.account_cum = cumulative([a.weight for a in self.accounts])
        self.platform_share = platform_share
        self.platform_actions = [a for a in ACTIONS if a.platform]
        self.platform_cum = cumulative([a.weight for a in self.platform_actions])
        self.account_actions = [a for a in ACTIONS if not a.platform]
        self.account_action_cum = cumulative([a.weight for a in self.account_actions])
        self.crl_number = 1000

    def entry(self, at: datetime) -> tuple[dict[str, Any], list[str]]:
        rng, world = self.rng, self.world
        account: Account | None
        if self.platform_share and rng.random() < self.platform_share:
            action = rng.choices(self.platform_actions, cum_weights=self.platform_cum)[0]
            account = None
        else:
            action = rng.choices(self.account_actions, cum_weights=self.account_action_cum)[0]
            account = rng.choices(self.accounts, cum_weights=self.account_cum)[0]
        fields: dict[str, Any] = {}
        units: list[str] = []
        data: dict[str, Any] = {}
        user = None
        if action.actor == "user" and account is not None:
            user = world.user_of(account)
        elif action.actor == "operator":
            user = rng.choice(world.operators)
        correlation_id = None
        causation_id = None
        subject_id: str
        order: Order | None = None
        other_name, email = "", user.email if user else ""
        if action.subject in ORDER_FLOW and account is not None:
            order = (world.new_order(account, user.unit_id if user else None)
                     if action.type == "orders.order.submitted" else world.recent_order(account))
            correlation_id = order.correlation_id
            if action.actor == "system":
                causation_id = fake_uuid(rng)
            subject_id = order.certificate_id if action.subject == "certificate" else order.id
            data = {"order_id": order.id, "unit_id": order.unit_id}
            if action.type.startswith("ledger."):
                data = {"order_id": order.id, "amount_cents": order.cents}  # unit via the flow
            elif action.subject == "certificate":
                data.update(certificate_id=order.certificate_id, serial=order.serial,
                            common_name=order.domain)
            else:
                data["price_cents"] = order.cents
            units = [order.unit_id]
        elif action.subject == "unit" and account is not None:
            unit_id, _ = rng.choice(account.units)
            subject_id, units = unit_id, [unit_id]
            data = {"unit_id": unit_id}
        elif action.subject == "user" and account is not None:
            other = world.user_of(account)
            other_name, email = other.name, other.email
            subject_id = other.id
            data = {"user_id": other.id, "unit_ids": [other.unit_id]}
            units = [other.unit_id]
            if action.type == "identity.user.updated":
                new_unit = rng.choice(account.units)[0]
                data = {"user_id": other.id, "changes": {"unit_id": [other.unit_id, new_unit]}}
                units = sorted({other.unit_id, new_unit})
            elif action.type == "identity.login.failed":
                data, units = {"email": other.email, "reason": "wrong_password"}, []
                fields["ip_from"] = other.ip
        elif action.subject == "api_key" and account is not None:
            unit_id = rng.choice(account.units)[0]
            subject_id = fake_uuid(rng)
            data, units = {"api_key_id": subject_id, "unit_id": unit_id}, [unit_id]
        elif action.subject == "domain" and account is not None:
            subject_id = f"{rng.choice(HOSTS)}.{rng.choice(account.domains)}"
            unit_id = rng.choice(account.units)[0]
            data, units = {"domain": subject_id, "unit_id": unit_id, "method": "dns-01"}, [unit_id]
        else:  # sessions, deposits, platform subjects
            subject_id = fake_uuid(rng)
            data = {"id": subject_id}
        if correlation_id is None:
            correlation_id = fake_uuid(rng)
        if not email and account is not None:
            email = account.users[0].email  # a notice goes to the account's contact

        unit_name = ""
        if units and account is not None:
            unit_name = next((name for uid, name in account.units if uid == units[-1]), "")
        self.crl_number += action.type == "ca_signer.crl.published"
        summary = action.summary.format(
            user=user.name if user else "", ip=fields.get("ip_from") or (user.ip if user else ""),
            email=email, other=other_name, unit=unit_name,
            key=subject_id[:8], account=fake_uuid(rng)[:8],
            order=order.short if order else "", domain=order.domain if order else subject_id,
            product=rng.choice(PRODUCTS), years=1, amount=money(order.cents if order else
                                                               rng.randrange(10_000, 5_000_000)),
            serial=order.serial if order else "", number=self.crl_number,
            count=rng.randrange(2_000, 60_000))

        account_id = account.id if account else None
        key = account.key if account else PLATFORM_LOG
        log = self.logs.get(key)
        if log is None:
            log = self.logs[key] = {"key": key, "account_id": account_id, "last_sequence": 0,
                                    "created_at": at, "head_hash": None, "first_sequence": 1,
                                    "anchor_hash": None}
            if self.sealer:
                log["head_hash"] = self.sealer.genesis(key)
        log["last_sequence"] += 1
        if account is not None:
            account.entries += 1

        system = action.source if action.actor == "system" else None
        actor = ({"system": system} if system else
                 {"user_id": user.id, "user_name": user.name, "ip": user.ip} if user else
                 {"system": action.source})
        if system and fields.get("ip_from"):
            actor["ip"] = fields["ip_from"]
        event_id = fake_uuid(rng)
        envelope = {
            "event_id": event_id, "type": action.type, "schema_version": 1,
            "occurred_at": isoformat(at), "source": action.source, "account_id": account_id,
            "actor": actor, "correlation_id": correlation_id, "causation_id": causation_id,
            "subject": {"type": action.subject, "id": subject_id}, "summary": summary,
            "data": data,
        }
        values = {
            "id": fake_uuid(rng), "event_id": event_id, "log_key": key,
            "sequence": log["last_sequence"], "account_id": account_id, "at": at,
            "recorded_at": at + timedelta(milliseconds=rng.randrange(5, 900)),
            "user_id": actor.get("user_id"), "user_name": actor.get("user_name") or system
            or actor.get("system"), "ip": actor.get("ip"), "service": action.source,
            "action": action.type, "subject_type": action.subject, "subject_id": subject_id,
            "target": f"{action.subject}:{subject_id}", "description": summary,
            "correlation_id": correlation_id, "causation_id": causation_id, "schema_version": 1,
            "envelope": json.dumps(envelope, separators=(",", ":"), sort_keys=True),
        }
        units = sorted(set(units))
        if self.sealer:
            values["prev_hash"] = log["head_hash"]
            values["hash"] = log["head_hash"] = self.sealer.seal(values, units,
                                                                  values["prev_hash"])
        return values, units


class Sealer:
    """``chancery_audit.chain`` applied to plain values, as recording applies it to entries."""

    def __init__(self) -> None:
        assert chain is not None
        self.genesis: Callable[[str], str] = chain.genesis
        self.entry_hash = getattr(chain, "entry_hash", None)
        self.content_of = getattr(chain, "content_of", None)

    def seal(self, values: dict[str, Any], unit_ids: list[str], prev_hash: str) -> str:
        if self.entry_hash is not None:  # the content is the entry's own fields: pass them
            return self.entry_hash(prev_hash, {**values, "unit_ids": unit_ids})
        entry = types.SimpleNamespace(**values, unit_ids=unit_ids, units=unit_ids)
        chain.seal(entry, prev_hash)  # an ORM-style helper only: the same, on a stand-in
        return entry.hash


# --- the database ------------------------------------------------------------------------


def psycopg_url(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def table_columns(cur: Any, table: str) -> list[tuple[str, bool, bool]]:
    """(name, nullable, has default) of the table as migrated, in order."""
    cur.execute("SELECT column_name, is_nullable = 'YES', column_default IS NOT NULL "
                "FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position", (table,))
    return cur.fetchall()


def copy_columns(cur: Any, table: str, known: set[str]) -> list[str]:
    """The columns to COPY: every one we know; a NOT NULL one we do not know is an error."""
    columns = []
    for name, nullable, has_default in table_columns(cur, table):
        if name in known:
            columns.append(name)
        elif not nullable and not has_default:
            raise SystemExit(f"{table}.{name} is NOT NULL and the seeder does not know it: "
                             "teach EntryMaker its value")
    return columns


@dataclasses.dataclass
class Schema:
    """The audit tables' indexes and constraints, to drop before the load and restore."""

    indexes: list[str]                       # CREATE INDEX ... of plain indexes
    keys: list[tuple[str, str, str]]         # (table, name, definition) of PK / UNIQUE
    foreign: list[tuple[str, str, str]]      # (table, name, definition) of FOREIGN KEY

    @classmethod
    def read(cls, cur: Any) -> Schema:
        cur.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype "
            "FROM pg_constraint c WHERE c.contype IN ('p', 'u', 'f') "
            "AND (c.conrelid::regclass::text = ANY(%s) "
            "     OR (c.contype = 'f' AND c.confrelid::regclass::text = ANY(%s)))",
            (list(BULK_TABLES), list(BULK_TABLES)))
        keys, foreign = [], []
        for table, name, definition, kind in cur.fetchall():
            (foreign if kind == "f" else keys).append((table, name, definition))
        cur.execute(
            "SELECT i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            "AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
            "WHERE c.conname = i.indexname AND c.contype IN ('p', 'u'))",
            (list(BULK_TABLES),))
        return cls([row[0] for row in cur.fetchall()], keys, foreign)

    def drop(self, cur: Any) -> None:
        for table, name, _ in self.foreign + self.keys:
            cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for definition in self.indexes:
            name = definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0]
            cur.execute(f"DROP INDEX {name}")

    def restore(self, cur: Any, say: Callable[[str], None]) -> None:
        for table, name, definition in self.keys:
            started = time.monotonic()
            cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            say(f"{name} {time.monotonic() - started:.1f}s")
        for definition in self.indexes:
            started = time.monotonic()
            cur.execute(definition)
            say(f"{definition.split(' INDEX ', 1)[1].split(' ON ', 1)[0]} "
                f"{time.monotonic() - started:.1f}s")
        for table, name, definition in self.foreign:
            started = time.monotonic()
            cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            say(f"{name} {time.monotonic() - started:.1f}s")


def timestamps(count: int, rng: random.Random, start: datetime,
               span: int) -> Iterator[datetime]:
    """``count`` moments in ``span`` microseconds from ``start``, oldest first, busier
    in working hours."""
    points = []
    for _ in range(count):
        offset = rng.randrange(span)
        hour = (offset // 3_600_000_000) % 24
        if (hour < 7 or hour > 19) and rng.random() < 0.6:  # quieter at night
            offset = rng.randrange(span)
        points.append(offset)
    points.sort()
    for offset in points:
        yield start + timedelta(microseconds=offset)


@dataclasses.dataclass
class Seeded:
    world: World
    logs: dict[str, dict[str, Any]]
    start: datetime
    end: datetime
    entries: int
    units: int
    seconds: dict[str, float]
    chained: bool


def copy_text(value: Any) -> str:
    """One field in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                    .replace("\r", "\\r"))
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@dataclasses.dataclass
class Plan:
    """What one generating process makes: its accounts' logs (and maybe the platform's)."""

    worker: int
    accounts: list[int]
    count: int
    platform_share: float
    columns: list[str]
    chained: bool
    start: datetime
    span: int
    slices: int


def generate(plan: Plan, world: World, out: Any) -> None:
    """In a child process: COPY text of every entry of ``plan``, one message per time
    slice (so the parent writes the table in time order), then the logs' final state."""
    try:
        world.rng = rng = random.Random(SEED * 1000 + plan.worker)
        maker = EntryMaker(world, Sealer() if plan.chained else None,
                           [world.accounts[i] for i in plan.accounts], plan.platform_share)
        columns = plan.columns
        slice_length = plan.span // plan.slices + 1
        current, lines, unit_lines, text_lines = 0, [], [], []

        def send() -> None:
            out.put(("slice", "".join(lines).encode(), "".join(unit_lines).encode(),
                     "".join(text_lines).encode()))
            for chunk in (lines, unit_lines, text_lines):
                chunk.clear()

        for at in timestamps(plan.count, rng, plan.start, plan.span):
            index = (at - plan.start) // timedelta(microseconds=slice_length)
            while index > current:
                send()
                current += 1
            values, units = maker.entry(at)
            lines.append("\t".join([copy_text(values[c]) for c in columns]) + "\n")
            for unit_id in units:
                unit_lines.append(f"{values['id']}\t{unit_id}\t{copy_text(values['at'])}\t"
                                  f"{copy_text(values['account_id'])}\t"
                                  f"{copy_text(values['action'])}\n")
            text = searchable_text(values["description"], values["user_name"], values["target"])
            text_lines.append(f"{values['id']}\t{copy_text(values['account_id'])}\t"
                              f"{{{','.join(sorted(set(units)))}}}\t"
                              f"{copy_text(values['at'])}\t{copy_text(text)}\t"
                              f"{copy_text(text[:HEAD_CHARS])}\t"
                              f"{'t' if len(text) <= HEAD_CHARS else 'f'}\n")
        while current < plan.slices:
            send()
            current += 1
        orders = {i: world.accounts[i].orders for i in plan.accounts}
        entries = {i: world.accounts[i].entries for i in plan.accounts}
        out.put(("done", maker.logs, orders, entries))
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops
        import traceback

        out.put(("error", traceback.format_exc()))


def plans(world: World, count: int, workers: int, columns: list[str], chained: bool,
          start: datetime, span: int) -> list[Plan]:
    """Accounts dealt round-robin (the big ones spread out); the platform log to worker 0;
    entries shared in proportion to the accounts' weights."""
    weights = [a.weight for a in ACTIONS]
    platform_count = round(count * sum(a.weight for a in ACTIONS if a.platform) / sum(weights))
    account_count = count - platform_count
    total = sum(a.weight for a in world.accounts)
    result, given = [], 0
    slices = max(8, min(104, count // 5_000))
    for w in range(workers):
        accounts = list(range(w, len(world.accounts), workers))
        share = (account_count - given if w == workers - 1 else
                 round(account_count * sum(world.accounts[i].weight for i in accounts) / total))
        given += share
        own = share + (platform_count if w == 0 else 0)
        result.append(Plan(w, accounts, own, platform_count / own if w == 0 and own else 0.0,
                           columns, chained, start, span, slices))
    return result


def seed(url: str, count: int, workers: int, rng: random.Random,
         say: Callable[[str], None]) -> Seeded:
    import multiprocessing

    import psycopg

    seconds: dict[str, float] = {}
    end = datetime.now(UTC).replace(microsecond=0)
    span = int(YEARS * 365.25 * 86400 * 1_000_000)
    start = end - timedelta(microseconds=span)
    world = World(rng)
    logs: dict[str, dict[str, Any]] = {}
    with psycopg.connect(url) as conn:
        cur = conn.cursor()
        # session settings for the load only; the server keeps its stack defaults
        cur.execute("SET maintenance_work_mem = '256MB'")
        cur.execute("SET synchronous_commit = off")
        entry_columns = copy_columns(cur, "audit_entries", ENTRY_FIELDS)
        chained = "hash" in entry_columns and chain is not None
        if "hash" in entry_columns and chain is None:
            raise SystemExit("audit_entries has a hash column but chancery_audit.chain is missing")
        if not chained:
            entry_columns = [c for c in entry_columns if c not in ("prev_hash", "hash")]
        unit_columns = copy_columns(cur, "audit_entry_units",
                                    {"entry_id", "unit_id", "at", "account_id", "action"})
        if unit_columns != ["entry_id", "unit_id", "at", "account_id", "action"]:
            raise SystemExit(f"audit_entry_units has columns {unit_columns}: teach the seeder")
        log_columns = copy_columns(cur, "audit_logs", {
            "key", "account_id", "last_sequence", "created_at", "head_hash", "first_sequence",
            "anchor_hash"})
        schema = Schema.read(cur)
        # created (truncated) in this transaction: COPY FREEZE writes the rows frozen and
        # all-visible, as they would be once autovacuum had passed on an older table
        # (with the empty tables that refer to them, such as checkpoints)
        cur.execute("SELECT DISTINCT conrelid::regclass::text FROM pg_constraint "
                    "WHERE contype = 'f' AND confrelid::regclass::text = ANY(%s)",
                    (list(AUDIT_TABLES),))
        referring = {row[0] for row in cur.fetchall()} - set(AUDIT_TABLES)
        cur.execute(f"TRUNCATE {', '.join([*AUDIT_TABLES, *sorted(referring)])}")
        schema.drop(cur)

        started = time.monotonic()
        context = multiprocessing.get_context("fork")  # the world is shared, not pickled
        work = plans(world, count, workers, entry_columns, chained, start, span)
        queues = [context.Queue(maxsize=3) for _ in work]
        processes = [context.Process(target=generate, args=(plan, world, queue), daemon=True,
                                     name=f"bench-audit-seed-{plan.worker}")
                     for plan, queue in zip(work, queues, strict=True)]
        for process in processes:
            process.start()
        unit_chunks: list[bytes] = []
        text_chunks: list[bytes] = []
        copied = 0
        last_say = started
        try:
            def receive(queue: Any, process: Any) -> tuple[Any, ...]:
                while True:
                    try:
                        message = queue.get(timeout=5)
                    except queue_module.Empty:
                        if not process.is_alive():
                            raise SystemExit(f"{process.name} died (exit {process.exitcode})"
                                             ) from None
                        continue
                    if message[0] == "error":
                        raise SystemExit(f"{process.name} failed:\n{message[1]}")
                    return message

            with cur.copy(f"COPY audit_entries ({', '.join(entry_columns)}) FROM STDIN "
                          "WITH (FREEZE)") as copy:
                for _ in range(work[0].slices):
                    for queue, process in zip(queues, processes, strict=True):
                        _, entries_text, units_text, texts_text = receive(queue, process)
                        copy.write(entries_text)
                        copied += entries_text.count(b"\n")
                        unit_chunks.append(units_text)
                        text_chunks.append(texts_text)
                    if time.monotonic() - last_say > 15:
                        last_say = time.monotonic()
                        say(f"{copied:,} entries in {last_say - started:.0f}s")
            for queue, process, plan in zip(queues, processes, work, strict=True):
                _, worker_logs, orders, entries = receive(queue, process)
                logs.update(worker_logs)
                for i in plan.accounts:
                    world.accounts[i].orders = orders[i]
                    world.accounts[i].entries = entries[i]
            for process in processes:
                process.join(30)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                    process.join(5)
        seconds["generate_and_copy_entries"] = time.monotonic() - started
        started = time.monotonic()
        with cur.copy("COPY audit_entry_units (entry_id, unit_id, at, account_id, action) "
                      "FROM STDIN WITH (FREEZE)") as copy:
            for chunk in unit_chunks:
                copy.write(chunk)
        unit_rows = sum(chunk.count(b"\n") for chunk in unit_chunks)
        del unit_chunks
        with cur.copy("COPY audit_entry_texts (entry_id, account_id, unit_ids, at, text, "
                      "head, complete) "
                      "FROM STDIN WITH (FREEZE)") as copy:
            for chunk in text_chunks:
                copy.write(chunk)
        del text_chunks
        with cur.copy(f"COPY audit_logs ({', '.join(log_columns)}) FROM STDIN "
                      "WITH (FREEZE)") as copy:
            for log in logs.values():
                copy.write_row([log[c] for c in log_columns])
        seconds["copy_units_texts_and_logs"] = time.monotonic() - started
        say(f"{copied:,} entries, {unit_rows:,} unit rows, {len(logs)} logs copied; "
            "restoring keys and indexes")
        started = time.monotonic()
        schema.restore(cur, lambda message: say(f"  {message}"))
        seconds["indexes_and_constraints"] = time.monotonic() - started
        conn.commit()
        started = time.monotonic()
        conn.autocommit = True
        for table in AUDIT_TABLES:
            cur.execute(f"ANALYZE {table}")
        seconds["analyze"] = time.monotonic() - started
    if copied != count:
        raise SystemExit(f"seeded {copied:,} entries instead of {count:,}")
    return Seeded(world, logs, start, end, count, unit_rows, seconds, chained)


ENTRY_FIELDS = {"id", "event_id", "log_key", "sequence", "account_id", "at", "recorded_at",
                "user_id", "user_name", "ip", "service", "action", "subject_type", "subject_id",
                "target", "description", "correlation_id", "causation_id", "schema_version",
                "envelope", "prev_hash", "hash"}


def check_chains(service: AuditService, seeded: Seeded) -> str:
    """Verify a few seeded logs with the service's own verifier (``chancery-audit verify``
    walks every log the same way; all of them would take minutes through the ORM)."""
    if not seeded.chained:
        return "not checked: the schema has no hash chain yet"
    try:
        from chancery_audit.model import AuditLog
        from chancery_audit.verify import verify_log
    except ImportError:
        return "not checked: chancery_audit.verify is missing"
    by_size = sorted(seeded.logs, key=lambda k: seeded.logs[k]["last_sequence"])
    chosen = list(dict.fromkeys([by_size[0], by_size[len(by_size) // 2], PLATFORM_LOG]))
    chosen = [key for key in chosen if key in seeded.logs]
    started, total = time.monotonic(), 0
    with service.uow() as uow:
        for key in chosen:
            audit_log = uow.session.execute(select(AuditLog).where(AuditLog.key == key)
                                            ).scalar_one()
            result = verify_log(uow.session, audit_log)
            if not result.ok:
                raise SystemExit(f"the seeded log {key} does not verify: {result.first_bad}")
            total += result.entries_checked
    return (f"verify_log passes on {len(chosen)} logs ({total:,} entries, "
            f"{time.monotonic() - started:.1f}s)")


# --- the queries ---------------------------------------------------------------------


@dataclasses.dataclass
class Scope:
    """A reader: who they are and which part of the world their filters draw from."""

    key: str
    label: str
    principal: Principal
    account: Account | None       # None: any account, weighted by its size
    narrow: bool = False          # operator: pass account_id in the filter


@dataclasses.dataclass
class Query:
    wanted: EntryFilter
    cursor: str | None


@dataclasses.dataclass
class Cell:
    key: str
    role: str
    kind: str
    page: str
    make: Callable[[], Query]
    samples: list[float] = dataclasses.field(default_factory=list)
    rows: list[int] = dataclasses.field(default_factory=list)
    spent: float = 0.0
    slowest: tuple[float, Query] | None = None
    stopped: str = ""

    def wants_more(self) -> bool:
        n = len(self.samples)
        if n >= QUERIES:
            return False
        if self.spent >= HARD_CELL_BUDGET:
            self.stopped = f"stopped after {self.spent:.0f}s"
            return False
        if self.spent >= CELL_BUDGET and n >= MIN_QUERIES:
            self.stopped = f"stopped after {self.spent:.0f}s"
            return False
        return True


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentile_per_kind(cells: Sequence[Cell], p: float) -> float:
    """The percentile over every sample, each kind weighing the same however many samples
    it has (a slow kind stops early; a plain pool would all but hide it)."""
    weighted = sorted((ms, 1 / len(c.samples)) for c in cells if c.samples for ms in c.samples)
    wanted, running = sum(w for _, w in weighted) * p / 100, 0.0
    for ms, weight in weighted:
        running += weight
        if running >= wanted:
            return ms
    return weighted[-1][0] if weighted else float("nan")


class Queries:
    """Realistic filters for a scope, drawn from the seeded world."""

    ACTION_PREFIXES = ("orders", "ledger", "identity", "ca_signer", "orders.order",
                       "ledger.funds", "identity.session", "identity.user",
                       "ca_signer.certificate", "orders.domain", "identity.api_key")
    COMMON_WORDS = ("approved", "revoked", "signed in", "reserved", "renewal", "expired")
    SUBJECT_TYPES = ("order", "certificate", "unit", "api_key", "domain")

    def __init__(self, seeded: Seeded, rng: random.Random) -> None:
        self.seeded = seeded
        self.world = seeded.world
        self.rng = rng
        months = []
        moment = datetime(seeded.start.year, seeded.start.month, 1, tzinfo=UTC)
        while moment < seeded.end:
            following = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1,
                                 tzinfo=UTC)
            if moment >= seeded.start:
                months.append((moment, following))
            moment = following
        self.months = months

    def account(self, scope: Scope) -> Account:
        if scope.account is not None:
            return scope.account
        return self.rng.choices(self.world.accounts, cum_weights=self.world.account_cum)[0]

    def month(self) -> tuple[datetime, datetime]:
        return self.rng.choice(self.months)

    def action(self) -> str:
        if self.rng.random() < 0.6:
            return self.rng.choice(self.ACTION_PREFIXES)
        return self.rng.choice(ACTIONS).type

    def target(self, account: Account) -> str:
        roll = self.rng.random()
        if roll < 0.75 and account.orders:
            order = self.rng.choice(account.orders)
            return f"order:{order.id}" if roll < 0.6 else f"certificate:{order.certificate_id}"
        if roll < 0.9:
            return f"user:{self.rng.choice(account.users).id}"
        return self.rng.choice(self.SUBJECT_TYPES)

    def text(self, account: Account) -> str:
        roll = self.rng.random()
        if roll < 0.3:
            return self.rng.choice(account.users).name.split(" ", 1)[1]      # a surname
        if roll < 0.55:
            return self.rng.choice(account.domains).split(".")[0]            # a domain label
        if roll < 0.75 and account.orders:
            return self.rng.choice(account.orders).short                     # an order number
        return self.rng.choice(self.COMMON_WORDS)

    def filter(self, scope: Scope, kind: str) -> EntryFilter:
        account = self.account(scope)
        narrow = account.id if scope.narrow else None
        rng = self.rng
        if kind == "user":
            return EntryFilter(user_id=rng.choice(account.users).id, account_id=narrow)
        if kind == "month":
            start, end = self.month()
            return EntryFilter(start=start, end=end, account_id=narrow)
        if kind == "action":
            return EntryFilter(action=self.action(), account_id=narrow)
        if kind == "target":
            return EntryFilter(target=self.target(account), account_id=narrow)
        if kind == "text":
            return EntryFilter(text=self.text(account), account_id=narrow)
        if kind == "combined":  # a user's order activity over a quarter
            start, _ = self.month()
            start = max(start - timedelta(days=60), self.seeded.start)
            return EntryFilter(user_id=rng.choice(account.users).id, start=start,
                               end=start + timedelta(days=91),
                               action=rng.choice(("orders", "orders.order", "identity.session",
                                                  "ledger")), account_id=narrow)
        raise ValueError(kind)

    def deep_cursor(self, wanted: EntryFilter) -> str:
        """A position in the middle of the results: what paging far back arrives at."""
        low = wanted.start or self.seeded.start
        high = wanted.end or self.seeded.end
        moment = low + (high - low) * self.rng.uniform(0.3, 0.7)
        return encode_cursor({"at": isoformat(moment), "id": fake_uuid(self.rng)})


KINDS = (("user", "by user"), ("month", "one month"), ("action", "action prefix"),
         ("target", "by target"), ("text", "free text q"),
         ("combined", "user+quarter+action"))


def scopes(world: World) -> list[Scope]:
    biggest = world.accounts[0]  # the largest account: its readers have the most to sift
    unit_ids = tuple(uid for uid, _ in biggest.units[:2])
    admin = biggest.users[0]
    return [
        Scope("operator", "operator", Principal(
            user_id=world.operators[0].id, email=world.operators[0].email,
            name=world.operators[0].name, role=OPERATOR, account_id=None), None),
        Scope("operator_account", "operator+acct", Principal(
            user_id=world.operators[0].id, email=world.operators[0].email,
            name=world.operators[0].name, role=OPERATOR, account_id=None), None, narrow=True),
        Scope("admin", "admin", Principal(user_id=admin.id, email=admin.email, name=admin.name,
                                          role="admin", account_id=biggest.id), biggest),
        Scope("unit_admin", "unit_admin", Principal(
            user_id=biggest.users[1].id, email=biggest.users[1].email,
            name=biggest.users[1].name, role="unit_admin", account_id=biggest.id,
            unit_ids=unit_ids), biggest),
    ]


def make_cells(seeded: Seeded, rng: random.Random) -> list[Cell]:
    queries = Queries(seeded, rng)
    cells = []
    for scope in scopes(seeded.world):
        for kind, kind_label in KINDS:
            for page in ("first", "deep"):
                def make(scope: Scope = scope, kind: str = kind, page: str = page) -> Query:
                    wanted = queries.filter(scope, kind)
                    return Query(wanted, queries.deep_cursor(wanted) if page == "deep" else None)
                cells.append(Cell(f"{scope.key}.{kind}.{page}", scope.label, kind_label, page,
                                  make))
                cells[-1].scope = scope  # type: ignore[attr-defined]
    return cells


def run_query(service: AuditService, principal: Principal, query: Query) -> tuple[float, int]:
    started = time.perf_counter()
    with service.uow() as uow:
        page = handlers.search(uow, principal, query.wanted, limit=PAGE, cursor=query.cursor)
    return (time.perf_counter() - started) * 1000, len(page.entries)


def measure(service: AuditService, cells: list[Cell], say: Callable[[str], None]) -> None:
    for cell in cells:  # warm-up: connections, plans, the hot pages of each index
        for _ in range(WARMUP_QUERIES):
            run_query(service, cell.scope.principal, cell.make())  # type: ignore[attr-defined]
    started = time.monotonic()
    active = list(cells)
    round_ = 0
    while active:
        round_ += 1
        for cell in list(active):
            if not cell.wants_more():
                active.remove(cell)
                continue
            query = cell.make()
            ms, rows = run_query(service, cell.scope.principal, query)  # type: ignore[attr-defined]
            cell.samples.append(ms)
            cell.rows.append(rows)
            cell.spent += ms / 1000
            if cell.slowest is None or ms > cell.slowest[0]:
                cell.slowest = (ms, query)
        if round_ % 50 == 0:
            say(f"round {round_}: {len(active)} kinds still running, "
                f"{time.monotonic() - started:.0f}s")


# --- explaining the slow ones ------------------------------------------------------------


def explain(service: AuditService, principal: Principal, query: Query) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement ``handlers.search`` runs for ``query``
    (a free-text search reads several windows of time; the units load is one more)."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(service.engine, "before_cursor_execute", capture)
    try:
        with service.uow() as uow:
            handlers.search(uow, principal, query.wanted, limit=PAGE, cursor=query.cursor)
    finally:
        event.remove(service.engine, "before_cursor_execute", capture)
    plans = []
    with service.engine.connect() as connection:
        for number, (statement, parameters) in enumerate(statements, 1):
            rows = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                              parameters).all()
            plans.append(f"-- statement {number} of {len(statements)}\n"
                         + "\n".join(row[0] for row in rows))
    return "\n".join(plans)


def describe(wanted: EntryFilter) -> str:
    return ", ".join(f"{f.name}={getattr(wanted, f.name)!s}" for f in dataclasses.fields(wanted)
                     if getattr(wanted, f.name) is not None)


# --- the run ---------------------------------------------------------------------------


@contextmanager
def postgres(folder: Path, say: Callable[[str], None]) -> Iterator[Any]:
    """PostgreSQL from the deploy package, always stopped and deleted afterwards."""
    from chancery_deploy import Ports, Stack
    from chancery_deploy.postgres import find_bin_dir

    if find_bin_dir() is None:
        raise SystemExit("PostgreSQL server binaries missing (make system-packages)")
    stack = Stack(folder, Ports.find_free(), environ={"PATH": os.environ.get("PATH", "")},
                  say=lambda message: say(f"[stack] {message}"))
    try:
        started = time.monotonic()
        stack.start("postgres")  # what up(apps=False) starts first; the rest is not needed
        say(f"[stack] postgres up in {time.monotonic() - started:.0f}s")
        yield stack
    finally:
        stack.destroy()


def machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
            "python": platform.python_version(), "platform": platform.platform()}


def say(message: str) -> None:
    print(f"    {message}", file=sys.stderr, flush=True)


def table(cells: Sequence[Cell]) -> list[str]:
    lines = [f"{'role':<14} {'query kind':<20} {'page':<5} {'n':>4} {'p50 ms':>8} "
             f"{'p95 ms':>8} {'p99 ms':>8} {'rows':>5}",
             f"{'-' * 14} {'-' * 20} {'-' * 5} {'-' * 4} {'-' * 8} {'-' * 8} {'-' * 8} {'-' * 5}"]
    for cell in cells:
        p95 = percentile(cell.samples, 95)
        flag = "  <-- over target" if p95 >= TARGET_MS else ""
        note = f"  ({cell.stopped})" if cell.stopped else ""
        lines.append(f"{cell.role:<14} {cell.kind:<20} {cell.page:<5} {len(cell.samples):>4} "
                     f"{percentile(cell.samples, 50):>8.1f} {p95:>8.1f} "
                     f"{percentile(cell.samples, 99):>8.1f} "
                     f"{statistics.mean(cell.rows):>5.1f}{flag}{note}")
    return lines


def run(entries: int, workers: int, json_path: Path) -> int:
    info = machine()
    print(f"chancery audit benchmark: {info['cpu_count']} CPUs, load "
          f"{', '.join(f'{x:.2f}' for x in info['load_average'])}, {entries:,} entries",
          flush=True)
    rng = random.Random(SEED)
    started = time.monotonic()
    result: dict[str, Any] = {"benchmark": "audit", "machine": info,
                              "parameters": {"entries": entries, "accounts": ACCOUNTS,
                                             "users": USERS, "units": ACCOUNTS * UNITS_PER_ACCOUNT,
                                             "action_types": len(ACTIONS), "years": YEARS,
                                             "page": PAGE, "queries_per_kind": QUERIES,
                                             "kind_budget_seconds": CELL_BUDGET,
                                             "target_ms": TARGET_MS}}
    with tempfile.TemporaryDirectory(prefix="chancery-bench-audit-") as temp, \
            postgres(Path(temp), say) as stack:
        service = AuditService(Runtime.from_environment(
            {**stack.env, "PATH": os.environ.get("PATH", "")}))
        try:
            service.migrate()
            say("audit database migrated; seeding")
            seed_started = time.monotonic()
            seeded = seed(psycopg_url(service.database_url), entries, workers, rng, say)
            seed_seconds = time.monotonic() - seed_started
            sizes = database_sizes(service)
            print(f"seeded {entries:,} entries ({seeded.units:,} unit rows, "
                  f"{len(seeded.logs)} logs) in {seed_seconds:.0f}s: "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.0f}s"
                              for k, v in seeded.seconds.items()), flush=True)
            print(f"sizes: {sizes}", flush=True)
            chain_note = check_chains(service, seeded)
            print(f"hash chain: {chain_note}", flush=True)
            biggest = seeded.world.accounts[0]
            print(f"admin and unit_admin read the largest account ({biggest.entries:,} "
                  f"entries; median account "
                  f"{sorted(a.entries for a in seeded.world.accounts)[ACCOUNTS // 2]:,})",
                  flush=True)
            cells = make_cells(seeded, random.Random(SEED + 1))
            measure_started = time.monotonic()
            measure(service, cells, say)
            measure_seconds = time.monotonic() - measure_started
            print("\n".join(table(cells)), flush=True)
            overall = percentile_per_kind(cells, 95)
            pooled = percentile([ms for cell in cells for ms in cell.samples], 95)
            worst = max(cells, key=lambda c: percentile(c.samples, 95))
            over = [c for c in cells if percentile(c.samples, 95) >= TARGET_MS]
            print(f"\np95 of a filtered page over {entries:,} entries: {overall:.1f} ms "
                  f"(target < {TARGET_MS:.0f} ms)")
            print(f"(every kind weighs the same; pooling the raw samples, where the fast kinds "
                  f"have the most, would say {pooled:.1f} ms)")
            print(f"worst kind: {worst.role} {worst.kind} ({worst.page} page), p95 "
                  f"{percentile(worst.samples, 95):.1f} ms; {len(over)} of {len(cells)} kinds "
                  f"at or over the target", flush=True)
            plans = {}
            for cell in over:
                assert cell.slowest is not None
                ms, query = cell.slowest
                plan = explain(service, cell.scope.principal, query)  # type: ignore[attr-defined]
                plans[cell.key] = {"ms": ms, "filter": describe(query.wanted),
                                   "cursor": query.cursor, "plan": plan}
                print(f"\n--- EXPLAIN ANALYZE, slowest {cell.role} {cell.kind} ({cell.page}): "
                      f"{ms:.0f} ms; {describe(query.wanted)}\n{plan}", flush=True)
        finally:
            service.dispose()
    elapsed = time.monotonic() - started
    result.update({
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": {"seconds": round(seed_seconds, 1), "steps": seeded.seconds,
                 "unit_rows": seeded.units, "logs": len(seeded.logs), "sizes": sizes,
                 "hash_chain": chain_note, "largest_account_entries": biggest.entries},
        "measure_seconds": round(measure_seconds, 1),
        "headline": {"p95_ms": round(overall, 2), "target_ms": TARGET_MS,
                     "p95_ms_pooled_samples": round(pooled, 2),
                     "worst": worst.key, "worst_p95_ms": round(percentile(worst.samples, 95), 2),
                     "kinds_over_target": [c.key for c in over]},
        "results": {c.key: {"role": c.role, "kind": c.kind, "page": c.page,
                            "queries": len(c.samples),
                            "p50_ms": round(percentile(c.samples, 50), 2),
                            "p95_ms": round(percentile(c.samples, 95), 2),
                            "p99_ms": round(percentile(c.samples, 99), 2),
                            "max_ms": round(max(c.samples), 2),
                            "mean_rows": round(statistics.mean(c.rows), 1),
                            "note": c.stopped} for c in cells},
        "explain": plans,
        "total_seconds": round(elapsed, 1),
    })
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"total {elapsed:.0f}s; written to {json_path}")
    return 0


def database_sizes(service: AuditService) -> str:
    with service.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT relname, pg_size_pretty(pg_table_size(oid)), "
            "pg_size_pretty(pg_indexes_size(oid)) FROM pg_class "
            "WHERE relname = ANY(%(tables)s) ORDER BY relname",
            {"tables": list(BULK_TABLES)}).all()
    return "; ".join(f"{name} {heap} + indexes {indexes}" for name, heap, indexes in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000,
                        help="entries to seed (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                        help="processes generating entries (default: the CPU count, at least 2)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    if args.entries < 1_000:
        parser.error("--entries must be at least 1,000")
    stop_on_sigterm: Callable[..., None] = lambda *_: sys.exit(143)  # noqa: E731
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # so the finally blocks stop the server
    return run(args.entries, args.workers, args.json)


if __name__ == "__main__":
    sys.exit(main())
