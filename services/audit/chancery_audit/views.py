"""audit's HTTP entrypoints: search the log as JSON pages or as one CSV download."""

from __future__ import annotations

from typing import Any

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import require
from chancery_shared.auth.tokens import Principal
from chancery_shared.service import current_service
from flask import Response
from flask_smorest import Blueprint

from chancery_audit import export, handlers, schemas

api = Blueprint("audit", __name__, url_prefix="/api/audit/v1",
                description="The audit log: who did what, when, from where, to what")

def _reader() -> Principal:
    return require(Permission.READ_AUDIT_LOG)


def _filter(args: dict[str, Any]) -> handlers.EntryFilter:
    return handlers.EntryFilter(
        user_id=args.get("user_id"), start=args.get("start"), end=args.get("end"),
        action=args.get("action"), text=args.get("q"), target=args.get("target"),
        account_id=args.get("account_id"))


@api.route("/entries")
@api.arguments(schemas.EntrySearchArgs, location="query")
@api.response(200, schemas.EntryPage)
def list_entries(args: dict[str, Any]) -> dict[str, Any]:
    """Entries the caller may read, newest first, one page at a time.

    Pass the `next_cursor` of a page as `cursor` for the next one; it is null on the
    last page. Administrators read their account's entries, unit administrators the
    entries about their units, platform operators every account's (`account_id` narrows
    it to one); other roles get 403.
    """
    principal = _reader()
    with current_service().uow() as uow:
        page = handlers.search(uow, principal, _filter(args), limit=args["limit"],
                               cursor=args.get("cursor"))
    return {"items": page.entries, "next_cursor": page.next_cursor}


@api.route("/entries.csv")
@api.arguments(schemas.EntryFilterArgs, location="query")
@api.doc(responses={"200": {
    "description": "Every matching entry, newest first, after a header row",
    "content": {"text/csv": {"schema": {"type": "string"}}}}})
def download_entries(args: dict[str, Any]) -> Response:
    """The same search as `GET /entries`, every matching entry as one CSV file.

    Cells a spreadsheet would run as a formula are prefixed with an apostrophe.
    """
    principal = _reader()
    service = current_service()
    entries = handlers.export(service.uow, principal, _filter(args))
    return Response(export.lines(entries), mimetype="text/csv", headers={
        "Content-Disposition": 'attachment; filename="audit-entries.csv"'})


@api.route("/entries/<entry_id>")
@api.response(200, schemas.EntryDetailSchema)
def get_entry(entry_id: str) -> Any:
    """One entry with the units it concerns and the whole message it was recorded from."""
    principal = _reader()
    with current_service().uow() as uow:
        return handlers.get_entry(uow, principal, entry_id)


@api.route("/verify")
@api.arguments(schemas.VerifyArgs, location="query")
@api.response(200, schemas.VerificationSchema)
def verify(args: dict[str, Any]) -> dict[str, Any]:
    """Check the hash chain and the signed checkpoints of the caller's account log.

    `ok` is false when an entry was modified, deleted, inserted or reordered, or the log
    was cut short; `first_bad` names the first such entry by its position. An account
    administrator checks the account's log; the platform operator every log, or one
    account's with `account_id`.
    """
    principal = require(Permission.VERIFY_AUDIT_LOG)
    with current_service().uow() as uow:
        return handlers.verify(uow, principal, args.get("account_id"))
