"""Password hashing (argon2id) and access-token signing (EdDSA JWTs, JWKS)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from chancery_shared.messaging.envelope import utcnow
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from chancery_identity.model import SigningKey, User

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verifying against this keeps an unknown e-mail as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("chancery-timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class TokenIssuer:
    """Signs access tokens with the newest active key and publishes the public keys."""

    def __init__(self, *, issuer: str, audience: str, lifetime: timedelta, passphrase: bytes):
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self._passphrase = passphrase
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _current_key(self, session: Session) -> tuple[str, Ed25519PrivateKey]:
        row = session.execute(select(SigningKey).where(SigningKey.retired_at.is_(None))
                              .order_by(SigningKey.created_at.desc())).scalars().first()
        if row is None:
            row = self.create_key(session)
        with self._lock:
            if row.kid not in self._cache:
                self._cache[row.kid] = serialization.load_pem_private_key(
                    row.private_key_pem.encode(), password=self._passphrase)
            return row.kid, self._cache[row.kid]

    def create_key(self, session: Session) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        kid = uuid.uuid4().hex[:16]
        public_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
        public_jwk.update({"kid": kid, "use": "sig", "alg": "EdDSA"})
        row = SigningKey(
            kid=kid,
            private_key_pem=private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(self._passphrase)).decode(),
            public_jwk=json.dumps(public_jwk),
        )
        session.add(row)
        session.flush()
        return row

    def issue(self, session: Session, user: User) -> tuple[str, int]:
        kid, key = self._current_key(session)
        now = utcnow()
        claims = {
            "iss": self.issuer, "aud": self.audience, "sub": user.id, "typ": "access",
            "iat": now, "nbf": now, "exp": now + self.lifetime, "jti": uuid.uuid4().hex,
            "email": user.email, "name": user.name, "role": user.role, "acct": user.account_id,
            "units": user.unit_ids,
        }
        token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
        return token, int(self.lifetime.total_seconds())

    @staticmethod
    def jwks(session: Session) -> dict[str, Any]:
        rows = session.execute(select(SigningKey)).scalars().all()
        return {"keys": [json.loads(row.public_jwk) for row in rows if row.retired_at is None]}
