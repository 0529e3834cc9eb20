"""Signed checkpoints of each log's head, and checking a log against them.

A checkpoint says: "log L had N entries and its chain ended in hash H at time T",
signed with the audit service's Ed25519 key. They are stored and published
(``audit.checkpoint.signed``, with the public key), so a verifier who kept them can
later prove that the log still reaches entry N with hash H: cutting entries off the end
and rewriting the head to match is then detected, which the chain alone cannot see.

The signed bytes are the canonical JSON (sorted keys, no spaces) of
``{"log_key", "sequence", "head_hash", "signed_at", "key_id"}`` — docs/audit.md shows
how to check one with any Ed25519 library.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import datetime

from chancery_shared.messaging.envelope import Actor, Context, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from chancery_audit.model import AuditCheckpoint, AuditLog, AuditSigningKey, as_utc

log = logging.getLogger(__name__)
SERVICE = Context(actor=Actor.service("audit"), account_id=None)

__all__ = ["CheckpointSigner", "signed_bytes", "verify_signature", "sign_due_checkpoints",
           "sign_checkpoint"]


def signed_bytes(log_key: str, sequence: int, head_hash: str, signed_at: datetime,
                 key_id: str) -> bytes:
    """What a checkpoint's signature covers."""
    return json.dumps({"log_key": log_key, "sequence": sequence, "head_hash": head_hash,
                       "signed_at": isoformat(as_utc(signed_at)), "key_id": key_id},
                      sort_keys=True, separators=(",", ":")).encode()


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


class CheckpointSigner:
    """The service's checkpoint key: created on first use, decrypted once per process."""

    def __init__(self, passphrase: bytes):
        self._passphrase = passphrase
        self._key: tuple[str, Ed25519PrivateKey] | None = None

    def key(self, session: Session) -> tuple[str, Ed25519PrivateKey]:
        if self._key is not None:
            return self._key
        row = session.execute(select(AuditSigningKey)
                              .order_by(AuditSigningKey.created_at.desc())).scalars().first()
        if row is None:
            private = Ed25519PrivateKey.generate()
            public = private.public_key()
            row = AuditSigningKey(
                id=_key_id(public),
                public_key=base64.b64encode(public.public_bytes(
                    serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode(),
                encrypted_private_pem=private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(self._passphrase)).decode())
            session.add(row)
            session.flush()
        else:
            try:
                private = serialization.load_pem_private_key(
                    row.encrypted_private_pem.encode(), password=self._passphrase)
            except (ValueError, TypeError):
                raise RuntimeError("cannot decrypt the audit checkpoint key: wrong "
                                   "CHANCERY_AUDIT_KEY_PASSPHRASE") from None
            assert isinstance(private, Ed25519PrivateKey)
        self._key = (row.id, private)
        return self._key

    def __repr__(self) -> str:
        return "<CheckpointSigner>"


def verify_signature(session: Session, checkpoint: AuditCheckpoint) -> bool:
    """True when the checkpoint's signature verifies under the key it names."""
    key = session.get(AuditSigningKey, checkpoint.key_id)
    if key is None:
        return False
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key.public_key))
    try:
        public.verify(base64.b64decode(checkpoint.signature),
                      signed_bytes(checkpoint.log_key, checkpoint.sequence,
                                   checkpoint.head_hash, checkpoint.signed_at,
                                   checkpoint.key_id))
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_checkpoint(uow: UnitOfWork, signer: CheckpointSigner, audit_log: AuditLog,
                    now: datetime) -> AuditCheckpoint:
    """Sign, store and publish the current head of ``audit_log`` (locked by the caller)."""
    key_id, private = signer.key(uow.session)
    signed_at = now.replace(microsecond=0)
    head = audit_log.head_hash or ""
    signature = base64.b64encode(private.sign(signed_bytes(
        audit_log.key, audit_log.last_sequence, head, signed_at, key_id))).decode()
    checkpoint = AuditCheckpoint(log_key=audit_log.key, sequence=audit_log.last_sequence,
                                 head_hash=head, signed_at=signed_at, key_id=key_id,
                                 signature=signature)
    uow.session.add(checkpoint)
    public_key = uow.session.get(AuditSigningKey, key_id)
    assert public_key is not None
    uow.event("audit.checkpoint.signed", SERVICE.with_account(audit_log.account_id),
              subject=("audit_log", audit_log.key),
              summary=f"audit signed a checkpoint of {audit_log.key}: "
                      f"{audit_log.last_sequence} entries",
              data={"log_key": audit_log.key, "sequence": audit_log.last_sequence,
                    "head_hash": head, "signed_at": isoformat(signed_at), "key_id": key_id,
                    "public_key": public_key.public_key, "signature": signature})
    return checkpoint


def sign_due_checkpoints(uow_factory, signer: CheckpointSigner, now: datetime) -> list[str]:
    """Checkpoint every log that grew since its last checkpoint; the logs signed."""
    with uow_factory() as uow:
        last = (select(AuditCheckpoint.log_key, func.max(AuditCheckpoint.sequence).label("seq"))
                .group_by(AuditCheckpoint.log_key).subquery())
        due = list(uow.session.execute(
            select(AuditLog.key).outerjoin(last, last.c.log_key == AuditLog.key)
            .where(AuditLog.last_sequence > func.coalesce(last.c.seq, 0))).scalars())
    signed = []
    for key in due:
        with uow_factory() as uow:
            audit_log = uow.session.execute(select(AuditLog).where(AuditLog.key == key)
                                            .with_for_update()).scalar_one()
            sign_checkpoint(uow, signer, audit_log, now or utcnow())
            uow.commit()
            signed.append(key)
    return signed
