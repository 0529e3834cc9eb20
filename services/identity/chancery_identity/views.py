"""identity's HTTP entrypoints: turn JSON into a handler call, the result into JSON."""

from __future__ import annotations

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import current_principal, public, require
from chancery_shared.service import current_service
from chancery_shared.web.app import client_ip, request_context
from flask import jsonify
from flask_smorest import Blueprint

from chancery_identity import handlers, schemas
from chancery_identity.credentials import TokenIssuer

api = Blueprint("identity", __name__, url_prefix="/api/identity/v1",
                description="Sign-in, users, business units and customer accounts")
wellknown = Blueprint("jwks", __name__, url_prefix="/api/identity/.well-known",
                      description="Public keys that verify access tokens")


def _uow():
    return current_service().uow()


@api.route("/sessions", methods=["POST"])
@api.arguments(schemas.SessionRequest)
@api.response(201, schemas.SessionResponse)
@public
def create_session(body):
    """Exchange an e-mail address and password for a short-lived access token."""
    service = current_service()
    with _uow() as uow:
        token, lifetime = handlers.login(uow, service.tokens, body["email"], body["password"],
                                         client_ip())
    return {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}


@api.route("/me")
@api.response(200, schemas.MeSchema)
def me():
    """The caller, as their access token describes them."""
    p = current_principal()
    return {"id": p.user_id, "email": p.email, "name": p.name, "role": p.role,
            "account_id": p.account_id, "unit_ids": list(p.unit_ids)}


@api.route("/users")
@api.response(200, schemas.UserPage)
def list_users():
    """Users of the caller's account (a unit administrator: users of their units)."""
    principal = require(Permission.MANAGE_USERS)
    with _uow() as uow:
        return {"items": handlers.list_users(uow, principal), "next_cursor": None}


@api.route("/users", methods=["POST"])
@api.arguments(schemas.NewUserSchema)
@api.response(201, schemas.UserSchema)
def create_user(body):
    """Add a user to the caller's account."""
    principal = require(Permission.MANAGE_USERS)
    new = handlers.NewUser(email=body["email"], name=body["name"], role=body["role"],
                           unit_ids=tuple(body["unit_ids"]), password=body["password"])
    with _uow() as uow:
        return handlers.create_user(uow, principal, request_context(principal), new)


@api.route("/users/<user_id>")
@api.response(200, schemas.UserSchema)
def get_user(user_id):
    principal = require(Permission.MANAGE_USERS)
    with _uow() as uow:
        return handlers.get_user(uow, principal, user_id)


@api.route("/units")
@api.response(200, schemas.UnitPage)
def list_units():
    """Business units: all of them for an admin, their own for a unit administrator."""
    principal = require(Permission.READ_UNITS)
    with _uow() as uow:
        return {"items": handlers.list_units(uow, principal), "next_cursor": None}


@api.route("/units", methods=["POST"])
@api.arguments(schemas.UnitSchema)
@api.response(201, schemas.UnitSchema)
def create_unit(body):
    principal = require(Permission.MANAGE_UNITS)
    with _uow() as uow:
        return handlers.create_unit(uow, principal, request_context(principal), body["name"])


@api.route("/accounts", methods=["POST"])
@api.arguments(schemas.NewAccountSchema)
@api.response(201, schemas.AccountSchema)
def create_account(body):
    """Open a customer account with its first administrator (platform operator only)."""
    principal = require(Permission.CREATE_ACCOUNTS)
    with _uow() as uow:
        account, admin = handlers.create_account(
            uow, request_context(principal), name=body["name"], admin_email=body["admin_email"],
            admin_name=body["admin_name"], admin_password=body["admin_password"])
    return {"id": account.id, "name": account.name, "admin": admin}


@wellknown.route("/jwks.json")
@public
def jwks():
    """The public keys that verify access tokens (JWKS, RFC 7517)."""
    with _uow() as uow:
        response = jsonify(TokenIssuer.jwks(uow.session))
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
