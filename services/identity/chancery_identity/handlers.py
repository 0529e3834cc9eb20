"""identity's service layer for people: accounts, units, users, passwords, API keys.

One function per command, each in one unit of work. Scope rules (design/roles.md):
everything is confined to the caller's account (404 outside it); a unit administrator
sees only users who share one of their units (404 for the others) and manages only
limited users and unit administrators all of whose units are theirs, before and after
the change (403 naming the missing permission otherwise: ``permissions.missing_to_manage``
is the rule); nobody changes their own role, units or active state; the last active
administrator of an account stays one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chancery_shared.auth.permissions import Permission, allows, missing_to_manage
from chancery_shared.auth.tokens import OPERATOR, Principal
from chancery_shared.messaging.envelope import Actor, Context, isoformat
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.text import checked_display_name
from chancery_shared.web.pagination import decode_cursor, encode_cursor
from chancery_shared.web.problems import (
    Conflict,
    Forbidden,
    InvalidField,
    NotFound,
    Problem,
)
from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError

from chancery_identity.credentials import new_api_key, secret_hash
from chancery_identity.model import (
    ACCOUNT_ROLES,
    Account,
    ApiKey,
    Unit,
    User,
    user_units,
)
from chancery_identity.passwords import Passwords, policy_problem
from chancery_identity.sign_in import end_sessions

log = logging.getLogger(__name__)
ADMIN = "admin"


@dataclass(frozen=True)
class NewUser:
    email: str
    name: str
    role: str
    unit_ids: tuple[str, ...]
    password: str


def check_password_policy(field: str, password: str, *, email: str | None = None,
                          account_name: str | None = None) -> None:
    """422 naming ``field`` with the reason when the password is not acceptable."""
    problem = policy_problem(password, email=email, account_name=account_name)
    if problem:
        raise InvalidField(field, problem)


def _actor_name(context: Context) -> str:
    return context.actor.user_name or context.actor.system or "someone"


def _forbidden(detail: str, permission: Permission | str) -> Forbidden:
    return Forbidden(detail, code="forbidden", missing_permission=str(permission))


_BEYOND_REACH = {
    Permission.MANAGE_USERS: "your role does not manage users",
    Permission.MANAGE_ADMINS: "only an administrator creates, changes or makes administrators",
    Permission.MANAGE_FINANCE_USERS: "only an administrator creates, changes or makes finance "
                                     "users (they read the whole account's money and orders)",
    Permission.MANAGE_ACCOUNT_USERS: "a unit administrator manages only users all of whose "
                                     "units are theirs (and who are in at least one)",
}


def _check_reach(principal: Principal, role: str, unit_ids) -> None:
    """403 naming the permission when the caller may not manage a user like this."""
    missing = missing_to_manage(principal, role, tuple(unit_ids))
    if missing is not None:
        raise _forbidden(_BEYOND_REACH[missing], missing)


# --- reading -----------------------------------------------------------------------------


def _in_scope(principal: Principal):
    """SQL condition: users the caller may manage (their account; their units)."""
    condition = User.account_id == principal.account_id
    if not allows(principal, Permission.MANAGE_ACCOUNT_USERS):
        condition = and_(condition, exists().where(
            user_units.c.user_id == User.id,
            user_units.c.unit_id.in_(principal.unit_ids or ("",))))
    return condition


def _visible_user(uow: UnitOfWork, principal: Principal, user_id: str) -> User:
    if principal.account_id is None:
        raise NotFound("no such user")
    user = uow.session.execute(select(User).where(User.id == user_id, _in_scope(principal))
                               ).scalar_one_or_none()
    if user is None:
        raise NotFound("no such user")
    return user


def get_user(uow: UnitOfWork, principal: Principal, user_id: str) -> User:
    return _visible_user(uow, principal, user_id)


def _page(uow: UnitOfWork, query: Any, model: Any, limit: int,
          cursor: str | None) -> tuple[list, str | None]:
    """Keyset pagination on ``(created_at, id)``: stable while rows are added."""
    position = decode_cursor(cursor)
    if position is not None:
        try:
            after = datetime.fromisoformat(str(position["t"]).replace("Z", "+00:00"))
            after_id = str(position["i"])
        except (KeyError, ValueError) as exc:
            raise InvalidField("cursor", "is not a cursor this endpoint returned") from exc
        query = query.where(or_(model.created_at > after,
                                and_(model.created_at == after, model.id > after_id)))
    rows = list(uow.session.execute(query.order_by(model.created_at, model.id)
                                    .limit(limit + 1)).scalars())
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor({"t": isoformat(last.created_at), "i": last.id})


def list_users(uow: UnitOfWork, principal: Principal, *, limit: int = 50,
               cursor: str | None = None) -> tuple[list[User], str | None]:
    """Users of the caller's account (a unit administrator: users of their units)."""
    return _page(uow, select(User).where(_in_scope(principal)), User, limit, cursor)


def _account_name(uow: UnitOfWork, account_id: str | None) -> str | None:
    account = uow.session.get(Account, account_id) if account_id else None
    return account.name if account else None


def _units_of_account(uow: UnitOfWork, account_id: str, unit_ids: tuple[str, ...]) -> list[Unit]:
    if not unit_ids:
        return []
    units = uow.session.execute(select(Unit).where(Unit.id.in_(unit_ids),
                                                   Unit.account_id == account_id)).scalars().all()
    if len(units) != len(set(unit_ids)):
        raise InvalidField("unit_ids", "contains a unit that does not exist in this account")
    return list(units)


def _email_taken(uow: UnitOfWork, email: str) -> bool:
    return bool(uow.session.execute(select(func.count()).select_from(User)
                                    .where(User.email == email)).scalar_one())


def _email_unavailable() -> Conflict:
    """The one answer for an address already in use, in this account or any other: an
    account's administrators learn nothing about other accounts' people from it."""
    return Conflict("this e-mail address cannot be used for a new user; choose another",
                    code="email_unavailable", errors={"email": ["cannot be used"]})


# --- users -------------------------------------------------------------------------------


def create_user(uow: UnitOfWork, passwords: Passwords, principal: Principal, context: Context,
                new: NewUser, now: datetime) -> User:
    if new.role not in ACCOUNT_ROLES:
        raise InvalidField("role", f"must be one of {', '.join(ACCOUNT_ROLES)}")
    _check_reach(principal, new.role, new.unit_ids)
    assert principal.account_id is not None
    name = checked_display_name("name", new.name)
    email = new.email.strip().lower()
    check_password_policy("password", new.password, email=email,
                          account_name=_account_name(uow, principal.account_id))
    units = _units_of_account(uow, principal.account_id, new.unit_ids)
    # hash before looking the address up: a used address costs the same time as a free one
    password_hash = passwords.hash(new.password)
    if _email_taken(uow, email):
        raise _email_unavailable()
    user = User(account_id=principal.account_id, email=email, name=name, role=new.role,
                password_hash=password_hash, units=units, created_at=now, updated_at=now,
                password_changed_at=now)
    uow.session.add(user)
    try:
        uow.session.flush()
    except IntegrityError:  # the same address, created meanwhile by someone else
        raise _email_unavailable() from None
    uow.event("identity.user.created", context, subject=("user", user.id),
              summary=f"{_actor_name(context)} created {new.role} user {user.describe()}",
              data=user.as_event_data())
    uow.commit()
    return user


@dataclass(frozen=True)
class UserChanges:
    """A PATCH: only the fields given are changed."""

    name: str | None = None
    role: str | None = None
    unit_ids: tuple[str, ...] | None = None
    active: bool | None = None


def _other_active_admins(uow: UnitOfWork, user: User) -> int:
    return uow.session.execute(select(func.count()).select_from(User).where(
        User.account_id == user.account_id, User.id != user.id, User.role == ADMIN,
        User.active.is_(True))).scalar_one()


def _lock_account(uow: UnitOfWork, account_id: str) -> None:
    """Serialise changes to an account's people (two admins demoting each other at once)."""
    uow.session.execute(select(Account.id).where(Account.id == account_id).with_for_update())


def update_user(uow: UnitOfWork, principal: Principal, context: Context, user_id: str,
                changes: UserChanges, now: datetime) -> User:
    """Change a user's name, role, units or active state within the caller's rights."""
    assert principal.account_id is not None
    name = checked_display_name("name", changes.name) if changes.name is not None else None
    _lock_account(uow, principal.account_id)
    user = _visible_user(uow, principal, user_id)
    new_units = (_units_of_account(uow, principal.account_id, changes.unit_ids)
                 if changes.unit_ids is not None else None)
    role_changes = changes.role is not None and changes.role != user.role
    unit_changes = new_units is not None and {u.id for u in new_units} != set(user.unit_ids)
    active_changes = changes.active is not None and changes.active != user.active
    if user.id == principal.user_id and (role_changes or unit_changes or active_changes):
        raise _forbidden("nobody may change their own role, units or active state; ask "
                         "another administrator", "change_own_access")
    # the user as they are, and as they would be: both within the caller's reach
    _check_reach(principal, user.role, user.unit_ids)
    _check_reach(principal, changes.role or user.role,
                 [u.id for u in new_units] if new_units is not None else user.unit_ids)
    demoted = role_changes or (active_changes and changes.active is False)
    if user.is_active_admin and demoted and _other_active_admins(uow, user) == 0:
        raise Conflict("this is the account's last active administrator; make another user "
                       "an administrator first", code="last_admin")
    diff: dict[str, list] = {}
    if name is not None and name != user.name:
        diff["name"] = [user.name, name]
        user.name = name
    if role_changes:
        diff["role"] = [user.role, changes.role]
        user.role = changes.role  # type: ignore[assignment]
    if unit_changes:
        assert new_units is not None
        diff["unit_ids"] = [user.unit_ids, sorted(u.id for u in new_units)]
        user.units = new_units
    if active_changes:
        diff["active"] = [user.active, changes.active]
        user.active = bool(changes.active)
    if not diff:
        return user
    user.updated_at = now
    actor = _actor_name(context)
    if active_changes and not user.active:
        ended = end_sessions(uow, user, context, now, "deactivated")
        event = "identity.user.deactivated"
        summary = (f"{actor} deactivated {user.describe()}"
                   + (f" and ended {ended} sign-in session(s)" if ended else ""))
    else:
        event = "identity.user.updated"
        parts = [f"{field} {_shown(old)} → {_shown(new)}" for field, (old, new) in diff.items()]
        summary = f"{actor} updated {user.describe()}: {'; '.join(parts)}"
    uow.event(event, context, subject=("user", user.id), summary=summary,
              data={**user.as_event_data(), "changes": diff})
    uow.commit()
    return user


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]" if value else "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def unlock_user(uow: UnitOfWork, principal: Principal, context: Context, user_id: str,
                now: datetime) -> User:
    """Lift a sign-in lockout before it runs out (nothing happens when there is none)."""
    user = _visible_user(uow, principal, user_id)
    _check_reach(principal, user.role, user.unit_ids)
    return _unlock(uow, context, user, now)


def _unlock(uow: UnitOfWork, context: Context, user: User, now: datetime) -> User:
    if not user.is_locked(now) and not user.failed_logins:
        return user
    was_locked = user.is_locked(now)
    user.locked_until, user.failed_logins, user.updated_at = None, 0, now
    uow.event("identity.user.unlocked", context, subject=("user", user.id),
              summary=f"{_actor_name(context)} "
                      + (f"unlocked sign-in for {user.describe()}" if was_locked else
                         f"reset the failed sign-in count of {user.describe()}"),
              data={"user_id": user.id, "email": user.email, "unit_ids": user.unit_ids})
    uow.commit()
    return user


def change_password(uow_factory: Callable[[], UnitOfWork], passwords: Passwords,
                    principal: Principal, context: Context, current: str, new: str,
                    now: datetime, *, max_failures: int, lockout: timedelta) -> int:
    """The caller's new password; ends their other sessions; how many ended.

    A wrong current password counts towards the lockout like a failed sign-in, so a
    stolen session cannot be used to guess the password.
    """
    with uow_factory() as uow:
        user = uow.session.get(User, principal.user_id)
        if user is None:
            raise NotFound("no such user")
        if user.is_locked(now):
            raise Conflict("sign-in is locked after repeated failures; try again later",
                           code="locked", locked_until=isoformat(user.locked_until))
        email, old_hash = user.email, user.password_hash
        account_name = _account_name(uow, user.account_id)
    check_password_policy("new_password", new, email=email, account_name=account_name)
    matches = passwords.verify(old_hash, current)
    new_hash = passwords.hash(new) if matches else None
    with uow_factory() as uow:
        user = uow.session.execute(select(User).where(User.id == principal.user_id)
                                   .with_for_update()).scalar_one()
        if not matches or user.password_hash != old_hash:
            locked = user.record_failed_login(now, max_failures, lockout)
            uow.event("identity.login.failed", context, subject=("user", user.id),
                      summary=f"{user.name} gave a wrong current password when changing it "
                              f"from {context.actor.ip or 'an unknown address'}"
                              + (f"; sign-in locked until {isoformat(user.locked_until)}"
                                 if locked else ""),
                      data={"user_id": user.id, "email": user.email,
                            "method": "password_change", "reason": "bad_credentials",
                            "unit_ids": user.unit_ids,
                            "locked_until": isoformat(user.locked_until) if locked else None})
            uow.commit()
            raise InvalidField("current_password", "is not correct")
        if passwords.verify(old_hash, new):
            raise InvalidField("new_password", "must differ from the current password")
        assert new_hash is not None
        user.password_hash, user.password_changed_at, user.updated_at = new_hash, now, now
        user.failed_logins = 0
        ended = end_sessions(uow, user, context, now, "password_changed",
                             keep=principal.session_id)
        uow.event("identity.user.password_changed", context, subject=("user", user.id),
                  summary=f"{user.name} changed their password"
                          + (f" and ended {ended} other sign-in session(s)" if ended else ""),
                  data={"user_id": user.id, "email": user.email, "unit_ids": user.unit_ids,
                        "sessions_ended": ended})
        uow.commit()
    return ended


# --- business units ----------------------------------------------------------------------


def _unit_name_taken(uow: UnitOfWork, account_id: str, name: str,
                     except_id: str | None = None) -> bool:
    query = select(Unit.id).where(Unit.account_id == account_id,
                                  func.lower(Unit.name) == name.lower())
    if except_id:
        query = query.where(Unit.id != except_id)
    return uow.session.execute(query).first() is not None


def create_unit(uow: UnitOfWork, principal: Principal, context: Context, name: str,
                now: datetime) -> Unit:
    assert principal.account_id is not None
    name = checked_display_name("name", name)
    _lock_account(uow, principal.account_id)
    if _unit_name_taken(uow, principal.account_id, name):
        raise Conflict(f"a business unit named {name!r} already exists", code="unit_name_taken")
    unit = Unit(account_id=principal.account_id, name=name, created_at=now, updated_at=now)
    uow.session.add(unit)
    uow.session.flush()
    uow.event("identity.unit.created", context, subject=("unit", unit.id),
              summary=f"{_actor_name(context)} created business unit {unit.name}",
              data={"unit_id": unit.id, "name": unit.name})
    uow.commit()
    return unit


def _visible_unit(uow: UnitOfWork, principal: Principal, unit_id: str) -> Unit:
    unit = uow.session.get(Unit, unit_id)
    if unit is None or principal.account_id is None or unit.account_id != principal.account_id:
        raise NotFound("no such business unit")
    if not allows(principal, Permission.MANAGE_UNITS) and unit.id not in principal.unit_ids:
        raise NotFound("no such business unit")
    return unit


def get_unit(uow: UnitOfWork, principal: Principal, unit_id: str) -> Unit:
    return _visible_unit(uow, principal, unit_id)


def rename_unit(uow: UnitOfWork, principal: Principal, context: Context, unit_id: str,
                name: str, now: datetime) -> Unit:
    assert principal.account_id is not None
    _lock_account(uow, principal.account_id)
    unit = _visible_unit(uow, principal, unit_id)
    name = checked_display_name("name", name)
    if name == unit.name:
        return unit
    if _unit_name_taken(uow, principal.account_id, name, except_id=unit.id):
        raise Conflict(f"a business unit named {name!r} already exists", code="unit_name_taken")
    old, unit.name, unit.updated_at = unit.name, name, now
    uow.event("identity.unit.updated", context, subject=("unit", unit.id),
              summary=f"{_actor_name(context)} renamed business unit {old} to {name}",
              data={"unit_id": unit.id, "name": unit.name})
    uow.commit()
    return unit


def list_units(uow: UnitOfWork, principal: Principal, *, limit: int = 50,
               cursor: str | None = None) -> tuple[list[Unit], str | None]:
    query = select(Unit).where(Unit.account_id == principal.account_id)
    if not allows(principal, Permission.MANAGE_UNITS):
        query = query.where(Unit.id.in_(principal.unit_ids or ("",)))
    return _page(uow, query, Unit, limit, cursor)


# --- API keys ----------------------------------------------------------------------------


def create_api_key(uow: UnitOfWork, principal: Principal, context: Context, name: str,
                   now: datetime) -> tuple[ApiKey, str]:
    """A new key for the caller; the key itself is returned this once and never again."""
    for _ in range(5):
        prefix, key = new_api_key()
        if uow.session.execute(select(ApiKey.id).where(ApiKey.prefix == prefix)).first() is None:
            break
    else:  # pragma: no cover - five collisions of 32 random bits
        raise Problem("could not allocate a key prefix; try again", status=503,
                      code="unavailable")
    row = ApiKey(user_id=principal.user_id, name=checked_display_name("name", name),
                 prefix=prefix,
                 key_hash=secret_hash(key), created_at=now)
    uow.session.add(row)
    uow.session.flush()
    uow.event("identity.api_key.created", context, subject=("api_key", row.id),
              summary=f"{_actor_name(context)} created API key {row.name!r} ({prefix})",
              data={"key_id": row.id, "name": row.name, "prefix": prefix,
                    "user_id": principal.user_id})
    uow.commit()
    return row, key


def list_api_keys(uow: UnitOfWork, principal: Principal) -> list[ApiKey]:
    return list(uow.session.execute(select(ApiKey).where(ApiKey.user_id == principal.user_id)
                                    .order_by(ApiKey.created_at, ApiKey.id)).scalars())


def revoke_api_key(uow: UnitOfWork, principal: Principal, context: Context, key_id: str,
                   now: datetime) -> None:
    """Revoke one of the caller's keys (another user's is 404); revoking twice is a no-op."""
    row = uow.session.get(ApiKey, key_id)
    if row is None or row.user_id != principal.user_id:
        raise NotFound("no such API key")
    if row.revoked_at is not None:
        return
    row.revoked_at = now
    uow.event("identity.api_key.revoked", context, subject=("api_key", row.id),
              summary=f"{_actor_name(context)} revoked API key {row.name!r} ({row.prefix})",
              data={"key_id": row.id, "name": row.name, "prefix": row.prefix,
                    "user_id": principal.user_id})
    uow.commit()


# --- accounts and the platform operator --------------------------------------------------


def create_account(uow: UnitOfWork, passwords: Passwords, context: Context, *, name: str,
                   admin_email: str, admin_name: str, admin_password: str,
                   now: datetime) -> tuple[Account, User]:
    name = checked_display_name("name", name)
    admin_name = checked_display_name("admin_name", admin_name)
    email = admin_email.strip().lower()
    check_password_policy("admin_password", admin_password, email=email, account_name=name)
    if _email_taken(uow, email):
        raise Conflict("a user with this e-mail address already exists", code="email_taken")
    account = Account(name=name, created_at=now)
    uow.session.add(account)
    uow.session.flush()
    admin = User(account_id=account.id, email=email, name=admin_name, role=ADMIN,
                 password_hash=passwords.hash(admin_password), units=[], created_at=now,
                 updated_at=now, password_changed_at=now)
    uow.session.add(admin)
    uow.session.flush()
    in_account = context.with_account(account.id)
    uow.event("identity.account.created", in_account, subject=("account", account.id),
              summary=f"{_actor_name(context)} created account {account.name}",
              data={"name": account.name})
    uow.event("identity.user.created", in_account, subject=("user", admin.id),
              summary=f"{_actor_name(context)} created admin user {admin.describe()}",
              data=admin.as_event_data())
    uow.commit()
    return account, admin


def create_operator(uow: UnitOfWork, passwords: Passwords, context: Context, *, email: str,
                    name: str, password: str, now: datetime) -> User:
    """A member of the platform's staff (no account): the production way to the first one."""
    name = checked_display_name("name", name)
    email = email.strip().lower()
    check_password_policy("password", password, email=email)
    if _email_taken(uow, email):
        raise Conflict("a user with this e-mail address already exists", code="email_taken")
    operator = User(account_id=None, email=email, name=name, role=OPERATOR,
                    password_hash=passwords.hash(password), units=[], created_at=now,
                    updated_at=now, password_changed_at=now)
    uow.session.add(operator)
    uow.session.flush()
    uow.event("identity.user.created", context, subject=("user", operator.id),
              summary=f"{_actor_name(context)} created platform operator {operator.describe()}",
              data=operator.as_event_data())
    uow.commit()
    return operator


def unlock_by_email(uow: UnitOfWork, context: Context, email: str, now: datetime) -> User:
    user = uow.session.execute(select(User).where(User.email == email.strip().lower())
                               ).scalar_one_or_none()
    if user is None:
        raise NotFound("no such user")
    context = context.with_account(user.account_id)
    return _unlock(uow, context, user, now)


def bootstrap_development(uow: UnitOfWork, passwords: Passwords, password: str,
                          now: datetime) -> bool:
    """Seed the operator and the Example Corp account once; False when already there."""
    if uow.session.execute(select(User.id).where(User.email == "operator@chancery.local")).first():
        return False
    context = Context(actor=Actor.service("identity"), account_id=None)
    for email, account in (("operator@chancery.local", None), ("admin@example.com",
                                                              "Example Corp")):
        problem = policy_problem(password, email=email, account_name=account)
        if problem:
            raise SystemExit(f"CHANCERY_DEV_PASSWORD {problem}; choose another")
    create_operator(uow, passwords, context, email="operator@chancery.local",
                    name="Platform Operator", password=password, now=now)
    create_account(uow, passwords, context, name="Example Corp",
                   admin_email="admin@example.com", admin_name="Example Admin",
                   admin_password=password, now=now)
    log.warning("seeded development users operator@chancery.local and admin@example.com")
    return True
