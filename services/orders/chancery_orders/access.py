"""Who may see and act on an order (design/roles.md), as predicates and query filters.

Seeing and acting are separate: an order the caller may not see is answered with 404
(never leak another account's or unit's ids); an order they may see but not act on is
answered with 403 naming the permission.
"""

from __future__ import annotations

from chancery_shared.auth.tokens import Principal
from sqlalchemy import ColumnElement, false, or_, select

from chancery_orders.model import Order, OrderAssignee


def _in_account(principal: Principal, order: Order) -> bool:
    return principal.account_id is not None and order.account_id == principal.account_id


def _own_or_assigned(principal: Principal, order: Order) -> bool:
    return (order.requester_id == principal.user_id
            or principal.user_id in order.assignee_ids)


def can_see(principal: Principal, order: Order) -> bool:
    """limited: own and assigned; finance and admin: the whole account; unit_admin: their
    units, own and assigned."""
    if not _in_account(principal, order):
        return False
    if principal.role in ("admin", "finance"):
        return True
    if _own_or_assigned(principal, order):
        return True
    return principal.role == "unit_admin" and principal.in_unit(order.unit_id)


def can_download(principal: Principal, order: Order) -> bool:
    """roles.md: finance reads the whole account but downloads only its own (and assigned)
    certificates; everyone else downloads what they can see."""
    if not can_see(principal, order):
        return False
    return principal.role != "finance" or _own_or_assigned(principal, order)


def can_reissue(principal: Principal, order: Order) -> bool:
    """Reissue, revoke or renew: the requester, an assignee, or an approver of the order."""
    return _in_account(principal, order) and (_own_or_assigned(principal, order)
                                              or can_approve(principal, order))


def can_approve(principal: Principal, order: Order) -> bool:
    """admin: any order of the account; unit_admin: orders of one of their units (the
    order's unit decides, not the requester's current units)."""
    if not _in_account(principal, order):
        return False
    if principal.role == "admin":
        return True
    return principal.role == "unit_admin" and principal.in_unit(order.unit_id)


def may_self_approve(principal: Principal, unit_id: str | None) -> bool:
    """Whether an order the caller places for ``unit_id`` needs nobody else's approval."""
    return principal.role == "admin" or (principal.role == "unit_admin"
                                         and principal.in_unit(unit_id))


def can_assign(principal: Principal, order: Order) -> bool:
    """Who may give others access to an order: its approvers (admin; unit_admin of its unit)."""
    return can_approve(principal, order)


def can_cancel(principal: Principal, order: Order) -> bool:
    return _in_account(principal, order) and (order.requester_id == principal.user_id
                                              or can_approve(principal, order))


def visible_orders(principal: Principal) -> ColumnElement[bool]:
    """The SQL condition matching exactly the orders :func:`can_see` allows."""
    if principal.account_id is None:
        return false()
    in_account = Order.account_id == principal.account_id
    if principal.role in ("admin", "finance"):
        return in_account
    own_or_assigned = or_(Order.requester_id == principal.user_id,
                          Order.id.in_(select(OrderAssignee.order_id).where(
                              OrderAssignee.user_id == principal.user_id)))
    if principal.role == "unit_admin" and principal.unit_ids:
        return in_account & or_(own_or_assigned, Order.unit_id.in_(principal.unit_ids))
    return in_account & own_or_assigned
