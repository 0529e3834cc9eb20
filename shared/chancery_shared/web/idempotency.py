"""``Idempotency-Key`` for POSTs that create something (api.md): a retried deposit must
never charge a card twice.

A key is claimed in its own short transaction before the work starts (a concurrent
twin gets 409), the first successful response is stored in the same transaction as
the work, and an attempt that failed releases its claim so the client may try again.
Request fingerprints never contain a card number or CVC.

An attempt that failed because the database itself went away cannot release its claim
(the release needs the database too). The ``@idempotent`` decorator therefore lets a
retry take over a claim that has had no response for ``CLAIM_LEASE``: without that the
key answered 409 "in progress" forever after a PostgreSQL restart (found by the fault
runs, tests/chaos). Direct callers (the ledger's card deposits, where an external
charge may have happened) keep the claim until an operator looks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from chancery_shared.messaging.envelope import utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import Conflict, InvalidField

HEADER = "Idempotency-Key"
CLAIM_LEASE = timedelta(seconds=60)
"""How long a claim without a response counts as in progress for ``@idempotent``: as
long as the gateway waits for an answer (nginx ``proxy_read_timeout 60s``), after which
the client has had its 504 and the attempt is as good as dead."""
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def fingerprint(payload: Any) -> str:
    """A stable hash of a request body (callers strip secrets before)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Claim:
    principal: str
    key: str


class IdempotencyKeys:
    def __init__(self, uow_factory: Callable[[], UnitOfWork], table: Table):
        self._uow = uow_factory
        self._table = table

    def begin(self, principal: str, key: str, method: str, path: str,
              request_hash: str, stale_after: timedelta | None = None) -> Claim | Response:
        """Claim ``key`` for this request, or the stored response of its first success.

        With ``stale_after``, a claim that has had no response for that long belongs to
        an attempt that died without releasing it: this request takes it over.
        """
        if not _KEY.match(key):
            raise InvalidField(HEADER, "must be 1 to 255 printable ASCII characters")
        t = self._table
        with self._uow() as uow:
            row = uow.session.execute(select(t).where(t.c.principal == principal,
                                                      t.c.key == key)).first()
            if row is None:
                try:
                    uow.session.execute(insert(t).values(
                        principal=principal, key=key, method=method, path=path,
                        request_hash=request_hash, created_at=utcnow()))
                    uow.commit()
                    return Claim(principal, key)
                except IntegrityError:
                    raise Conflict("a request with this Idempotency-Key is in progress",
                                   code="idempotency_key_in_use") from None
        if (row.method, row.path, row.request_hash) != (method, path, request_hash):
            raise InvalidField(HEADER, "was already used for a different request",
                               code="idempotency_key_reused")
        if row.status_code is None:
            if stale_after is not None and self._take_over(row, stale_after):
                return Claim(principal, key)
            raise Conflict("a request with this Idempotency-Key is in progress",
                           code="idempotency_key_in_use")
        response = Response(row.response_body, status=row.status_code,
                            mimetype="application/json")
        response.headers["Idempotent-Replayed"] = "true"
        return response

    def _take_over(self, row: Any, stale_after: timedelta) -> bool:
        """Renew a stale claim for the caller; only one of concurrent retries wins."""
        claimed_at = row.created_at if row.created_at.tzinfo else row.created_at.replace(
            tzinfo=UTC)
        if datetime.now(UTC) - claimed_at < stale_after:
            return False
        t = self._table
        with self._uow() as uow:
            renewed = uow.session.execute(
                update(t).where(t.c.principal == row.principal, t.c.key == row.key,
                                t.c.status_code.is_(None), t.c.created_at == row.created_at)
                .values(created_at=utcnow()))
            uow.commit()
        return renewed.rowcount == 1

    def complete(self, session: Session, claim: Claim, status: int, body: Any) -> None:
        """Store the response in the caller's transaction (it commits with the work)."""
        t = self._table
        session.execute(update(t).where(t.c.principal == claim.principal, t.c.key == claim.key)
                        .values(status_code=status, response_body=json.dumps(body)))

    def abandon(self, claim: Claim) -> None:
        """The attempt failed: free the key (only if no response was stored)."""
        t = self._table
        with self._uow() as uow:
            uow.session.execute(delete(t).where(t.c.principal == claim.principal,
                                                t.c.key == claim.key,
                                                t.c.status_code.is_(None)))
            uow.commit()


def idempotent(view: Callable[..., Any] | None = None, *,
               secret_fields: tuple[str, ...] = ()) -> Any:
    """``Idempotency-Key`` for a view that creates something (api.md).

    Put it between ``@blueprint.route`` and ``@blueprint.arguments``, so it sees the final
    response. A repeat with the same key and body returns the first response (with
    ``Idempotent-Replayed: true``); the same key with another body is 422; a concurrent
    twin is 409. ``secret_fields`` (passwords) are left out of the stored fingerprint.
    The response is stored right after the work committed, in its own transaction;
    views that must store it atomically with the work (a card payment) use
    :class:`IdempotencyKeys` directly, as the ledger does. Never use it on a view whose
    response holds a secret (a new API key): the stored response would keep it.
    """
    import functools

    from flask import make_response, request

    from chancery_shared.auth.policy import current_principal
    from chancery_shared.service import current_service

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = request.headers.get(HEADER)
            if key is None:
                return func(*args, **kwargs)
            keys: IdempotencyKeys = current_service().idempotency
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                body = {k: v for k, v in body.items() if k not in secret_fields}
            started = keys.begin(current_principal().user_id, key, request.method,
                                 request.path, fingerprint(body), stale_after=CLAIM_LEASE)
            if isinstance(started, Response):
                return started
            try:
                response = make_response(func(*args, **kwargs))
            except BaseException:
                keys.abandon(started)
                raise
            if response.status_code >= 400:  # nothing was created: the key may be reused
                keys.abandon(started)
                return response
            with keys._uow() as uow:
                keys.complete(uow.session, started, response.status_code,
                              response.get_json())
                uow.commit()
            return response

        return wrapper

    return decorate(view) if view is not None else decorate
