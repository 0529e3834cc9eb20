"""Revoked access: what every process refuses before an access token expires.

Access tokens are self-contained, so a service would otherwise trust one until it
expires. identity announces on the bus what ends access; every process of every service
hears it (a :class:`~chancery_shared.messaging.broadcast.BroadcastListener` of its own)
and keeps it here, in memory, where token verification looks first:

- ``identity.session.ended`` (sign-out, refresh-token reuse, password change,
  deactivation): every token of that sign-in session (claim ``sid``) is refused;
- ``identity.user.deactivated``: every token of the user is refused;
- ``identity.user.updated`` changing the role, the units or the active state: the tokens
  issued before the change are refused (claim ``iat``), and so is any token whose
  ``role`` or ``units`` are not the user's new ones (a token signed in the instant of
  the change, from the user as they were).

An entry is kept as long as a token it concerns can live (``MAX_ACCESS_TOKEN_SECONDS``
plus a margin), then forgotten: the tokens it refused have expired by then.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from chancery_shared.messaging.envelope import Envelope

#: The longest access-token lifetime identity may be configured with.
MAX_ACCESS_TOKEN_SECONDS = 3600
#: How long an entry is kept after it was heard: a token it concerns has expired by then
#: (the longest lifetime, the verifiers' clock leeway, and a margin for delivery).
KEEP_SECONDS = MAX_ACCESS_TOKEN_SECONDS + 120

SESSION_ENDED = "identity.session.ended"
USER_UPDATED = "identity.user.updated"
USER_DEACTIVATED = "identity.user.deactivated"
ROUTING_KEYS = (SESSION_ENDED, USER_UPDATED, USER_DEACTIVATED)
#: The changes of ``identity.user.updated`` that change what a token may do.
ACCESS_FIELDS = frozenset({"role", "unit_ids", "active"})


@dataclasses.dataclass(frozen=True)
class UserAccess:
    """A user's access as of their last change: tokens from before it are refused."""

    changed_at: float  # epoch seconds
    active: bool
    role: str
    unit_ids: frozenset[str]


class Revocations:
    """The in-memory deny list of one process; safe to use from any thread."""

    def __init__(self, keep_seconds: float = KEEP_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._keep = keep_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, float] = {}  # session id -> forget at (clock)
        self._users: dict[str, tuple[UserAccess, float]] = {}
        self._next_prune = 0.0

    # --- what is heard --------------------------------------------------------------

    def end_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions[session_id] = self._clock() + self._keep
            self._prune_locked()

    def change_user(self, user_id: str, access: UserAccess) -> None:
        """Record a change of the user's access (the latest change wins, whatever order
        the events arrive in)."""
        with self._lock:
            known = self._users.get(user_id)
            if known is None or access.changed_at >= known[0].changed_at:
                self._users[user_id] = (access, self._clock() + self._keep)
            self._prune_locked()

    def apply(self, event: Envelope) -> bool:
        """Take in one of identity's events; True when it revoked something."""
        data: Mapping[str, Any] = event.data or {}
        if event.type == SESSION_ENDED:
            if not data.get("session_id"):
                return False
            self.end_session(str(data["session_id"]))
            return True
        if event.type not in (USER_UPDATED, USER_DEACTIVATED) or not data.get("user_id"):
            return False
        if event.type == USER_UPDATED and not ACCESS_FIELDS & set(data.get("changes") or {}):
            return False  # a new name: the tokens out there may still do what they did
        active = event.type != USER_DEACTIVATED and bool(data.get("active", True))
        changed_at = datetime.fromisoformat(event.occurred_at.replace("Z", "+00:00"))
        self.change_user(str(data["user_id"]), UserAccess(
            changed_at=changed_at.timestamp(), active=active, role=str(data.get("role", "")),
            unit_ids=frozenset(data.get("unit_ids") or ())))
        return True

    # --- what is asked --------------------------------------------------------------

    def refusal(self, claims: Mapping[str, Any]) -> str | None:
        """Why a token with these (verified) claims is revoked, or None when it is not."""
        with self._lock:
            now = self._clock()
            entry = self._users.get(str(claims.get("sub")))
            access = entry[0] if entry is not None and entry[1] > now else None
            session_id = claims.get("sid")
            session_ended = bool(session_id) and self._sessions.get(session_id, 0) > now
        if access is not None and not access.active:
            return "the user has been deactivated"
        if session_ended:
            return "the sign-in session of this token has ended"
        if access is None:
            return None
            return "the user has been deactivated"
        # ``iat`` is in whole seconds: only a token issued in an earlier second is surely
        # older than the change; one of the same second is judged by its claims.
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int | float) or issued_at < math.floor(access.changed_at):
            return "the user's role or units changed after this token was issued"
        if (claims.get("role") != access.role
                or frozenset(claims.get("units") or ()) != access.unit_ids):
            return "the user's role or units changed after this token was issued"
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions) + len(self._users)

    def _prune_locked(self) -> None:
        now = self._clock()
        if now < self._next_prune:
            return
        self._next_prune = now + 60
        self._sessions = {sid: until for sid, until in self._sessions.items() if until > now}
        self._users = {uid: entry for uid, entry in self._users.items() if entry[1] > now}
