"""Pure PKI core of ca-signer (no Flask, database or messaging).

Modules: ``keys`` (CaKey, EncryptedPemKey), ``urls`` (issuer_id, public CA URLs),
``hierarchy`` (root and issuing CA certificates), ``csr`` (CSR parsing and key policy),
``validity`` (BR validity and validation-reuse schedules), ``profiles`` (subscriber TLS
profile), ``lint`` (pkilint pre-issuance linting) and ``issuance`` (the entry point).
"""
