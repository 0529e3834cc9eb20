"""identity's service layer: one function per command, each in one unit of work."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chancery_shared.auth.tokens import OPERATOR, Principal
from chancery_shared.messaging.envelope import Actor, Context
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import (
    Conflict,
    Forbidden,
    InvalidField,
    NotFound,
    Unauthenticated,
)
from sqlalchemy import func, select

from chancery_identity.credentials import TokenIssuer, hash_password, verify_password
from chancery_identity.model import ACCOUNT_ROLES, Account, Unit, User

log = logging.getLogger(__name__)
MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True)
class NewUser:
    email: str
    name: str
    role: str
    unit_ids: tuple[str, ...]
    password: str


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidField("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")


def _summary_user(user: User) -> str:
    return f"{user.name} <{user.email}>"


def login(uow: UnitOfWork, tokens: TokenIssuer, email: str, password: str,
          ip: str | None) -> tuple[str, int]:
    email = email.strip().lower()
    user = uow.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or not user.active:
        context = Context(actor=Actor(user_id=user.id if user else None,
                                      user_name=user.name if user else None, ip=ip,
                                      system=None if user else "identity"),
                          account_id=user.account_id if user else None)
        reason = "inactive user" if user is not None and ok else "bad credentials"
        uow.event("identity.login.failed", context, subject=("user", user.id if user else email),
                  summary=f"Failed sign-in for {email} from {ip or 'unknown address'}",
                  data={"user_id": user.id if user else None, "email": email,
                        "method": "password", "reason": reason})
        uow.commit()
        raise Unauthenticated("the e-mail address or password is not correct",
                              code="invalid_credentials")
    token, lifetime = tokens.issue(uow.session, user)
    context = Context(actor=Actor(user_id=user.id, user_name=user.name, ip=ip),
                      account_id=user.account_id)
    uow.event("identity.session.created", context, subject=("user", user.id),
              summary=f"{user.name} signed in with a password from {ip or 'unknown address'}",
              data={"user_id": user.id, "email": user.email, "method": "password"})
    uow.commit()
    return token, lifetime


def _visible_user(uow: UnitOfWork, principal: Principal, user_id: str) -> User:
    user = uow.session.get(User, user_id)
    if user is None or user.account_id != principal.account_id or principal.account_id is None:
        raise NotFound("no such user")
    if principal.role == "unit_admin" and not set(user.unit_ids) & set(principal.unit_ids):
        raise NotFound("no such user")
    return user


def get_user(uow: UnitOfWork, principal: Principal, user_id: str) -> User:
    return _visible_user(uow, principal, user_id)


def list_users(uow: UnitOfWork, principal: Principal) -> list[User]:
    users = uow.session.execute(select(User).where(User.account_id == principal.account_id)
                                .order_by(User.created_at, User.id)).scalars().all()
    if principal.role == "unit_admin":
        users = [u for u in users if set(u.unit_ids) & set(principal.unit_ids)]
    return list(users)


def _units_of_account(uow: UnitOfWork, account_id: str, unit_ids: tuple[str, ...]) -> list[Unit]:
    if not unit_ids:
        return []
    units = uow.session.execute(select(Unit).where(Unit.id.in_(unit_ids),
                                                   Unit.account_id == account_id)).scalars().all()
    if len(units) != len(set(unit_ids)):
        raise InvalidField("unit_ids", "contains a unit that does not exist in this account")
    return list(units)


def create_user(uow: UnitOfWork, principal: Principal, context: Context, new: NewUser) -> User:
    if new.role not in ACCOUNT_ROLES:
        raise InvalidField("role", f"must be one of {', '.join(ACCOUNT_ROLES)}")
    if principal.role == "unit_admin":
        if new.role == "admin":
            raise Forbidden("a unit administrator cannot create administrators",
                            missing_permission="manage_admins")
        if not new.unit_ids or not set(new.unit_ids) <= set(principal.unit_ids):
            raise Forbidden("a unit administrator can only add users to their own units",
                            missing_permission="manage_users_of_other_units")
    check_password_policy(new.password)
    assert principal.account_id is not None
    units = _units_of_account(uow, principal.account_id, new.unit_ids)
    email = new.email.strip().lower()
    if uow.session.execute(select(func.count()).select_from(User)
                           .where(User.email == email)).scalar_one():
        raise Conflict("a user with this e-mail address already exists", code="email_taken")
    user = User(account_id=principal.account_id, email=email, name=new.name.strip(),
                role=new.role, password_hash=hash_password(new.password), units=units)
    uow.session.add(user)
    uow.session.flush()
    uow.event("identity.user.created", context, subject=("user", user.id),
              summary=f"{context.actor.user_name} created {new.role} user {_summary_user(user)}",
              data=user.as_event_data())
    uow.commit()
    return user


def create_unit(uow: UnitOfWork, principal: Principal, context: Context, name: str) -> Unit:
    assert principal.account_id is not None
    unit = Unit(account_id=principal.account_id, name=name.strip())
    uow.session.add(unit)
    uow.session.flush()
    uow.event("identity.unit.created", context, subject=("unit", unit.id),
              summary=f"{context.actor.user_name} created business unit {unit.name}",
              data={"unit_id": unit.id, "name": unit.name})
    uow.commit()
    return unit


def list_units(uow: UnitOfWork, principal: Principal) -> list[Unit]:
    query = select(Unit).where(Unit.account_id == principal.account_id)
    if principal.role != "admin":
        query = query.where(Unit.id.in_(principal.unit_ids or ("",)))
    return list(uow.session.execute(query.order_by(Unit.created_at, Unit.id)).scalars())


def create_account(uow: UnitOfWork, context: Context, *, name: str, admin_email: str,
                   admin_name: str, admin_password: str) -> tuple[Account, User]:
    check_password_policy(admin_password)
    email = admin_email.strip().lower()
    if uow.session.execute(select(User.id).where(User.email == email)).first():
        raise Conflict("a user with this e-mail address already exists", code="email_taken")
    account = Account(name=name.strip())
    uow.session.add(account)
    uow.session.flush()
    admin = User(account_id=account.id, email=email, name=admin_name.strip(), role="admin",
                 password_hash=hash_password(admin_password), units=[])
    uow.session.add(admin)
    uow.session.flush()
    in_account = context.with_account(account.id)
    uow.event("identity.account.created", in_account, subject=("account", account.id),
              summary=f"{context.actor.user_name or context.actor.system} created account "
                      f"{account.name}",
              data={"name": account.name})
    uow.event("identity.user.created", in_account, subject=("user", admin.id),
              summary=f"{context.actor.user_name or context.actor.system} created admin user "
                      f"{_summary_user(admin)}",
              data=admin.as_event_data())
    uow.commit()
    return account, admin


def bootstrap_development(uow: UnitOfWork, password: str) -> bool:
    """Seed the operator and the Example Corp account once; False when already there."""
    if uow.session.execute(select(User.id).where(User.email == "operator@chancery.local")).first():
        return False
    context = Context(actor=Actor.service("identity"), account_id=None)
    operator = User(account_id=None, email="operator@chancery.local", name="Platform Operator",
                    role=OPERATOR, password_hash=hash_password(password), units=[])
    uow.session.add(operator)
    uow.session.flush()
    uow.event("identity.user.created", context, subject=("user", operator.id),
              summary="identity created the development platform operator",
              data=operator.as_event_data())
    account, admin = create_account(uow, context, name="Example Corp",
                                    admin_email="admin@example.com", admin_name="Example Admin",
                                    admin_password=password)
    log.warning("seeded development users operator@chancery.local and admin@example.com")
    return True
