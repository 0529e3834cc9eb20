"""identity's HTTP entrypoints: turn JSON into a handler call, the result into JSON."""

from __future__ import annotations

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import current_principal, is_public, public, require
from chancery_shared.service import current_service
from chancery_shared.web.app import client_ip, request_context
from chancery_shared.web.idempotency import idempotent
from chancery_shared.web.problems import render
from flask import current_app, g, jsonify, request
from flask_smorest import Blueprint

from chancery_identity import handlers, schemas, sign_in

api = Blueprint("identity", __name__, url_prefix="/api/identity/v1",
                description="Sign-in, sessions, API keys, users, business units and customer "
                            "accounts")
wellknown = Blueprint("jwks", __name__, url_prefix="/api/identity/.well-known",
                      description="Public keys that verify access tokens")


def _service():
    return current_service()


def _uow():
    return _service().uow()


def _now():
    return _service().clock()


@api.before_request
def _recheck_caller() -> None:
    """Identity re-reads every caller: deactivation, demotion and logout act here at once."""
    if getattr(g, "principal", None) is None:
        return
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if is_public(view) or request.endpoint == f"{api.name}.end_session":
        return
    with _uow() as uow:
        g.principal = sign_in.caller(uow, g.principal, _now())


def _too_many(exc: sign_in.TooManyAttempts):
    return render(exc, {"Retry-After": str(exc.retry_after)})


# --- sessions ---------------------------------------------------------------------------


@api.route("/sessions", methods=["POST"])
@api.arguments(schemas.SessionRequest)
@api.response(201, schemas.SessionResponse)
@api.alt_response(401, description="bad credentials (one answer for every reason)")
@api.alt_response(429, description="too many failures from this address; see Retry-After")
@public
def create_session(body):
    """Sign in: an e-mail and password (a session with a refresh token), or an API key."""
    service = _service()
    try:
        if "api_key" in body:
            with _uow() as uow:
                issued = sign_in.api_key_sign_in(uow, service.credentials, body["api_key"],
                                                 client_ip(), _now())
        else:
            issued = sign_in.password_sign_in(service.uow, service.credentials, body["email"],
                                              body["password"], client_ip(), _now())
    except sign_in.TooManyAttempts as exc:
        return _too_many(exc)
    return issued.as_response()


@api.route("/sessions/refresh", methods=["POST"])
@api.arguments(schemas.RefreshRequest)
@api.response(200, schemas.SessionResponse)
@api.alt_response(401, description="refresh token unknown, used, expired or its session ended")
@public
def refresh_session(body):
    """New access and refresh tokens for a refresh token, which is used up."""
    with _uow() as uow:
        issued = sign_in.refresh(uow, _service().credentials, body["refresh_token"],
                                 client_ip(), _now())
    return issued.as_response()


@api.route("/sessions/current", methods=["DELETE"])
@api.response(204)
def end_session():
    """Sign out: the session of this access token ends, its refresh token stops working."""
    principal = current_principal()
    with _uow() as uow:
        sign_in.logout(uow, principal, client_ip(), _now())


# --- the caller ---------------------------------------------------------------------------


@api.route("/me")
@api.response(200, schemas.MeSchema)
def me():
    """The caller, as identity knows them now."""
    p = current_principal()
    return {"id": p.user_id, "email": p.email, "name": p.name, "role": p.role,
            "account_id": p.account_id, "unit_ids": list(p.unit_ids),
            "session_id": p.session_id}


@api.route("/me/password", methods=["POST"])
@api.arguments(schemas.PasswordChangeSchema)
@api.response(204)
def change_password(body):
    """Change one's own password; one's other sign-in sessions end."""
    principal = current_principal()
    rules = _service().credentials.rules
    handlers.change_password(_service().uow, _service().credentials.passwords, principal,
                             request_context(principal), body["current_password"],
                             body["new_password"], _now(), max_failures=rules.max_failures,
                             lockout=rules.lockout)


# --- users ------------------------------------------------------------------------------


@api.route("/users")
@api.arguments(schemas.ListArgs, location="query")
@api.response(200, schemas.UserPage)
def list_users(args):
    """Users of the caller's account (a unit administrator: users of their units)."""
    principal = require(Permission.MANAGE_USERS)
    with _uow() as uow:
        items, next_cursor = handlers.list_users(uow, principal, limit=args["limit"],
                                                 cursor=args["cursor"])
        return {"items": items, "next_cursor": next_cursor}


@api.route("/users", methods=["POST"])
@idempotent(secret_fields=("password",))
@api.arguments(schemas.NewUserSchema)
@api.response(201, schemas.UserSchema)
@api.alt_response(403, description="beyond the caller's reach: a unit administrator creates "
                  "only limited users and unit administrators, in their own units only "
                  "(`missing_permission`: `manage_finance_users`, `manage_admins`, "
                  "`manage_account_users`)")
@api.alt_response(409, description="`email_unavailable`: the address cannot be used (the "
                  "answer does not say whether it is in this account or another)")
@api.alt_response(422, description="a field is invalid (named in `errors`), e.g. a name "
                  "with control or bidirectional formatting characters")
def create_user(body):
    """Add a user to the caller's account.

    An admin adds anyone. A unit administrator adds limited users and unit
    administrators whose units are all their own (at least one), never finance users or
    administrators."""
    principal = require(Permission.MANAGE_USERS)
    new = handlers.NewUser(email=body["email"], name=body["name"], role=body["role"],
                           unit_ids=tuple(body["unit_ids"]), password=body["password"])
    with _uow() as uow:
        return handlers.create_user(uow, _service().credentials.passwords, principal,
                                    request_context(principal), new, _now())


@api.route("/users/<user_id>")
@api.response(200, schemas.UserSchema)
def get_user(user_id):
    """One user, with their lockout state."""
    principal = require(Permission.MANAGE_USERS)
    with _uow() as uow:
        return handlers.get_user(uow, principal, user_id)


@api.route("/users/<user_id>", methods=["PATCH"])
@api.arguments(schemas.UserPatchSchema)
@api.response(200, schemas.UserSchema)
@api.alt_response(403, description="beyond the caller's reach (`missing_permission` says "
                  "which), or the caller's own role, units or active state "
                  "(`change_own_access`)")
@api.alt_response(404, description="no such user in the caller's scope")
@api.alt_response(409, description="`last_admin`: the account's last active administrator")
@api.alt_response(422, description="a field is invalid (named in `errors`)")
def update_user(body, user_id):
    """Change a user's name, role, units or active state (``active: false`` deactivates).

    A unit administrator changes only limited users and unit administrators all of whose
    units are their own, and leaves them so (at least one of the caller's units, none
    other, never finance or admin). Nobody changes their own role, units or active
    state."""
    principal = require(Permission.MANAGE_USERS)
    changes = handlers.UserChanges(
        name=body.get("name"), role=body.get("role"), active=body.get("active"),
        unit_ids=tuple(body["unit_ids"]) if "unit_ids" in body else None)
    with _uow() as uow:
        return handlers.update_user(uow, principal, request_context(principal), user_id,
                                    changes, _now())


@api.route("/users/<user_id>/unlock", methods=["POST"])
@api.response(200, schemas.UserSchema)
@api.alt_response(403, description="beyond the caller's reach (as for changing the user)")
def unlock_user(user_id):
    """Lift a sign-in lockout before it runs out."""
    principal = require(Permission.MANAGE_USERS)
    with _uow() as uow:
        return handlers.unlock_user(uow, principal, request_context(principal), user_id, _now())


# --- business units ---------------------------------------------------------------------


@api.route("/units")
@api.arguments(schemas.ListArgs, location="query")
@api.response(200, schemas.UnitPage)
def list_units(args):
    """Business units: all of them for an admin, their own for a unit administrator."""
    principal = require(Permission.READ_UNITS)
    with _uow() as uow:
        items, next_cursor = handlers.list_units(uow, principal, limit=args["limit"],
                                                 cursor=args["cursor"])
        return {"items": items, "next_cursor": next_cursor}


@api.route("/units", methods=["POST"])
@idempotent
@api.arguments(schemas.UnitSchema)
@api.response(201, schemas.UnitSchema)
def create_unit(body):
    """A new business unit (names are unique within the account)."""
    principal = require(Permission.MANAGE_UNITS)
    with _uow() as uow:
        return handlers.create_unit(uow, principal, request_context(principal), body["name"],
                                    _now())


@api.route("/units/<unit_id>")
@api.response(200, schemas.UnitSchema)
def get_unit(unit_id):
    """One business unit (a unit administrator: one of their own)."""
    principal = require(Permission.READ_UNITS)
    with _uow() as uow:
        return handlers.get_unit(uow, principal, unit_id)


@api.route("/units/<unit_id>", methods=["PATCH"])
@api.arguments(schemas.UnitSchema)
@api.response(200, schemas.UnitSchema)
def rename_unit(body, unit_id):
    """Rename a business unit."""
    principal = require(Permission.MANAGE_UNITS)
    with _uow() as uow:
        return handlers.rename_unit(uow, principal, request_context(principal), unit_id,
                                    body["name"], _now())


# --- API keys ---------------------------------------------------------------------------


@api.route("/api-keys", methods=["POST"])
@api.arguments(schemas.NewApiKeySchema)
@api.response(201, schemas.CreatedApiKeySchema)
def create_api_key(body):
    """A new API key for the caller; ``key`` is shown in this answer only."""
    principal = require(Permission.MANAGE_OWN_API_KEYS)
    with _uow() as uow:
        row, key = handlers.create_api_key(uow, principal, request_context(principal),
                                           body["name"], _now())
    return {"id": row.id, "name": row.name, "prefix": row.prefix, "created_at": row.created_at,
            "last_used_at": None, "revoked_at": None, "key": key}


@api.route("/api-keys")
@api.response(200, schemas.ApiKeyPage)
def list_api_keys():
    """The caller's own API keys (never the keys themselves)."""
    principal = require(Permission.MANAGE_OWN_API_KEYS)
    with _uow() as uow:
        return {"items": handlers.list_api_keys(uow, principal), "next_cursor": None}


@api.route("/api-keys/<key_id>", methods=["DELETE"])
@api.response(204)
def revoke_api_key(key_id):
    """Revoke one of the caller's API keys; it stops working at once."""
    principal = require(Permission.MANAGE_OWN_API_KEYS)
    with _uow() as uow:
        handlers.revoke_api_key(uow, principal, request_context(principal), key_id, _now())


# --- accounts -----------------------------------------------------------------------------


@api.route("/accounts", methods=["POST"])
@idempotent(secret_fields=("admin_password",))
@api.arguments(schemas.NewAccountSchema)
@api.response(201, schemas.AccountSchema)
def create_account(body):
    """Open a customer account with its first administrator (platform operator only)."""
    principal = require(Permission.CREATE_ACCOUNTS)
    with _uow() as uow:
        account, admin = handlers.create_account(
            uow, _service().credentials.passwords, request_context(principal),
            name=body["name"], admin_email=body["admin_email"], admin_name=body["admin_name"],
            admin_password=body["admin_password"], now=_now())
    return {"id": account.id, "name": account.name, "admin": admin}


@wellknown.route("/jwks.json")
@wellknown.doc(security=[], responses={"200": {
    "description": "A JSON Web Key Set (RFC 7517)",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"type": "object"}}}}}}}})
@public
def jwks():
    """The public keys that verify access tokens (JWKS, RFC 7517), rotated keys included."""
    with _uow() as uow:
        response = jsonify(_service().credentials.tokens.jwks(uow.session, _now()))
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
