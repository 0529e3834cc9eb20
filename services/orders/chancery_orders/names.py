"""Host names as a publicly trusted CA must treat them: moved to
:mod:`chancery_shared.hostnames` (ca-signer checks its public base URL with the same
rules). Re-exported here so that orders' imports keep working unchanged."""

from __future__ import annotations

from chancery_shared.hostnames import (
    MAX_NAME_LENGTH,
    RESERVED_TLDS,
    NameRejected,
    base_of,
    is_wildcard,
    normalise,
    registrable_domain,
)

__all__ = ["MAX_NAME_LENGTH", "RESERVED_TLDS", "NameRejected", "base_of", "is_wildcard",
           "normalise", "registrable_domain"]
