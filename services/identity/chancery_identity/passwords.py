"""Passwords: argon2id hashing and the policy a new password must meet.

The policy follows NIST SP 800-63B: length matters, composition rules do not. A new
password has 12 to 1024 characters and is refused when it is one of the commonest
passwords (the bundled ``common-passwords.txt``), a keyboard walk or alphabet/digit
sequence, a short piece repeated, made of very few different characters, or when it
contains the name part of the user's e-mail address or the account's name.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 1024
PROFILES = ("default", "fast")

# Keyboard rows and columns, alphabet and digits: a password made only of runs along
# these (forwards or backwards) is a "pattern", however long.
_WALKS = (
    "abcdefghijklmnopqrstuvwxyz", "01234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm",
    "qwertzuiop", "yxcvbnm", "azertyuiop", "qsdfghjklm", "wxcvbn",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p", "qazwsxedcrfvtgbyhnujmikolp",
    "1q2w3e4r5t6y7u8i9o0p", "q1w2e3r4t5y6u7i8o9p0", "zaq1xsw2cde3vfr4bgt5nhy6mju7",
    "1234567890qwertyuiopasdfghjklzxcvbnm", "!@#$%^&*()", "qweasdzxc", "147258369",
    "741852963", "159753", "963852741", "abc123", "a1b2c3d4e5f6g7h8i9",
)
_WALKS = _WALKS + tuple(w[::-1] for w in _WALKS)
_LONGEST_WALK = max(len(w) for w in _WALKS)
_MIN_OWN_NAME = 4  # shorter e-mail names and account names would refuse innocent passwords


def _runs(text: str) -> list[str]:
    """Split ``text`` into runs of 3+ along the walks; [] when it is not made only of them."""
    runs, i = [], 0
    while i < len(text):
        best = 0
        for j in range(min(len(text), i + _LONGEST_WALK), i, -1):
            if any(text[i:j] in walk for walk in _WALKS):
                best = j - i
                break
        if best < 3:
            return []
        runs.append(text[i:i + best])
        i += best
    return runs


_LEET = str.maketrans({"@": "a", "$": "s", "!": "i", "|": "l", "+": "t"})


def _normalise(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The bundled list, lower-cased; each entry is at least ``MIN_LENGTH`` characters."""
    text = resources.files("chancery_identity").joinpath("common-passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def policy_problem(password: str, *, email: str | None = None,
                   account_name: str | None = None) -> str | None:
    """Why ``password`` is refused, as a sentence for the user; None when acceptable."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    lowered = password.lower()
    compact = _normalise(password)
    common = common_passwords()
    if common & {lowered, compact, _normalise(lowered.translate(_LEET))}:
        return "is one of the most commonly used passwords"
    if len(set(lowered)) < 5:
        return "uses too few different characters"
    for size in range(1, len(password) // 2 + 1):
        if len(password) % size == 0 and password[:size] * (len(password) // size) == password \
                and size < MIN_LENGTH:
            return "is a short sequence repeated"
    if _runs(lowered) or (len(compact) >= len(password) * 2 // 3 and _runs(compact)):
        return "is a keyboard pattern or a sequence of letters or digits"
    local = _normalise((email or "").split("@", 1)[0])
    if len(local) >= _MIN_OWN_NAME and local in compact:
        return "must not contain your e-mail address"
    account = _normalise(account_name or "")
    if len(account) >= _MIN_OWN_NAME and account in compact:
        return "must not contain the account's name"
    return None


class Passwords:
    """argon2id hashing with the parameters of a profile.

    ``default`` is argon2-cffi's recommendation (RFC 9106 low-memory: 64 MiB, t=3),
    the only profile for real deployments. ``fast`` (1 MiB, t=1) exists so test suites
    that create many users stay quick; it is never a default, and the service warns
    when it is chosen.
    """

    def __init__(self, profile: str = "default"):
        if profile not in PROFILES:
            raise ValueError(f"unknown password hash profile {profile!r}")
        self.profile = profile
        self._hasher = (PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
                        if profile == "fast" else PasswordHasher())
        # Verifying against this keeps an unknown e-mail as slow as a wrong password.
        self._dummy = self._hasher.hash("chancery-timing-equaliser")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True only for a real hash that matches; always does one full verification."""
        try:
            matched = self._hasher.verify(password_hash or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return False
        return bool(matched) and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return False
