"""Managing people: who may change whom, deactivation, the last admin, units, paging."""

from __future__ import annotations

import pytest
from chancery_identity import handlers
from chancery_identity.model import User
from chancery_identity.testing import API, bearer, outbox, sign_in
from chancery_identity.testing import TEST_PASSWORD as PASSWORD
from chancery_shared.auth.tokens import Principal
from chancery_shared.messaging.envelope import Actor, Context
from chancery_shared.web.problems import Conflict

# (actor, target, body, status, missing permission or field named)
PATCH_RULES = [
    # an admin manages anyone of the account, but never their own access
    ("admin", "limited_emea", {"role": "finance"}, 200, None),
    ("admin", "limited_emea", {"unit_ids": ["EMEA", "APAC"]}, 200, None),
    ("admin", "admin2", {"role": "limited"}, 200, None),
    ("admin", "admin2", {"active": False}, 200, None),
    ("admin", "admin", {"name": "Renamed Admin"}, 200, None),
    ("admin", "admin", {"role": "limited"}, 403, "change_own_access"),
    ("admin", "admin", {"active": False}, 403, "change_own_access"),
    ("admin", "admin", {"unit_ids": ["EMEA"]}, 403, "change_own_access"),
    ("admin", "limited_emea", {"role": "emperor"}, 422, "role"),
    ("admin", "limited_emea", {"unit_ids": ["no-such-unit"]}, 422, "unit_ids"),
    ("admin", "limited_emea", {"name": ""}, 422, "name"),
    ("admin", "limited_emea", {"name": "   "}, 422, "name"),
    ("admin", "finance_emea", {"role": "limited"}, 200, None),
    ("admin", "limited_both", {"active": False}, 200, None),
    # names that would disguise the text around them in audit descriptions
    ("admin", "limited_emea", {"name": "Eve\u202egnp.exe"}, 422, "name"),
    ("admin", "limited_emea", {"name": "\u2067Mallory\u2069"}, 422, "name"),
    ("admin", "limited_emea", {"name": "Lee\u200f"}, 422, "name"),
    ("admin", "limited_emea", {"name": "Lee\x1b[31m"}, 422, "name"),
    ("admin", "limited_emea", {"name": "Lee\nApproved by Admin"}, 422, "name"),
    ("admin", "limited_emea", {"name": "Zo\u00eb \u00d1\u00fa\u00f1ez-O'Brien"}, 200, None),
    ("admin", "limited_emea", {"name": "\u0645\u062d\u0645\u062f \u0639\u0644\u064a"},
     200, None),
    ("admin", "limited_emea", {"name": "\U0001f469\u200d\U0001f4bb Dev"}, 200, None),
    # a unit admin manages limited users and unit admins all of whose units are theirs
    ("unit_admin_emea", "limited_emea", {"role": "unit_admin"}, 200, None),
    ("unit_admin_emea", "limited_emea", {"active": False}, 200, None),
    ("unit_admin_emea", "limited_emea", {"name": "Lee Emea"}, 200, None),
    ("unit_admin_emea", "unit_admin_emea", {"name": "Emea Lead"}, 200, None),
    # ... never finance users (they read the whole account) nor admins
    ("unit_admin_emea", "limited_emea", {"role": "finance"}, 403, "manage_finance_users"),
    ("unit_admin_emea", "finance_emea", {"name": "F. Emea"}, 403, "manage_finance_users"),
    ("unit_admin_emea", "finance_emea", {"role": "limited"}, 403, "manage_finance_users"),
    ("unit_admin_emea", "finance_emea", {"active": False}, 403, "manage_finance_users"),
    ("unit_admin_emea", "limited_emea", {"role": "admin"}, 403, "manage_admins"),
    ("unit_admin_emea", "admin_in_emea", {"name": "Nope"}, 403, "manage_admins"),
    ("unit_admin_emea", "admin_in_emea", {"active": False}, 403, "manage_admins"),
    ("unit_admin_emea", "admin_in_emea", {"role": "limited"}, 403, "manage_admins"),
    # ... nor anyone who is also in a unit of someone else's, nor anyone out of all units
    ("unit_admin_emea", "limited_both", {"role": "unit_admin"}, 403, "manage_account_users"),
    ("unit_admin_emea", "limited_both", {"active": False}, 403, "manage_account_users"),
    ("unit_admin_emea", "limited_both", {"name": "Nope"}, 403, "manage_account_users"),
    ("unit_admin_emea", "limited_both", {"unit_ids": ["EMEA"]}, 403, "manage_account_users"),
    ("unit_admin_apac", "limited_both", {"active": False}, 403, "manage_account_users"),
    ("unit_admin_emea", "limited_emea", {"unit_ids": ["EMEA", "APAC"]}, 403,
     "manage_account_users"),
    ("unit_admin_emea", "limited_emea", {"unit_ids": ["APAC"]}, 403, "manage_account_users"),
    ("unit_admin_emea", "limited_emea", {"unit_ids": []}, 403, "manage_account_users"),
    ("unit_admin_emea", "limited_apac", {"name": "Nope"}, 404, None),
    ("unit_admin_emea", "admin", {"name": "Nope"}, 404, None),
    # ... and never their own role or units
    ("unit_admin_emea", "unit_admin_emea", {"role": "admin"}, 403, "change_own_access"),
    ("unit_admin_emea", "unit_admin_emea", {"unit_ids": ["EMEA", "APAC"]}, 403,
     "change_own_access"),
    ("unit_admin_emea", "unit_admin_emea", {"active": False}, 403, "change_own_access"),
    ("unit_admin_emea", "unit_admin_emea", {"name": "Emea Lead"}, 200, None),
    # nobody else manages users, not even their own record
    ("limited_emea", "limited_emea", {"role": "admin"}, 403, "manage_users"),
    ("limited_emea", "limited_emea", {"unit_ids": ["APAC"]}, 403, "manage_users"),
]


@pytest.mark.parametrize("actor, target, body, status, named", PATCH_RULES)
def test_who_may_change_whom(people, actor, target, body, status, named):
    if "unit_ids" in body:
        body = {**body, "unit_ids": [people.units.get(u, u) for u in body["unit_ids"]]}
    before = len(outbox(people.client.application.extensions["chancery_service"]))
    r = people.patch(actor, target, body)
    assert r.status_code == status, r.get_json()
    after = outbox(people.client.application.extensions["chancery_service"])
    if status == 200:
        for field, value in body.items():
            assert r.get_json()[field] == (sorted(value) if field == "unit_ids" else value)
    else:
        assert len(after) == before, "a refused change emitted an event"
    if status == 403:
        assert r.get_json()["missing_permission"] == named
    if status == 422:
        assert named in r.get_json()["errors"]


def test_a_change_is_an_event_naming_the_fields_and_the_actor(service, people):
    r = people.patch("admin", "limited_emea", {"role": "finance", "name": "Lee Emea"})
    assert r.status_code == 200
    event = outbox(service, "identity.user.updated")[-1]
    assert event["data"]["changes"] == {"role": ["limited", "finance"],
                                        "name": ["Limited Emea", "Lee Emea"]}
    assert event["data"]["role"] == "finance" and event["data"]["unit_ids"] == [
        people.units["EMEA"]]
    assert event["actor"]["user_id"] == people.ids["admin"]
    assert "Example Admin updated Lee Emea" in event["summary"]


def test_an_unchanged_patch_emits_nothing(service, people):
    before = len(outbox(service))
    r = people.patch("admin", "limited_emea", {"role": "limited"})
    assert r.status_code == 200 and len(outbox(service)) == before


def test_another_accounts_user_cannot_be_seen_or_changed(client, people, globex):
    for method, suffix in (("get", ""), ("patch", ""), ("post", "/unlock")):
        r = getattr(client, method)(f"{API}/users/{people.ids['limited_emea']}{suffix}",
                                    headers=globex, json={"name": "X"} if method == "patch"
                                    else None)
        assert r.status_code == 404, (method, r.get_json())


def test_two_admins_demoting_each_other_leave_one_admin(service):
    """Serialised, the second demotion finds the last active admin and is refused."""
    with service.uow() as uow:
        admin = uow.session.query(User).filter_by(email="admin@example.com").one()
        account = admin.account_id
        other = User(account_id=account, email="b@example.com", name="B", role="admin",
                     password_hash="x", units=[])
        uow.session.add(other)
        uow.commit()
        other_id, admin_id = other.id, admin.id

    def as_admin(user_id):
        principal = Principal(user_id=user_id, email="", name="N", role="admin",
                              account_id=account)
        return principal, Context(actor=Actor(user_id=user_id, user_name="N"),
                                  account_id=account)

    with service.uow() as uow:  # A demotes B ...
        handlers.update_user(uow, *as_admin(admin_id), other_id,
                             handlers.UserChanges(role="limited"), service.clock())
    with service.uow() as uow:  # ... and B, whose request was already under way, demotes A
        with pytest.raises(Conflict) as refused:
            handlers.update_user(uow, *as_admin(other_id), admin_id,
                                 handlers.UserChanges(role="limited"), service.clock())
    assert refused.value.code == "last_admin"
    with service.uow() as uow:
        with pytest.raises(Conflict):
            handlers.update_user(uow, *as_admin(other_id), admin_id,
                                 handlers.UserChanges(active=False), service.clock())
        assert uow.session.get(User, admin_id).is_active_admin


def test_deactivation_stops_sign_in_refresh_api_keys_and_identity_calls_at_once(
        service, client, people):
    r = sign_in(client, "limited_emea@example.com")
    session = r.get_json()
    key = client.post(f"{API}/api-keys", headers=bearer(session["access_token"]),
                      json={"name": "ci"}).get_json()["key"]
    wrong = sign_in(client, "limited_emea@example.com", "not-the-password-at-all").get_json()

    r = people.patch("unit_admin_emea", "limited_emea", {"active": False})
    assert r.status_code == 200 and r.get_json()["active"] is False

    refused = sign_in(client, "limited_emea@example.com")
    assert refused.status_code == 401
    assert refused.get_json() == wrong  # the same answer as a wrong password
    assert client.post(f"{API}/sessions/refresh", json={
        "refresh_token": session["refresh_token"]}).status_code == 401
    assert client.post(f"{API}/sessions", json={"api_key": key}).status_code == 401
    assert client.get(f"{API}/me", headers=bearer(session["access_token"])).status_code == 401
    event = outbox(service, "identity.user.deactivated")[-1]
    assert event["data"]["active"] is False and event["data"]["changes"] == {
        "active": [True, False]}
    assert "ended 2 sign-in session(s)" in event["summary"]  # the fixture's and this one
    reasons = [e["data"]["reason"] for e in outbox(service, "identity.login.failed")]
    assert reasons[-2:] == ["inactive", "inactive"]  # password, then API key


def test_reactivated_user_signs_in_again(client, people):
    people.patch("admin", "limited_emea", {"active": False})
    assert sign_in(client, "limited_emea@example.com").status_code == 401
    assert people.patch("admin", "limited_emea", {"active": True}).status_code == 200
    assert sign_in(client, "limited_emea@example.com").status_code == 201


def test_a_demotion_takes_effect_on_identity_at_once(client, people):
    """Identity re-reads its callers; other services wait for the token to expire."""
    assert client.get(f"{API}/users", headers=people.headers["unit_admin_emea"]
                      ).status_code == 200
    assert people.patch("admin", "unit_admin_emea", {"role": "limited"}).status_code == 200
    r = client.get(f"{API}/users", headers=people.headers["unit_admin_emea"])
    assert r.status_code == 403 and r.get_json()["missing_permission"] == "manage_users"


def test_users_are_listed_page_by_page_within_the_callers_scope(client, people):
    admin = people.headers["admin"]
    seen, cursor = [], None
    while True:
        r = client.get(f"{API}/users", headers=admin,
                       query_string={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200
        page = r.get_json()
        assert len(page["items"]) <= 3
        seen += [u["email"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 9  # the admin and the eight people
    emea = client.get(f"{API}/users", headers=people.headers["unit_admin_emea"]).get_json()
    assert {u["email"].split("@")[0] for u in emea["items"]} == {
        "unit_admin_emea", "limited_emea", "finance_emea", "admin_in_emea", "limited_both"}
    bad = client.get(f"{API}/users", headers=admin, query_string={"cursor": "garbage!"})
    assert bad.status_code == 422 and "cursor" in bad.get_json()["errors"]
    assert client.get(f"{API}/users", headers=admin,
                      query_string={"limit": 501}).status_code == 422


@pytest.mark.parametrize("role, units, status, named", [
    ("limited", ["EMEA"], 201, None),
    ("unit_admin", ["EMEA"], 201, None),
    ("admin", ["EMEA"], 403, "manage_admins"),
    ("finance", ["EMEA"], 403, "manage_finance_users"),
    ("finance", [], 403, "manage_finance_users"),
    ("limited", ["APAC"], 403, "manage_account_users"),
    ("unit_admin", ["EMEA", "APAC"], 403, "manage_account_users"),
    ("limited", [], 403, "manage_account_users"),
])
def test_unit_admin_creates_only_unit_bound_users_in_their_units(service, client, people,
                                                                  role, units, status, named):
    before = len(outbox(service))
    r = client.post(f"{API}/users", headers=people.headers["unit_admin_emea"], json={
        "email": "new-person@example.com", "name": "New", "role": role,
        "unit_ids": [people.units[u] for u in units], "password": PASSWORD})
    assert r.status_code == status, r.get_json()
    if status == 403:
        assert r.get_json()["missing_permission"] == named
        assert len(outbox(service)) == before
    else:
        assert r.get_json()["role"] == role


@pytest.mark.parametrize("target, status", [("limited_emea", 200), ("limited_both", 403),
                                            ("finance_emea", 403), ("admin_in_emea", 403)])
def test_unit_admin_unlocks_only_users_within_reach(client, people, target, status):
    r = client.post(f"{API}/users/{people.ids[target]}/unlock",
                    headers=people.headers["unit_admin_emea"])
    assert r.status_code == status, r.get_json()


def test_the_admin_creates_finance_users_and_users_of_several_units(client, people):
    r = client.post(f"{API}/users", headers=people.headers["admin"], json={
        "email": "money@example.com", "name": "Money", "role": "finance",
        "unit_ids": [people.units["EMEA"], people.units["APAC"]], "password": PASSWORD})
    assert r.status_code == 201, r.get_json()


# --- e-mail addresses in use -------------------------------------------------------------


def _create(client, headers, email, units):
    return client.post(f"{API}/users", headers=headers, json={
        "email": email, "name": "Someone", "role": "limited", "unit_ids": units,
        "password": PASSWORD})


@pytest.mark.parametrize("who", ["admin", "unit_admin_emea"])
def test_an_address_in_use_gets_one_answer_whichever_account_has_it(service, client, people,
                                                                    globex, who):
    """The answer never tells an account's administrators that someone else's account
    has an address; and a used address costs the hash that a free one would."""
    headers = people.headers[who]
    units = [people.units["EMEA"]]
    hashed = []
    passwords = service.credentials.passwords
    real_hash = passwords.hash
    passwords.hash = lambda secret: hashed.append(secret) or real_hash(secret)
    try:
        answers = [_create(client, headers, email, units) for email in (
            "limited_emea@example.com",  # this account, in the caller's unit
            "LIMITED_APAC@example.com",  # this account, out of the caller's sight
            "root@globex.com",  # another account
            "operator@chancery.local")]  # the platform's staff
    finally:
        passwords.hash = real_hash
    for r in answers:
        assert r.status_code == 409
        assert r.headers["Content-Type"].startswith("application/problem+json")
    bodies = [r.get_json() for r in answers]
    assert all(body == bodies[0] for body in bodies), bodies
    assert bodies[0]["code"] == "email_unavailable" and "email" in bodies[0]["errors"]
    assert "exist" not in bodies[0]["detail"]
    assert len(hashed) == len(answers)  # the same work as for a free address
    assert _create(client, headers, "free@example.com", units).status_code == 201


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Ops\u202e", "\u2066Ops", "Ops\u200e", "Ops\tteam",
                                  "Ops\u2028", "\ufeffOps", "Ops\u200b"])
def test_unit_names_refuse_control_and_bidi_characters(client, people, name):
    admin = people.headers["admin"]
    for r in (client.post(f"{API}/units", headers=admin, json={"name": name}),
              client.patch(f"{API}/units/{people.units['EMEA']}", headers=admin,
                           json={"name": name})):
        assert r.status_code == 422, r.get_json()
        assert "name" in r.get_json()["errors"]
        assert r.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("field", ["name", "admin_name"])
def test_account_names_refuse_bidi_characters(client, login, field):
    operator = login(client, "operator@chancery.local")
    body = {"name": "Initech", "admin_email": "bill@initech.com", "admin_name": "Bill",
            "admin_password": "harbour-lantern-42"}
    r = client.post(f"{API}/accounts", headers=operator,
                    json={**body, field: "Initech \u202eevil"})
    assert r.status_code == 422 and field in r.get_json()["errors"], r.get_json()
    assert client.post(f"{API}/accounts", headers=operator, json=body).status_code == 201


def test_a_new_users_name_is_checked_and_the_handler_checks_it_too(service, people):
    """The schema refuses it over HTTP; the handler refuses it from any other caller."""
    from chancery_shared.web.problems import InvalidField

    with service.uow() as uow:
        admin = uow.session.get(User, people.ids["admin"])
        principal = Principal(user_id=admin.id, email=admin.email, name=admin.name,
                              role="admin", account_id=admin.account_id)
    context = Context(actor=Actor(user_id=principal.user_id, user_name="A"),
                      account_id=principal.account_id)
    with service.uow() as uow, pytest.raises(InvalidField) as refused:
        handlers.create_user(uow, service.credentials.passwords, principal, context,
                             handlers.NewUser("x@example.com", "X\u202eY", "limited", (),
                                              PASSWORD), service.clock())
    assert refused.value.errors == {"name": [refused.value.errors["name"][0]]}
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in refused.value.errors["name"][0]


# --- business units ----------------------------------------------------------------------


def test_admin_renames_a_unit_and_it_is_an_event(service, client, people):
    r = client.patch(f"{API}/units/{people.units['EMEA']}", headers=people.headers["admin"],
                     json={"name": "Europe"})
    assert r.status_code == 200 and r.get_json()["name"] == "Europe"
    event = outbox(service, "identity.unit.updated")[-1]
    assert event["data"] == {"unit_id": people.units["EMEA"], "name": "Europe"}
    assert "renamed business unit EMEA to Europe" in event["summary"]


@pytest.mark.parametrize("how", ["create", "rename"])
def test_unit_names_are_unique_in_an_account(client, people, globex, how):
    admin = people.headers["admin"]
    if how == "create":
        r = client.post(f"{API}/units", headers=admin, json={"name": "emea"})
    else:
        r = client.patch(f"{API}/units/{people.units['APAC']}", headers=admin,
                         json={"name": "EMEA"})
    assert r.status_code == 409 and r.get_json()["code"] == "unit_name_taken"
    # another account may use the name
    assert client.post(f"{API}/units", headers=globex, json={"name": "EMEA"}).status_code == 201


@pytest.mark.parametrize("who, unit, status", [
    ("admin", "EMEA", 200), ("admin", "APAC", 200),
    ("unit_admin_emea", "EMEA", 200), ("unit_admin_emea", "APAC", 404),
    ("limited_emea", "EMEA", 403),
])
def test_reading_one_unit(client, people, who, unit, status):
    r = client.get(f"{API}/units/{people.units[unit]}", headers=people.headers[who])
    assert r.status_code == status
    if status == 200:
        assert r.get_json()["name"] == unit


def test_units_of_another_account_are_not_found_and_only_admins_rename(client, people, globex):
    emea = people.units["EMEA"]
    assert client.get(f"{API}/units/{emea}", headers=globex).status_code == 404
    assert client.patch(f"{API}/units/{emea}", headers=globex,
                        json={"name": "Mine"}).status_code == 404
    r = client.patch(f"{API}/units/{emea}", headers=people.headers["unit_admin_emea"],
                     json={"name": "Mine"})
    assert r.status_code == 403 and r.get_json()["missing_permission"] == "manage_units"
    listed = client.get(f"{API}/units", headers=people.headers["unit_admin_emea"]).get_json()
    assert [u["name"] for u in listed["items"]] == ["EMEA"]
