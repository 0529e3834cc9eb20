"""Chancery orders: the registration authority that decides whether a certificate may be issued."""
