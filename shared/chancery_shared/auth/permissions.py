"""The permission matrix of ``design/roles.md``, in one table.

A view asks for a permission, never for a list of roles: ``require(Permission.APPROVE_ORDERS)``.
Which roles hold it is decided here and nowhere else. What a permission reaches — own
orders, the units of a unit administrator, the whole account — is the object-level
scope each service applies on top (answering 404 outside it).
"""

from __future__ import annotations

import enum

from chancery_shared.auth.tokens import OPERATOR, Principal

LIMITED, FINANCE, UNIT_ADMIN, ADMIN = "limited", "finance", "unit_admin", "admin"
ACCOUNT_ROLES = frozenset({LIMITED, FINANCE, UNIT_ADMIN, ADMIN})
APPROVERS = frozenset({UNIT_ADMIN, ADMIN})
# roles whose reach ends at their units: the only ones a unit administrator manages
# (finance reads the whole account, an admin is the whole account)
UNIT_BOUND_ROLES = frozenset({LIMITED, UNIT_ADMIN})


class Permission(enum.StrEnum):
    # certificates (scope: own and assigned / units / account)
    REQUEST_CERTIFICATES = "request_certificates"
    READ_ORDERS = "read_orders"
    REISSUE_CERTIFICATES = "reissue_certificates"
    DOWNLOAD_CERTIFICATES = "download_certificates"
    APPROVE_ORDERS = "approve_orders"  # approve, reject and edit requests
    ASSIGN_CERTIFICATES = "assign_certificates"
    RENEWAL_SETTINGS = "renewal_settings"
    # domains
    MANAGE_DOMAINS = "manage_domains"  # submit, check, read
    READ_DOMAINS = "read_domains"
    VALIDATE_DOMAINS = "validate_domains"  # manual validation by CA staff
    # organizations (OV/EV subjects)
    MANAGE_ORGANIZATIONS = "manage_organizations"
    READ_ORGANIZATIONS = "read_organizations"
    VALIDATE_ORGANIZATIONS = "validate_organizations"
    # people
    MANAGE_USERS = "manage_users"  # scope: a unit administrator's units, an admin's account
    MANAGE_ACCOUNT_USERS = "manage_account_users"  # users beyond one's own units
    MANAGE_ADMINS = "manage_admins"  # create, edit, promote to or unlock administrators
    MANAGE_FINANCE_USERS = "manage_finance_users"  # the same for finance users
    MANAGE_UNITS = "manage_units"
    READ_UNITS = "read_units"
    MANAGE_OWN_API_KEYS = "manage_own_api_keys"
    CREATE_ACCOUNTS = "create_accounts"
    # money
    VIEW_FINANCE = "view_finance"
    READ_UNIT_FUNDS = "read_unit_funds"  # scope: a unit administrator's units, read only
    DEPOSIT_FUNDS = "deposit_funds"
    SETTLE_DEPOSITS = "settle_deposits"
    READ_DEPOSITS = "read_deposits"
    # records and the CA
    READ_AUDIT_LOG = "read_audit_log"
    VERIFY_AUDIT_LOG = "verify_audit_log"
    READ_ISSUERS = "read_issuers"
    OPERATE_CA = "operate_ca"


_EVERYONE = ACCOUNT_ROLES | {OPERATOR}

GRANTS: dict[Permission, frozenset[str]] = {
    Permission.REQUEST_CERTIFICATES: ACCOUNT_ROLES,
    Permission.READ_ORDERS: ACCOUNT_ROLES,
    Permission.REISSUE_CERTIFICATES: ACCOUNT_ROLES,
    Permission.DOWNLOAD_CERTIFICATES: ACCOUNT_ROLES,
    Permission.APPROVE_ORDERS: APPROVERS,
    Permission.ASSIGN_CERTIFICATES: APPROVERS,
    Permission.RENEWAL_SETTINGS: APPROVERS,
    Permission.MANAGE_DOMAINS: APPROVERS,
    Permission.READ_DOMAINS: APPROVERS | {OPERATOR},
    Permission.VALIDATE_DOMAINS: frozenset({OPERATOR}),
    Permission.MANAGE_ORGANIZATIONS: APPROVERS,
    Permission.READ_ORGANIZATIONS: APPROVERS | {OPERATOR},
    Permission.VALIDATE_ORGANIZATIONS: frozenset({OPERATOR}),
    Permission.MANAGE_USERS: APPROVERS,
    Permission.MANAGE_ACCOUNT_USERS: frozenset({ADMIN}),
    Permission.MANAGE_ADMINS: frozenset({ADMIN}),
    Permission.MANAGE_FINANCE_USERS: frozenset({ADMIN}),
    Permission.MANAGE_UNITS: frozenset({ADMIN}),
    Permission.READ_UNITS: APPROVERS,
    Permission.MANAGE_OWN_API_KEYS: _EVERYONE,
    Permission.CREATE_ACCOUNTS: frozenset({OPERATOR}),
    Permission.VIEW_FINANCE: frozenset({FINANCE, ADMIN}),
    Permission.READ_UNIT_FUNDS: frozenset({FINANCE, UNIT_ADMIN, ADMIN}),
    Permission.DEPOSIT_FUNDS: frozenset({FINANCE, ADMIN}),
    Permission.SETTLE_DEPOSITS: frozenset({OPERATOR}),
    Permission.READ_DEPOSITS: frozenset({FINANCE, ADMIN, OPERATOR}),
    Permission.READ_AUDIT_LOG: frozenset({UNIT_ADMIN, ADMIN, OPERATOR}),
    # api.md: GET /verify is for the account's administrators and the operator (a unit
    # administrator reads part of the log; the chain is the whole account's)
    Permission.VERIFY_AUDIT_LOG: frozenset({ADMIN, OPERATOR}),
    Permission.READ_ISSUERS: _EVERYONE,
    Permission.OPERATE_CA: frozenset({OPERATOR}),
}


def allows(principal: Principal, permission: Permission) -> bool:
    return principal.role in GRANTS[permission]


def roles_with(permission: Permission) -> frozenset[str]:
    return GRANTS[permission]


# --- managing people ---------------------------------------------------------------------

_ROLE_MANAGERS = {ADMIN: Permission.MANAGE_ADMINS, FINANCE: Permission.MANAGE_FINANCE_USERS}


def missing_to_manage(principal: Principal, role: str,
                      unit_ids: tuple[str, ...] | list[str] | frozenset[str] | set[str]
                      ) -> Permission | None:
    """What ``principal`` lacks to manage a user with ``role`` in ``unit_ids`` (None: nothing).

    Managing is creating, editing, deactivating or unlocking a user, and is checked for
    the user as they are and as they would be after a change. Holding ``manage_users``,
    an admin manages anyone of the account. A unit administrator manages only the users
    of the roles in ``UNIT_BOUND_ROLES`` whose units are all among the caller's, and at
    least one: a user of another unit too, or of no unit, reaches beyond the caller.
    """
    if not allows(principal, Permission.MANAGE_USERS):
        return Permission.MANAGE_USERS
    if role not in UNIT_BOUND_ROLES:
        needed = _ROLE_MANAGERS.get(role, Permission.MANAGE_ACCOUNT_USERS)
        if not allows(principal, needed):
            return needed
    if not allows(principal, Permission.MANAGE_ACCOUNT_USERS) and (
            not unit_ids or not set(unit_ids) <= set(principal.unit_ids)):
        return Permission.MANAGE_ACCOUNT_USERS
    return None


def reads_unit_funds(principal: Principal, unit_id: str) -> bool:
    """Whether ``principal`` (holding ``read_unit_funds``) sees this unit's funds: finance
    and admins every unit of their account, a unit administrator their own units."""
    return allows(principal, Permission.VIEW_FINANCE) or principal.in_unit(unit_id)
