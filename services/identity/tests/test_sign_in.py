"""Signing in: lockout, throttling, audited attempts, refresh rotation, logout, passwords."""

from __future__ import annotations

import pytest
from chancery_identity.sign_in import BAD_CREDENTIALS
from chancery_identity.testing import API, bearer, build_test_service, outbox, sign_in
from chancery_identity.testing import TEST_PASSWORD as PASSWORD

WRONG = "definitely-not-it-42"


def failures(service):
    return [e for e in outbox(service, "identity.login.failed")]


def user_record(client, people, key):
    return client.get(f"{API}/users/{people.ids[key]}", headers=people.headers["admin"]
                      ).get_json()


# --- what every attempt leaves behind ----------------------------------------------------


@pytest.mark.parametrize("email, password, reason, known", [
    ("limited_emea@example.com", PASSWORD, None, True),
    ("limited_emea@example.com", WRONG, "bad_credentials", True),
    ("nobody@example.com", PASSWORD, "bad_credentials", False),
    ("inactive@example.com", PASSWORD, "inactive", True),
])
def test_every_sign_in_is_an_event_with_the_client_address(service, client, people, email,
                                                           password, reason, known):
    people.add("inactive", "limited", ["EMEA"])
    people.patch("admin", "inactive", {"active": False})
    before = len(outbox(service))
    r = sign_in(client, email, password, ip="203.0.113.77")
    assert r.status_code == (201 if reason is None else 401)
    [event] = outbox(service)[before:]
    assert event["type"] == ("identity.session.created" if reason is None
                             else "identity.login.failed")
    assert event["actor"]["ip"] == "203.0.113.77"
    assert "203.0.113.77" in event["summary"]
    assert event["data"]["method"] == "password"
    assert event["data"].get("reason") == reason
    assert (event["data"]["user_id"] is not None) == known
    if known:  # the account's admins see it in their audit log
        assert event["account_id"] is not None and event["data"]["unit_ids"]


def test_no_answer_tells_whether_an_address_exists(service, client, people, clock):
    """Unknown, wrong password, locked and deactivated: one body, one argon2 verification."""
    verified = []
    real_verify = service.credentials.passwords.verify
    service.credentials.passwords.verify = lambda h, p: verified.append(h) or real_verify(h, p)
    people.patch("admin", "limited_apac", {"active": False})
    for _ in range(5):
        sign_in(client, "finance_emea@example.com", WRONG)
    verified.clear()
    bodies = [sign_in(client, email, password).get_json() for email, password in (
        ("nobody@example.com", PASSWORD),
        ("limited_emea@example.com", WRONG),
        ("finance_emea@example.com", PASSWORD),  # locked, with the right password
        ("limited_apac@example.com", PASSWORD),  # deactivated, with the right password
    )]
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["status"] == 401 and bodies[0]["detail"] == BAD_CREDENTIALS
    assert len(verified) == 4 and verified[0] is None  # the unknown address too


# --- lockout -----------------------------------------------------------------------------


def test_five_wrong_passwords_lock_the_user_for_fifteen_minutes(service, client, people,
                                                                clock):
    for _ in range(5):
        assert sign_in(client, "limited_emea@example.com", WRONG).status_code == 401
    locked = user_record(client, people, "limited_emea")
    assert locked["locked_until"] is not None
    assert sign_in(client, "limited_emea@example.com").status_code == 401  # right password
    reasons = [e["data"]["reason"] for e in failures(service)]
    assert reasons == ["bad_credentials"] * 5 + ["locked"]
    assert failures(service)[4]["data"]["locked_until"] is not None
    assert "locked until" in failures(service)[4]["summary"]
    clock.advance(minutes=14, seconds=59)
    assert sign_in(client, "limited_emea@example.com").status_code == 401
    clock.advance(seconds=2)
    assert user_record(client, people, "limited_emea")["locked_until"] is None  # ran out
    assert sign_in(client, "limited_emea@example.com").status_code == 201


def test_a_success_resets_the_count_of_failures(client, people):
    for _ in range(4):
        sign_in(client, "limited_emea@example.com", WRONG)
    assert sign_in(client, "limited_emea@example.com").status_code == 201
    for _ in range(4):
        sign_in(client, "limited_emea@example.com", WRONG)
    assert sign_in(client, "limited_emea@example.com").status_code == 201


@pytest.mark.parametrize("unlocker, target, status", [
    ("admin", "limited_emea", 200),
    ("unit_admin_emea", "limited_emea", 200),
    ("unit_admin_emea", "admin_in_emea", 403),
    ("unit_admin_apac", "limited_emea", 404),
    ("limited_emea", "finance_emea", 403),
])
def test_an_administrator_lifts_a_lockout(service, client, people, unlocker, target, status):
    for _ in range(5):
        sign_in(client, f"{target}@example.com", WRONG)
    people.sign_in(unlocker) if unlocker not in people.headers else None
    r = client.post(f"{API}/users/{people.ids[target]}/unlock", headers=people.headers[unlocker])
    assert r.status_code == status, r.get_json()
    can_sign_in = sign_in(client, f"{target}@example.com").status_code == 201
    assert can_sign_in == (status == 200)
    if status == 200:
        event = outbox(service, "identity.user.unlocked")[-1]
        assert event["data"]["user_id"] == people.ids[target]
        assert event["actor"]["user_id"] == people.ids[unlocker]


def test_lockout_state_is_shared_by_every_worker(service, client, people, tmp_path):
    """A second service object on the same database (another gunicorn worker) agrees."""
    other = build_test_service(tmp_path).create_app().test_client()
    for i in range(5):
        sign_in(client if i % 2 else other, "limited_emea@example.com", WRONG)
    assert user_record(client, people, "limited_emea")["locked_until"] is not None


# --- throttling by client address --------------------------------------------------------


def test_an_address_with_twenty_failures_in_ten_minutes_gets_429_with_retry_after(
        service, client, people, clock):
    attacker, bystander = "198.51.100.9", "198.51.100.10"
    for i in range(20):
        assert sign_in(client, f"guess{i}@example.com", WRONG, ip=attacker).status_code == 401
        clock.advance(seconds=10)
    r = sign_in(client, "limited_emea@example.com", PASSWORD, ip=attacker)
    assert r.status_code == 429 and r.get_json()["code"] == "too_many_attempts"
    # the oldest of the 20 failures leaves the window 600 s after it, 200 s ago
    assert r.headers["Retry-After"] == "400" and r.get_json()["retry_after"] == 400
    assert sign_in(client, "limited_emea@example.com", ip=bystander).status_code == 201
    throttled = failures(service)[-1]
    assert throttled["data"]["reason"] == "throttled"
    assert throttled["actor"]["ip"] == attacker
    clock.advance(seconds=401)
    assert sign_in(client, "limited_emea@example.com", ip=attacker).status_code == 201


def test_throttled_attempts_do_no_password_work(service, client, people):
    for i in range(20):
        sign_in(client, f"guess{i}@example.com", WRONG, ip="198.51.100.9")
    service.credentials.passwords.verify = lambda *_: pytest.fail("verified while throttled")
    assert sign_in(client, "x@example.com", WRONG, ip="198.51.100.9").status_code == 429
    assert client.post(f"{API}/sessions", json={"api_key": "chy_00000000_" + "A" * 43},
                       environ_base={"REMOTE_ADDR": "198.51.100.9"}).status_code == 429


# --- sessions: refresh and logout --------------------------------------------------------


def refresh(client, token):
    return client.post(f"{API}/sessions/refresh", json={"refresh_token": token})


def test_a_refresh_token_works_once_and_gives_a_new_pair(client, people, jwks):
    first = sign_in(client, "limited_emea@example.com").get_json()
    assert first["refresh_token"].startswith("chr_") and len(first["refresh_token"]) >= 47
    assert first["refresh_expires_in"] == 10 * 3600
    second = refresh(client, first["refresh_token"])
    assert second.status_code == 200
    body = second.get_json()
    assert body["session_id"] == first["session_id"]
    assert body["refresh_token"] != first["refresh_token"]
    assert client.get(f"{API}/me", headers=bearer(body["access_token"])).status_code == 200
    assert refresh(client, body["refresh_token"]).status_code == 200


def test_reusing_a_refresh_token_ends_the_whole_session(service, client, people):
    first = sign_in(client, "limited_emea@example.com").get_json()
    second = refresh(client, first["refresh_token"]).get_json()
    stolen = refresh(client, first["refresh_token"])  # the thief, or the victim, replays it
    assert stolen.status_code == 401 and stolen.get_json()["code"] == "invalid_refresh_token"
    assert refresh(client, second["refresh_token"]).status_code == 401
    assert client.get(f"{API}/me", headers=bearer(second["access_token"])).status_code == 401
    ended = outbox(service, "identity.session.ended")[-1]
    assert ended["data"]["reason"] == "refresh_token_reused"
    assert ended["data"]["session_id"] == first["session_id"]


def test_a_refresh_reads_the_role_and_units_afresh(client, people, jwks):
    from chancery_shared.auth.tokens import TokenVerifier

    first = sign_in(client, "limited_emea@example.com").get_json()
    people.patch("admin", "limited_emea", {"role": "finance",
                                           "unit_ids": [people.units["APAC"]]})
    body = refresh(client, first["refresh_token"]).get_json()
    principal = TokenVerifier(jwks, issuer="chancery-identity", audience="chancery").verify(
        body["access_token"])
    assert principal.role == "finance" and principal.unit_ids == (people.units["APAC"],)
    assert principal.session_id == first["session_id"]


def test_a_session_lasts_a_working_day_whatever_the_refreshes(client, people, clock):
    token = sign_in(client, "limited_emea@example.com").get_json()["refresh_token"]
    for _ in range(9):
        clock.advance(hours=1)
        r = refresh(client, token)
        assert r.status_code == 200
        token = r.get_json()["refresh_token"]
    assert r.get_json()["refresh_expires_in"] == 3600
    clock.advance(hours=1)
    assert refresh(client, token).status_code == 401


@pytest.mark.parametrize("garbage", ["", "chr_nothing", "x" * 200])
def test_an_unknown_refresh_token_is_401(client, garbage):
    r = refresh(client, garbage)
    assert r.status_code in (401, 422)
    assert r.status_code == 401 or "refresh_token" in r.get_json()["errors"]


def test_logout_ends_the_session_at_once(service, client, people):
    body = sign_in(client, "limited_emea@example.com").get_json()
    headers = bearer(body["access_token"])
    assert client.delete(f"{API}/sessions/current", headers=headers).status_code == 204
    assert refresh(client, body["refresh_token"]).status_code == 401
    assert client.get(f"{API}/me", headers=headers).status_code == 401
    assert client.delete(f"{API}/sessions/current", headers=headers).status_code == 204
    [ended] = outbox(service, "identity.session.ended")
    assert ended["data"]["reason"] == "logout" and "signed out" in ended["summary"]
    assert client.delete(f"{API}/sessions/current").status_code == 401  # anonymous
    # the user's other sessions go on
    assert client.get(f"{API}/me", headers=people.headers["limited_emea"]).status_code == 200


# --- changing one's password -------------------------------------------------------------


def change(client, headers, current, new):
    return client.post(f"{API}/me/password", headers=headers,
                       json={"current_password": current, "new_password": new})


def test_changing_the_password_ends_the_other_sessions(service, client, people):
    mine = sign_in(client, "limited_emea@example.com").get_json()
    other = sign_in(client, "limited_emea@example.com").get_json()
    r = change(client, bearer(mine["access_token"]), PASSWORD, "new-lantern-quietly-7")
    assert r.status_code == 204
    assert refresh(client, other["refresh_token"]).status_code == 401
    assert refresh(client, mine["refresh_token"]).status_code == 200
    assert sign_in(client, "limited_emea@example.com").status_code == 401
    assert sign_in(client, "limited_emea@example.com", "new-lantern-quietly-7").status_code == 201
    event = outbox(service, "identity.user.password_changed")[-1]
    assert event["data"]["sessions_ended"] == 2  # the other one and the fixture's
    # each ended session is announced, so every service refuses its tokens at once
    ended = [e for e in outbox(service, "identity.session.ended")
             if e["data"]["reason"] == "password_changed"]
    assert len(ended) == 2 and other["session_id"] in {e["data"]["session_id"] for e in ended}
    assert mine["session_id"] not in {e["data"]["session_id"] for e in ended}


def test_deactivation_announces_each_session_it_ends(service, client, people):
    sessions = {sign_in(client, "limited_emea@example.com").get_json()["session_id"]
                for _ in range(2)}
    assert people.patch("admin", "limited_emea", {"active": False}).status_code == 200
    ended = [e for e in outbox(service, "identity.session.ended")
             if e["data"]["reason"] == "deactivated"]
    assert sessions <= {e["data"]["session_id"] for e in ended}
    assert {e["data"]["user_id"] for e in ended} == {people.ids["limited_emea"]}
    assert all(e["actor"]["user_id"] == people.ids["admin"] for e in ended)


@pytest.mark.parametrize("current, new, status, field", [
    (WRONG, "new-lantern-quietly-7", 422, "current_password"),
    (PASSWORD, "short", 422, "new_password"),
    (PASSWORD, "passwordpassword", 422, "new_password"),
    (PASSWORD, "limited_emea-lantern", 422, "new_password"),
    (PASSWORD, PASSWORD, 422, "new_password"),
])
def test_a_password_change_is_refused_with_the_reason(client, people, current, new, status,
                                                      field):
    r = change(client, people.headers["limited_emea"], current, new)
    assert r.status_code == status and field in r.get_json()["errors"]
    assert sign_in(client, "limited_emea@example.com").status_code == 201


def test_guessing_the_current_password_counts_towards_the_lockout(service, client, people):
    headers = people.headers["limited_emea"]
    for _ in range(5):
        assert change(client, headers, WRONG, "new-lantern-quietly-7").status_code == 422
    assert change(client, headers, PASSWORD, "new-lantern-quietly-7").status_code == 409
    assert sign_in(client, "limited_emea@example.com").status_code == 401
    assert failures(service)[-1]["data"]["reason"] == "locked"
