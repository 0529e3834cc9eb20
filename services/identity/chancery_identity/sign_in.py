"""Signing in and staying signed in: passwords, API keys, refresh tokens, logout.

Failures never say which check failed (an unknown address, a wrong password, a locked
or deactivated user all get the same 401 body after the same argon2 work), but every
one becomes an ``identity.login.failed`` event with the client's address and the real
reason, so administrators see it in the audit log.

Two brakes, both kept in the database so that every worker of every run mode shares
them: a user is locked for ``lockout`` after ``max_failures`` consecutive wrong
passwords, and a client address that failed ``ip_max_failures`` times within
``ip_window`` is answered 429 with ``Retry-After`` until its oldest counted failure
leaves the window.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import datetime, timedelta

from chancery_shared.auth.tokens import Principal
from chancery_shared.messaging.envelope import Actor, Context, isoformat
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import Problem, Unauthenticated
from sqlalchemy import delete, select

from chancery_identity.credentials import (
    TokenIssuer,
    looks_like_api_key,
    new_refresh_token,
    secret_hash,
)
from chancery_identity.model import (
    ApiKey,
    LoginFailure,
    RefreshToken,
    SigningKey,
    SignInSession,
    User,
)
from chancery_identity.passwords import Passwords

BAD_CREDENTIALS = ("the e-mail address or password is not correct, or sign-in is locked for "
                   "a while after repeated failures; try again later or ask an administrator")
BAD_API_KEY = "the API key is not valid"
BAD_REFRESH_TOKEN = "the refresh token is not valid; sign in again"


@dataclasses.dataclass(frozen=True)
class SignInRules:
    """The numbers of lockout, throttling and sessions (CHANCERY_LOGIN_*, CHANCERY_SESSION_*)."""

    max_failures: int = 5
    lockout: timedelta = timedelta(minutes=15)
    ip_max_failures: int = 20
    ip_window: timedelta = timedelta(minutes=10)
    session_lifetime: timedelta = timedelta(hours=10)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What identity's collaborators are: the token issuer, the hasher, the rules."""

    tokens: TokenIssuer
    passwords: Passwords
    rules: SignInRules


@dataclasses.dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    session_id: str | None = None
    refresh_token: str | None = None
    refresh_expires_in: int | None = None

    def as_response(self) -> dict:
        body = {"access_token": self.access_token, "token_type": "Bearer",
                "expires_in": self.expires_in, "session_id": self.session_id}
        if self.refresh_token is not None:
            body.update(refresh_token=self.refresh_token,
                        refresh_expires_in=self.refresh_expires_in)
        return body


class TooManyAttempts(Problem):
    """429: this client address failed too often; ``retry_after`` seconds until it may retry."""

    status, code = 429, "too_many_attempts"

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed sign-in attempts from your address; try again in "
                         f"{retry_after} seconds", retry_after=retry_after)
        self.retry_after = retry_after


def _ip_key(ip: str | None) -> str:
    return (ip or "unknown")[:64]


def ip_retry_after(uow: UnitOfWork, rules: SignInRules, ip: str | None,
                   now: datetime) -> int | None:
    """Seconds this address must wait, or None when it may try now."""
    recent = uow.session.execute(
        select(LoginFailure.at).where(LoginFailure.ip == _ip_key(ip),
                                      LoginFailure.at > now - rules.ip_window)
        .order_by(LoginFailure.at.desc()).limit(rules.ip_max_failures)).scalars().all()
    if len(recent) < rules.ip_max_failures:
        return None
    free_at = recent[-1] + rules.ip_window  # when the oldest counted failure leaves
    return max(1, math.ceil((free_at - now).total_seconds()))


def _failure(uow: UnitOfWork, *, user: User | None, email: str | None, method: str,
             reason: str, ip: str | None, now: datetime, count_for_ip: bool = True,
             locked_until: datetime | None = None) -> None:
    if count_for_ip:
        uow.session.add(LoginFailure(ip=_ip_key(ip), at=now))
    actor = (Actor(user_id=user.id, user_name=user.name, ip=ip) if user is not None
             else Actor(system="identity", ip=ip))
    context = Context(actor=actor, account_id=user.account_id if user else None)
    who = email or (user.email if user else "an unknown user")
    how = {"password": "sign-in", "api_key": "API-key sign-in"}.get(method, method)
    summary = f"Failed {how} for {who} from {ip or 'an unknown address'} ({reason})"
    if locked_until is not None:
        summary += f"; sign-in locked until {isoformat(locked_until)}"
    data = {"user_id": user.id if user else None, "email": user.email if user else email,
            "method": method, "reason": reason,
            "locked_until": isoformat(locked_until) if locked_until else None}
    if user is not None:
        data["unit_ids"] = user.unit_ids
    uow.event("identity.login.failed", context,
              subject=("user", user.id) if user else ("email", email or "unknown"),
              summary=summary, data=data)


def _throttle(uow: UnitOfWork, rules: SignInRules, *, email: str | None, method: str,
              ip: str | None, now: datetime) -> None:
    """Refuse (429) an address over its budget, recording the refusal; no hashing done."""
    retry_after = ip_retry_after(uow, rules, ip, now)
    if retry_after is None:
        return
    _failure(uow, user=None, email=email, method=method, reason="throttled", ip=ip, now=now,
             count_for_ip=False)
    uow.commit()
    raise TooManyAttempts(retry_after)


def _access_token(uow: UnitOfWork, tokens: TokenIssuer, user: User, now: datetime,
                  session_id: str | None) -> tuple[str, int]:
    """Sign with the key in force, rotating it first when it is due (a cheap check)."""
    key = tokens.signing_key(uow.session, now)
    if tokens.rotation_due(key, now):
        rotated = tokens.rotate(uow.session, now)
        if rotated is not None:
            announce_rotation(uow, rotated[0], rotated[1], Actor.service("identity"),
                              "identity rotated the access-token signing key on schedule")
            key = tokens.signing_key(uow.session, now)
    return tokens.sign(key, user, now, session_id)


def announce_rotation(uow: UnitOfWork, new: SigningKey, previous: SigningKey | None,
                      actor: Actor, summary: str) -> None:
    uow.event("identity.signing_key.rotated", Context(actor=actor, account_id=None),
              subject=("signing_key", new.kid),
              summary=f"{summary}: new key {new.describe()}"
                      + (f" replaces {previous.kid}" if previous else ""),
              data={"kid": new.kid, "previous_kid": previous.kid if previous else None,
                    "activates_at": isoformat(new.activates_at)})


def _start_session(uow: UnitOfWork, creds: Credentials, user: User, ip: str | None,
                   now: datetime) -> IssuedTokens:
    session = SignInSession(user_id=user.id, ip=_ip_key(ip), created_at=now, last_used_at=now,
                            expires_at=now + creds.rules.session_lifetime)
    uow.session.add(session)
    uow.session.flush()
    refresh = new_refresh_token()
    uow.session.add(RefreshToken(token_hash=secret_hash(refresh), session_id=session.id,
                                 created_at=now))
    access, lifetime = _access_token(uow, creds.tokens, user, now, session.id)
    return IssuedTokens(access, lifetime, session.id, refresh,
                        int(creds.rules.session_lifetime.total_seconds()))


def password_sign_in(uow_factory: Callable[[], UnitOfWork], creds: Credentials, email: str,
                     password: str, ip: str | None, now: datetime) -> IssuedTokens:
    """E-mail and password for an access token and a refresh token (a new session).

    The argon2 verification runs between two short transactions, so a burst of
    sign-ins never holds the database (SQLite's single writer) for the hashing time.
    """
    email = email.strip().lower()
    with uow_factory() as uow:
        _throttle(uow, creds.rules, email=email, method="password", ip=ip, now=now)
        found = uow.session.execute(select(User.id, User.password_hash)
                                    .where(User.email == email)).first()
    user_id, password_hash = (found.id, found.password_hash) if found else (None, None)
    matches = creds.passwords.verify(password_hash, password)
    with uow_factory() as uow:
        user = (uow.session.execute(select(User).where(User.id == user_id).with_for_update())
                .scalar_one_or_none() if user_id else None)
        if user is not None and user.password_hash != password_hash:
            matches = False  # the password changed while we were verifying
        reason, locked_until = None, None
        if user is None:
            reason = "bad_credentials"
        elif user.is_locked(now):
            reason = "locked"
        elif not matches:
            reason = "bad_credentials"
            if user.record_failed_login(now, creds.rules.max_failures, creds.rules.lockout):
                locked_until = user.locked_until
        elif not user.active:
            reason = "inactive"
        if reason is not None:
            _failure(uow, user=user, email=email, method="password", reason=reason, ip=ip,
                     now=now, locked_until=locked_until)
            uow.commit()
            raise Unauthenticated(BAD_CREDENTIALS, code="invalid_credentials")
        assert user is not None
        user.record_login(now)
        if creds.passwords.needs_rehash(user.password_hash):
            user.password_hash = creds.passwords.hash(password)
        issued = _start_session(uow, creds, user, ip, now)
        uow.event("identity.session.created",
                  Context(actor=Actor(user_id=user.id, user_name=user.name, ip=ip),
                          account_id=user.account_id),
                  subject=("user", user.id),
                  summary=f"{user.name} signed in with a password from "
                          f"{ip or 'an unknown address'}",
                  data={"user_id": user.id, "email": user.email, "method": "password",
                        "session_id": issued.session_id, "unit_ids": user.unit_ids})
        uow.commit()
    return issued


def api_key_sign_in(uow: UnitOfWork, creds: Credentials, key: str, ip: str | None,
                    now: datetime) -> IssuedTokens:
    """An API key for an access token (no session, no refresh token: keys sign in again)."""
    _throttle(uow, creds.rules, email=None, method="api_key", ip=ip, now=now)
    row = (uow.session.execute(select(ApiKey).where(ApiKey.key_hash == secret_hash(key)))
           .scalar_one_or_none() if looks_like_api_key(key) else None)
    user = uow.session.get(User, row.user_id) if row is not None else None
    reason = ("bad_credentials" if row is None or user is None
              else "revoked_key" if row.revoked_at is not None
              else "inactive" if not user.active else None)
    if reason is not None:
        _failure(uow, user=user, email=None, method="api_key", reason=reason, ip=ip, now=now)
        uow.commit()
        raise Unauthenticated(BAD_API_KEY, code="invalid_credentials")
    assert row is not None and user is not None
    row.last_used_at = now
    access, lifetime = _access_token(uow, creds.tokens, user, now, None)
    uow.event("identity.session.created",
              Context(actor=Actor(user_id=user.id, user_name=user.name, ip=ip),
                      account_id=user.account_id),
              subject=("user", user.id),
              summary=f"{user.name} signed in with API key {row.name!r} ({row.prefix}) from "
                      f"{ip or 'an unknown address'}",
              data={"user_id": user.id, "email": user.email, "method": "api_key",
                    "session_id": None, "unit_ids": user.unit_ids, "key_id": row.id})
    uow.commit()
    return IssuedTokens(access, lifetime)


def refresh(uow: UnitOfWork, creds: Credentials, refresh_token: str, ip: str | None,
            now: datetime) -> IssuedTokens:
    """Trade a refresh token for new tokens; the user's role and units are read afresh.

    Each refresh token works once. Presenting one that was already used means two
    parties hold the session's tokens (one of them stole it): the whole session ends.
    """
    row = uow.session.execute(select(RefreshToken)
                              .where(RefreshToken.token_hash == secret_hash(refresh_token))
                              .with_for_update()).scalar_one_or_none()
    if row is None:
        raise Unauthenticated(BAD_REFRESH_TOKEN, code="invalid_refresh_token")
    session = uow.session.execute(select(SignInSession).where(SignInSession.id == row.session_id)
                                  .with_for_update()).scalar_one()
    user = uow.session.get(User, session.user_id)
    assert user is not None
    if row.consumed_at is not None:
        if session.end(now, "refresh_token_reused"):
            _session_ended(uow, user, session, ip,
                           f"Sign-in session of {user.describe()} ended: a refresh token was "
                           f"used twice (from {ip or 'an unknown address'}), so it may have "
                           f"been stolen")
            uow.commit()
        raise Unauthenticated(BAD_REFRESH_TOKEN, code="invalid_refresh_token")
    if not session.is_live(now) or not user.active:
        raise Unauthenticated(BAD_REFRESH_TOKEN, code="invalid_refresh_token")
    row.consumed_at = now
    session.last_used_at = now
    new_token = new_refresh_token()
    uow.session.add(RefreshToken(token_hash=secret_hash(new_token), session_id=session.id,
                                 created_at=now))
    access, lifetime = _access_token(uow, creds.tokens, user, now, session.id)
    uow.commit()
    return IssuedTokens(access, lifetime, session.id, new_token,
                        max(0, int((session.expires_at - now).total_seconds())))


def _session_ended(uow: UnitOfWork, user: User, session: SignInSession, ip: str | None,
                   summary: str) -> None:
    uow.event("identity.session.ended",
              Context(actor=Actor(user_id=user.id, user_name=user.name, ip=ip),
                      account_id=user.account_id),
              subject=("user", user.id), summary=summary,
              data={"user_id": user.id, "email": user.email, "method": "refresh_token",
                    "reason": session.end_reason, "session_id": session.id,
                    "unit_ids": user.unit_ids})


def logout(uow: UnitOfWork, principal: Principal, ip: str | None, now: datetime) -> None:
    """End the session of the presenting access token (nothing to end for API-key tokens)."""
    if principal.session_id is None:
        return
    session = uow.session.execute(select(SignInSession)
                                  .where(SignInSession.id == principal.session_id)
                                  .with_for_update()).scalar_one_or_none()
    if session is None or session.user_id != principal.user_id:
        return
    user = uow.session.get(User, session.user_id)
    if user is not None and session.end(now, "logout"):
        _session_ended(uow, user, session, ip,
                       f"{user.name} signed out from {ip or 'an unknown address'}")
        uow.commit()


def end_sessions(uow: UnitOfWork, user: User, context: Context, now: datetime, reason: str,
                 keep: str | None = None) -> int:
    """End every live session of a user (but ``keep``); how many ended.

    Each ends with an ``identity.session.ended`` event: every service refuses that
    session's access tokens as soon as it hears it (``chancery_shared.auth.revocations``).
    """
    query = (select(SignInSession)
             .where(SignInSession.user_id == user.id, SignInSession.ended_at.is_(None),
                    SignInSession.expires_at > now)
             .order_by(SignInSession.created_at).with_for_update())
    if keep is not None:
        query = query.where(SignInSession.id != keep)
    why = {"deactivated": "the user was deactivated",
           "password_changed": "the password was changed"}.get(reason, reason)
    ended = 0
    for session in uow.session.execute(query).scalars():
        if not session.end(now, reason):
            continue
        ended += 1
        uow.event("identity.session.ended", context, subject=("user", user.id),
                  summary=f"Sign-in session {session.id} of {user.describe()} ended: {why}",
                  data={"user_id": user.id, "email": user.email, "method": "password",
                        "reason": reason, "session_id": session.id,
                        "unit_ids": user.unit_ids})
    return ended


def caller(uow: UnitOfWork, principal: Principal, now: datetime) -> Principal:
    """The caller as identity's database knows them now, or 401.

    Other services trust an access token until it expires; identity itself, which
    manages people, re-reads the caller on every request, so a deactivation, a role
    change or a logout takes effect on its own endpoints at once.
    """
    user = uow.session.get(User, principal.user_id)
    if user is None or not user.active:
        raise Unauthenticated("the access token is no longer valid", code="invalid_token")
    if principal.session_id is not None:
        session = uow.session.get(SignInSession, principal.session_id)
        if session is None or session.user_id != user.id or not session.is_live(now):
            raise Unauthenticated("the sign-in session has ended", code="session_ended")
    return Principal(user_id=user.id, email=user.email, name=user.name, role=user.role,
                     account_id=user.account_id, unit_ids=tuple(user.unit_ids),
                     token_id=principal.token_id, session_id=principal.session_id)


def purge(uow: UnitOfWork, creds: Credentials, now: datetime) -> None:
    """Forget what no rule needs any more: old failures, long-ended sessions, dead keys."""
    uow.session.execute(delete(LoginFailure).where(
        LoginFailure.at <= now - max(creds.rules.ip_window, timedelta(hours=1))))
    stale = select(SignInSession.id).where(
        (SignInSession.expires_at <= now - timedelta(days=1))
        | (SignInSession.ended_at <= now - timedelta(days=1)))
    uow.session.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(stale)))
    uow.session.execute(delete(SignInSession).where(SignInSession.id.in_(stale)))
    creds.tokens.prune(uow.session, now)
    uow.commit()
