"""The deny list of revoked access, its check in token verification, and its feed."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from chancery_shared.auth.revocations import KEEP_SECONDS, Revocations
from chancery_shared.auth.tokens import InvalidToken, TokenVerifier
from chancery_shared.messaging import broker, topology
from chancery_shared.messaging.broadcast import BroadcastListener
from chancery_shared.messaging.envelope import Actor, Context, isoformat, new_envelope
from chancery_shared.testing import TokenFactory, wait_for
from kombu import Producer


def identity_event(type_: str, data: dict, occurred_at: datetime | None = None):
    event = new_envelope(type=type_, source="identity",
                         context=Context(actor=Actor.service("identity"), account_id="a1"),
                         subject_type="user", subject_id=data.get("user_id", "u1"),
                         summary="test", data=data)
    if occurred_at is not None:
        event = dataclasses.replace(event, occurred_at=isoformat(occurred_at))
    return event


def user_data(user_id: str = "u1", *, role: str = "unit_admin", units=("unit-a",),
              active: bool = True, changes: dict | None = None) -> dict:
    return {"user_id": user_id, "email": "u@example.com", "name": "U", "role": role,
            "unit_ids": list(units), "active": active, "changes": changes or {}}


def claims(user_id: str = "u1", *, iat: float, role: str = "unit_admin", units=("unit-a",),
           sid: str | None = "s1") -> dict:
    return {"sub": user_id, "iat": int(iat), "role": role, "units": list(units), "sid": sid}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


NOW = datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)


def test_an_ended_session_refuses_its_tokens_and_no_others():
    deny = Revocations()
    assert deny.apply(identity_event("identity.session.ended",
                                     {"user_id": "u1", "method": "password", "reason": "logout",
                                      "session_id": "s1"}))
    assert "session" in deny.refusal(claims(iat=NOW.timestamp(), sid="s1"))
    assert deny.refusal(claims(iat=NOW.timestamp(), sid="s2")) is None
    assert deny.refusal(claims(iat=NOW.timestamp(), sid=None)) is None


def test_a_deactivated_user_has_every_token_refused():
    deny = Revocations()
    deny.apply(identity_event("identity.user.deactivated",
                              user_data(active=False, changes={"active": [True, False]}), NOW))
    for iat in (NOW - timedelta(minutes=5), NOW, NOW + timedelta(seconds=3)):
        assert "deactivated" in deny.refusal(claims(iat=iat.timestamp(), sid=None))
    assert deny.refusal(claims("u2", iat=NOW.timestamp())) is None


def test_a_role_change_refuses_older_tokens_and_stale_claims_but_not_fresh_ones():
    deny = Revocations()
    deny.apply(identity_event("identity.user.updated", user_data(
        role="limited", units=("unit-a",), changes={"role": ["unit_admin", "limited"]}), NOW))
    before = (NOW - timedelta(seconds=2)).timestamp()
    same_second, after = NOW.timestamp(), (NOW + timedelta(seconds=2)).timestamp()
    # issued before the change: refused, whatever it says
    assert deny.refusal(claims(iat=before, role="unit_admin")) is not None
    assert deny.refusal(claims(iat=before, role="limited")) is not None
    # issued in the second of the change (iat is whole seconds): judged by its claims
    assert deny.refusal(claims(iat=same_second, role="unit_admin")) is not None
    assert deny.refusal(claims(iat=same_second, role="limited")) is None
    # a fresh token with the new claims works; one with the old claims does not
    assert deny.refusal(claims(iat=after, role="limited")) is None
    assert deny.refusal(claims(iat=after, role="unit_admin")) is not None


def test_a_unit_change_refuses_tokens_with_the_old_units():
    deny = Revocations()
    deny.apply(identity_event("identity.user.updated", user_data(
        units=("unit-b",), changes={"unit_ids": [["unit-a"], ["unit-b"]]}), NOW))
    later = (NOW + timedelta(seconds=5)).timestamp()
    assert deny.refusal(claims(iat=later, units=("unit-a",))) is not None
    assert deny.refusal(claims(iat=later, units=("unit-b",))) is None


def test_a_new_name_revokes_nothing():
    deny = Revocations()
    assert not deny.apply(identity_event("identity.user.updated", user_data(
        changes={"name": ["U", "V"]}), NOW))
    assert deny.refusal(claims(iat=(NOW - timedelta(minutes=1)).timestamp())) is None


def test_reactivation_lets_new_tokens_in_and_keeps_old_ones_out():
    deny = Revocations()
    deny.apply(identity_event("identity.user.deactivated", user_data(
        active=False, changes={"active": [True, False]}), NOW))
    back = NOW + timedelta(minutes=1)
    deny.apply(identity_event("identity.user.updated", user_data(
        active=True, changes={"active": [False, True]}), back))
    assert deny.refusal(claims(iat=(NOW - timedelta(seconds=1)).timestamp())) is not None
    assert deny.refusal(claims(iat=(back + timedelta(seconds=1)).timestamp())) is None


def test_the_latest_change_wins_whatever_the_order_of_arrival():
    deny = Revocations()
    later = NOW + timedelta(seconds=10)
    deny.apply(identity_event("identity.user.updated", user_data(
        role="admin", changes={"role": ["limited", "admin"]}), later))
    deny.apply(identity_event("identity.user.updated", user_data(
        role="limited", changes={"role": ["unit_admin", "limited"]}), NOW))
    fresh = (later + timedelta(seconds=1)).timestamp()
    assert deny.refusal(claims(iat=fresh, role="admin")) is None
    assert deny.refusal(claims(iat=fresh, role="limited")) is not None


def test_entries_are_forgotten_once_every_token_they_concern_has_expired():
    clock = FakeClock()
    deny = Revocations(clock=clock)
    deny.end_session("s1")
    deny.apply(identity_event("identity.user.deactivated", user_data(
        active=False, changes={"active": [True, False]}), NOW))
    assert len(deny) == 2
    clock.now += KEEP_SECONDS - 1
    assert deny.refusal(claims(iat=NOW.timestamp(), sid="s1")) is not None
    clock.now += 2
    assert deny.refusal(claims(iat=NOW.timestamp(), sid="s1")) is None
    deny.end_session("s9")  # any later entry prunes the expired ones
    assert len(deny) == 1


def test_the_verifier_answers_token_revoked():
    tokens = TokenFactory()
    deny = Revocations()
    verifier = TokenVerifier(tokens.jwks, issuer=tokens.issuer, audience=tokens.audience,
                             revocations=deny)
    token = tokens.token(role="limited", account_id="a1", user_id="u1", sid="s1")
    assert verifier.verify(token).session_id == "s1"
    deny.end_session("s1")
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)
    assert refused.value.code == "token_revoked"
    assert "session" in str(refused.value)


def publish(url: str, event) -> None:
    with broker.connect(url) as connection:
        channel = connection.channel()
        topology.EVENTS_EXCHANGE(channel).declare()
        Producer(channel).publish(event.to_json(), exchange=topology.EVENTS_EXCHANGE,
                                  routing_key=event.type, content_type="application/json",
                                  content_encoding="utf-8", message_id=event.event_id)


@pytest.fixture(params=["memory", "rabbitmq"])
def broker_url(request) -> str:
    if request.param == "memory":
        return f"memory://revocations-{uuid.uuid4().hex}"
    return request.getfixturevalue("infrastructure")["CHANCERY_BROKER_URL"]


def test_every_process_hears_every_revocation(broker_url):
    """Two listeners (two gunicorn workers of one service) both hear each event: a queue
    of each one's own, not a service queue they would compete for."""
    stop = threading.Event()
    lists = [Revocations(), Revocations()]
    listeners = [BroadcastListener(broker_url, ("identity.session.ended",), deny.apply,
                                   purpose="test.revocations") for deny in lists]
    try:
        for listener in listeners:
            listener.start(stop)
        for listener in listeners:
            assert listener.ready.wait(10), "the listener never started consuming"
        assert listeners[0].queue.name != listeners[1].queue.name
        publish(broker_url, identity_event("identity.session.ended", {
            "user_id": "u1", "method": "password", "reason": "logout", "session_id": "s7"}))
        publish(broker_url, identity_event("identity.user.created", user_data()))  # not bound
        for deny in lists:
            wait_for(lambda deny=deny: deny.refusal(claims(iat=time.time(), sid="s7")),
                     timeout=10, message="the session-ended event in every listener")
        assert [listener.heard for listener in listeners] == [1, 1]
    finally:
        stop.set()
