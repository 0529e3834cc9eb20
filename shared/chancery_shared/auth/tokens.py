"""Access-token verification from identity's JWKS.

Only identity signs tokens (EdDSA). Every service verifies them with identity's
public keys, fetched once and cached; a token whose key id is unknown triggers one
refetch (keys rotate), rate-limited so garbage tokens cannot hammer identity.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import jwt

log = logging.getLogger(__name__)

ROLES = ("limited", "finance", "unit_admin", "admin")
OPERATOR = "operator"


@dataclasses.dataclass(frozen=True)
class Principal:
    """The caller of a request, as the access token describes them."""

    user_id: str
    email: str
    name: str
    role: str  # one of ROLES, or "operator" for the platform's own staff
    account_id: str | None
    unit_ids: tuple[str, ...] = ()
    token_id: str | None = None
    # the sign-in session the token belongs to (claim ``sid``); None for API-key tokens
    session_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def in_unit(self, unit_id: str | None) -> bool:
        return unit_id is not None and unit_id in self.unit_ids

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        return cls(user_id=str(claims["sub"]), email=claims.get("email", ""),
                   name=claims.get("name", ""), role=claims["role"],
                   account_id=claims.get("acct"), unit_ids=tuple(claims.get("units") or ()),
                   token_id=claims.get("jti"), session_id=claims.get("sid"))


class InvalidToken(Exception):
    """The token is not acceptable; the message is safe to show, ``code`` names why."""

    def __init__(self, message: str, code: str = "unauthenticated"):
        super().__init__(message)
        self.code = code


class RevocationCheck(Protocol):
    def refusal(self, claims: dict[str, Any]) -> str | None: ...


class TokenVerifier:
    """Verifies access tokens: signature, claims, and — with ``revocations`` — that
    identity has not revoked them since (``chancery_shared.auth.revocations``)."""

    def __init__(self, fetch_jwks: Callable[[], dict[str, Any]], *, issuer: str, audience: str,
                 leeway_seconds: int = 5, refetch_interval: float = 10.0,
                 revocations: RevocationCheck | None = None):
        self.revocations = revocations
        self._fetch = fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._refetch_interval = refetch_interval
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def _refresh(self, force: bool) -> None:
        with self._lock:
            now = time.monotonic()
            if self._keys and (not force or now - self._fetched_at < self._refetch_interval):
                return
            try:
                document = self._fetch()
                keys = {}
                for jwk in document.get("keys", []):
                    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
                        keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="EdDSA").key
                self._keys = keys
            except Exception:  # identity unreachable: keep what we had
                log.warning("could not fetch the JWKS", exc_info=True)
            self._fetched_at = now

    def _key_for(self, kid: str) -> Any:
        if kid not in self._keys:
            self._refresh(force=True)
        if kid not in self._keys:
            raise InvalidToken("unknown signing key")
        return self._keys[kid]

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if header.get("alg") != "EdDSA":
            raise InvalidToken("unsupported token algorithm")
        key = self._key_for(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token, key, algorithms=["EdDSA"], audience=self._audience, issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "nbf", "sub", "iss", "aud", "role"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("invalid token") from exc
        if claims.get("typ") not in (None, "access"):
            raise InvalidToken("not an access token")
        if self.revocations is not None:
            reason = self.revocations.refusal(claims)
            if reason is not None:
                raise InvalidToken(f"the access token has been revoked: {reason}; sign in "
                                   "again", code="token_revoked")
        try:
            return Principal.from_claims(claims)
        except (KeyError, TypeError) as exc:
            raise InvalidToken("invalid token claims") from exc


def http_jwks_fetcher(url: str, timeout: float = 5.0) -> Callable[[], dict[str, Any]]:
    import requests

    def fetch() -> dict[str, Any]:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        return response.json()

    return fetch
