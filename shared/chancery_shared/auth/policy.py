"""Request-time authorization helpers shared by every service.

Routes are authenticated by default: the app factory rejects a request without a
valid bearer token unless its view is marked :func:`public`. Views then ask for the
role they need with :func:`require_role`; object-level rules (own orders, units) are
each service's, and answer 404 for what the caller may not see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import g

from chancery_shared.auth.permissions import Permission, allows
from chancery_shared.auth.tokens import OPERATOR, Principal
from chancery_shared.web.problems import Forbidden, Unauthenticated

F = TypeVar("F", bound=Callable)


def public(view: F) -> F:
    """Mark a view as reachable without a token (login, JWKS, CA downloads, health)."""
    view._chancery_public = True  # type: ignore[attr-defined]
    return view


def is_public(view: Callable | None) -> bool:
    return bool(view is not None and getattr(view, "_chancery_public", False))


def current_principal() -> Principal:
    principal = getattr(g, "principal", None)
    if principal is None:
        raise Unauthenticated("a valid bearer token is required")
    return principal


def optional_principal() -> Principal | None:
    return getattr(g, "principal", None)


def require(permission: Permission) -> Principal:
    """The caller, if ``design/roles.md`` gives their role ``permission``; else 403 naming it."""
    principal = current_principal()
    if not allows(principal, permission):
        raise Forbidden(f"your role ({principal.role}) lacks the permission '{permission}'",
                        code="forbidden", missing_permission=str(permission))
    return principal


def require_role(*roles: str, permission: str) -> Principal:
    """The caller, if their role is one of ``roles``; 403 naming ``permission`` otherwise."""
    principal = current_principal()
    if principal.role not in roles:
        raise Forbidden(f"your role ({principal.role}) lacks the permission '{permission}'",
                        code="forbidden", missing_permission=permission)
    return principal


def require_operator(permission: str) -> Principal:
    return require_role(OPERATOR, permission=permission)


def require_account_user(permission: str) -> Principal:
    """Any user of a customer account (not the platform operator)."""
    return require_role("limited", "finance", "unit_admin", "admin", permission=permission)
