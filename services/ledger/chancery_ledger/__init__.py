"""Chancery ledger: the only service that moves money."""
