"""Access-token signing (EdDSA JWTs, rotating keys, JWKS), refresh tokens and API keys."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from chancery_identity.model import SigningKey, User

# A key stays in the JWKS this long after the last token it signed expired: verifiers
# accept a few seconds of clock skew, and caches may hold the document for a minute.
JWKS_GRACE = timedelta(seconds=60)

REFRESH_TOKEN_PREFIX = "chr_"
API_KEY_PATTERN = re.compile(r"^chy_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


def secret_hash(secret: str) -> str:
    """SHA-256 of a high-entropy secret (refresh token, API key), hex.

    A fast hash is right here, unlike for passwords: these secrets carry 256 random
    bits, so nobody can guess them offline from a stolen hash however fast the hash
    is, and a slow hash would only make every request slower. The lookup is by hash,
    so no secret-dependent comparison happens in Python.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def new_refresh_token() -> str:
    """An opaque refresh token: 256 random bits, with a prefix secret scanners recognise."""
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str]:
    """``(prefix, key)``: ``chy_<8 hex>_<43 base64url>`` — 256 random bits after the prefix."""
    prefix = secrets.token_hex(4)
    return prefix, f"chy_{prefix}_{secrets.token_urlsafe(32)}"


def looks_like_api_key(key: str) -> bool:
    return API_KEY_PATTERN.match(key) is not None


class TokenIssuer:
    """Signs access tokens with the key in force and publishes the keys that verify them.

    Rotation without downtime: a new key is published ``prepublish`` before it starts
    signing, the old one stops signing at that moment and is published on until every
    token it signed has expired (``retired_at + lifetime``), then dropped from the JWKS
    and deleted.
    """

    def __init__(self, *, issuer: str, audience: str, lifetime: timedelta, passphrase: bytes,
                 rotate_after: timedelta = timedelta(days=30),
                 prepublish: timedelta = timedelta(minutes=5)):
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.rotate_after = rotate_after
        self.prepublish = prepublish
        self._passphrase = passphrase
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- keys -----------------------------------------------------------------------

    def signing_key(self, session: Session, now: datetime) -> SigningKey:
        """The key in force at ``now``; the very first key is made on first use."""
        row = session.execute(
            select(SigningKey).where(SigningKey.activates_at <= now)
            .where((SigningKey.retired_at.is_(None)) | (SigningKey.retired_at > now))
            .order_by(SigningKey.activates_at.desc(), SigningKey.created_at.desc())
        ).scalars().first()
        if row is None:
            row = self.create_key(session, now, activates_at=now)
        return row

    def rotation_due(self, key: SigningKey, now: datetime) -> bool:
        """Old enough to be replaced, and no successor scheduled yet."""
        return key.retired_at is None and key.activates_at + self.rotate_after <= now

    def rotate(self, session: Session, now: datetime, *, immediately: bool = False,
               force: bool = False) -> tuple[SigningKey, SigningKey] | None:
        """Schedule a new key; ``(new, previous)``, or None when another worker just did.

        Every key without a successor is locked (``FOR UPDATE``) and re-read, so two
        workers noticing the same due rotation create one new key, not two (``force``,
        a rotation by hand, makes one whatever is scheduled).
        """
        current = self.signing_key(session, now)
        unretired = session.execute(select(SigningKey).where(SigningKey.retired_at.is_(None))
                                    .with_for_update()).scalars().all()
        if not force and current.kid not in {k.kid for k in unretired}:
            return None  # a successor was scheduled meanwhile
        activates_at = now if immediately else now + self.prepublish
        new = self.create_key(session, now, activates_at=activates_at)
        for key in unretired:
            key.retired_at = activates_at
        self.prune(session, now)
        return new, current

    def create_key(self, session: Session, now: datetime, *, activates_at: datetime) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        kid = uuid.uuid4().hex[:16]
        public_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
        public_jwk.update({"kid": kid, "use": "sig", "alg": "EdDSA"})
        row = SigningKey(
            kid=kid,
            private_key_pem=private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(self._passphrase)).decode(),
            public_jwk=json.dumps(public_jwk), created_at=now, activates_at=activates_at,
        )
        session.add(row)
        session.flush()
        return row

    def prune(self, session: Session, now: datetime) -> int:
        """Delete keys no token still alive can have been signed with."""
        cutoff = now - self.lifetime - JWKS_GRACE
        result = session.execute(delete(SigningKey).where(SigningKey.retired_at.is_not(None),
                                                          SigningKey.retired_at <= cutoff))
        return result.rowcount or 0

    def jwks(self, session: Session, now: datetime) -> dict[str, Any]:
        rows = session.execute(select(SigningKey).order_by(SigningKey.activates_at)).scalars()
        return {"keys": [json.loads(row.public_jwk) for row in rows
                         if row.published_at(now, self.lifetime + JWKS_GRACE)]}

    def _private_key(self, row: SigningKey) -> Ed25519PrivateKey:
        with self._lock:
            if row.kid not in self._cache:
                self._cache[row.kid] = serialization.load_pem_private_key(
                    row.private_key_pem.encode(), password=self._passphrase)
            return self._cache[row.kid]

    # --- tokens -----------------------------------------------------------------------

    def sign(self, key: SigningKey, user: User, now: datetime,
             session_id: str | None) -> tuple[str, int]:
        """An access token for ``user`` as they are now in the database."""
        claims = {
            "iss": self.issuer, "aud": self.audience, "sub": user.id, "typ": "access",
            "iat": now, "nbf": now, "exp": now + self.lifetime, "jti": uuid.uuid4().hex,
            "email": user.email, "name": user.name, "role": user.role, "acct": user.account_id,
            "units": user.unit_ids, "sid": session_id,
        }
        token = jwt.encode(claims, self._private_key(key), algorithm="EdDSA",
                           headers={"kid": key.kid})
        return token, int(self.lifetime.total_seconds())
