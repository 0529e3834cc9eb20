"""Which subscriber keys a certificate may certify: the one home of the key policy.

orders applies it when a request is placed (the requester learns at once, and nothing
is charged); ca-signer applies it again right before it signs, as the last line. Both
call :func:`check_subscriber_key`, so the two can never disagree.

The policy (Baseline Requirements 6.1.1.3, 6.1.5, 6.1.6; docs/validation.md):

* RSA: modulus of at least 2048 bits and a multiple of 8; public exponent odd and in
  [2^16+1, 2^256-1] (the BR's MUST is "odd and >= 3"; the range is its SHOULD, which
  pkilint warns about, so we refuse outside it); an even modulus or one with a prime
  factor below 752 (pkilint's bound) is weak; not ROCA-vulnerable (CVE-2017-15361);
  not factorable by Fermat's method within 100 rounds (primes too close together).
* ECDSA: P-256, P-384 and P-521 (cryptography refuses points off the curve on load).
* Nothing else (Ed25519, Ed448, DSA, other curves).
* No key the CA knows to be compromised: the caller passes ``is_key_blocked``, a test
  over the key's SPKI SHA-256 against its blocklist (keys revoked for keyCompromise).
* No RSA key from Debian's broken OpenSSL of 2006-2008 (CVE-2008-0166), when the
  operator has installed the fingerprint lists (:class:`DebianWeakKeys`,
  ``CHANCERY_WEAK_KEY_LISTS``): no package registry ships them, so Chancery reads the
  format of Debian's ``openssl-blacklist`` package from a directory the operator fills.

A refusal is a :class:`KeyRefused` naming its ``rule``. Rules in :data:`WEAK_KEY_RULES`
mean "this key must never be certified" (the API answers ``key_blocked``); the others
mean "this kind of key is not offered".
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["KeyRefused", "WEAK_KEY_RULES", "ALLOWED_CURVES", "check_subscriber_key",
           "describe_public_key", "spki_sha256", "FERMAT_ROUNDS", "DebianWeakKeys",
           "debian_fingerprint", "load_debian_weak_keys"]

MIN_RSA_BITS = 2048
ALLOWED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
#: BR 6.1.1.3(4): at least 100 rounds of Fermat's method.
FERMAT_ROUNDS = 100
#: Rules that say the key itself is bad or known compromised.
WEAK_KEY_RULES = frozenset({"rsa_exponent", "rsa_even_modulus", "rsa_small_factor",
                            "rsa_roca", "rsa_fermat", "compromised", "debian_weak"})


class KeyRefused(ValueError):
    """A key this CA will not certify; ``reason`` is safe to show, ``rule`` names the
    rule that refused it."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason

    @property
    def weak(self) -> bool:
        return self.rule in WEAK_KEY_RULES


def spki_sha256(public_key: object) -> str:
    """Hex SHA-256 of a public key's DER SubjectPublicKeyInfo: how blocklists name a key."""
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def describe_public_key(public_key: object) -> str:
    """"RSA 2048", "ECDSA P-256", or the algorithm's name for keys we do not take."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ECDSA {ALLOWED_CURVES.get(public_key.curve.name, public_key.curve.name)}"
    return type(public_key).__name__.replace("PublicKey", "").lstrip("_") or "unknown"


# --- Debian's weak keys (CVE-2008-0166) ----------------------------------------------

_LIST_NAME = re.compile(r"RSA-(\d+)$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{20}$")


def debian_fingerprint(modulus: int) -> str:
    """How Debian's ``openssl-vulnkey`` names an RSA key: the last 20 hex digits of the
    SHA-1 of ``Modulus=<HEX>\\n`` (the modulus in upper-case hex, as ``openssl rsa
    -modulus`` prints it)."""
    text = f"Modulus={modulus:X}\n".encode("ascii")
    return hashlib.sha1(text).hexdigest()[20:]  # noqa: S324 - the list's own format


@dataclasses.dataclass(frozen=True)
class DebianWeakKeys:
    """The fingerprint lists by key size, as loaded from ``blacklist.RSA-<bits>`` files."""

    by_bits: Mapping[int, frozenset[str]]
    folder: str = ""

    def __contains__(self, modulus: int) -> bool:
        listed = self.by_bits.get(modulus.bit_length())
        return listed is not None and debian_fingerprint(modulus) in listed

    def describe(self) -> str:
        sizes = ", ".join(f"RSA-{bits}: {len(prints)}" for bits, prints
                          in sorted(self.by_bits.items()))
        return f"{self.folder} ({sizes})"


@functools.lru_cache(maxsize=8)
def load_debian_weak_keys(folder: str) -> DebianWeakKeys | None:
    """Read every ``*RSA-<bits>`` file of ``folder`` (Debian's ``openssl-blacklist``
    format: ``#`` comments, then one 20-hex-digit fingerprint per line); None for an
    empty setting. A missing folder, no list in it, or a line of another shape is a
    ValueError (the setting is refused at start-up)."""
    if not folder.strip():
        return None
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"{folder} is not a directory")
    by_bits: dict[int, set[str]] = {}
    for file in sorted(path.iterdir()):
        match = _LIST_NAME.search(file.name)
        if match is None or not file.is_file():
            continue
        prints = by_bits.setdefault(int(match.group(1)), set())
        for number, line in enumerate(file.read_text("ascii").splitlines(), start=1):
            line = line.strip().lower()
            if not line or line.startswith("#"):
                continue
            if not _FINGERPRINT.match(line):
                raise ValueError(f"{file.name} line {number} is not a fingerprint of 20 "
                                 "hex digits (the openssl-blacklist format)")
            prints.add(line)
    if not by_bits:
        raise ValueError(f"{folder} holds no blacklist.RSA-<bits> file")
    return DebianWeakKeys({bits: frozenset(p) for bits, p in by_bits.items()}, folder)


# --- RSA weaknesses -------------------------------------------------------------------

_SMALL_PRIMES = [p for p in range(3, 752) if all(p % d for d in range(2, math.isqrt(p) + 1))]

# ROCA: Infineon's primes are p = k*M + (65537^a mod M), so for each small prime r
# dividing M, n mod r lies in the subgroup that 65537 generates mod r. A random modulus
# is in all of them with negligible probability (the published detector's test).
_ROCA_PRIMES = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71,
                73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151,
                157, 163, 167)


def _subgroup_mask(generator: int, prime: int) -> int:
    mask, value = 0, 1
    while True:
        mask |= 1 << value
        value = (value * generator) % prime
        if value == 1:
            return mask


_ROCA_MASKS = tuple((p, _subgroup_mask(65537 % p, p)) for p in _ROCA_PRIMES)


def is_roca_vulnerable(modulus: int) -> bool:
    return all((mask >> (modulus % p)) & 1 for p, mask in _ROCA_MASKS)


def fermat_factorable(modulus: int, rounds: int = FERMAT_ROUNDS) -> bool:
    """True when Fermat's method factors ``modulus`` within ``rounds`` steps."""
    a = math.isqrt(modulus)
    if a * a < modulus:
        a += 1
    for _ in range(rounds):
        b2 = a * a - modulus
        b = math.isqrt(b2)
        if b * b == b2:
            return True
        a += 1
    return False


def _check_rsa(public_key: rsa.RSAPublicKey, debian: DebianWeakKeys | None) -> None:
    numbers = public_key.public_numbers()
    n, e = numbers.n, numbers.e
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise KeyRefused("rsa_size", f"the RSA key is {bits} bits; at least {MIN_RSA_BITS} "
                                     "are required")
    if bits % 8:
        raise KeyRefused("rsa_size", f"the RSA key is {bits} bits, which is not a multiple "
                                     "of 8")
    if e % 2 == 0 or e < 3 or not (2**16 + 1 <= e <= 2**256 - 1):
        raise KeyRefused("rsa_exponent", f"the RSA public exponent {e} is not allowed: it "
                                         "must be odd and between 65537 and 2^256-1")
    if n % 2 == 0:
        raise KeyRefused("rsa_even_modulus", "the RSA modulus is even, so it is trivially "
                                             "factored; the key is broken")
    if any(n % p == 0 for p in _SMALL_PRIMES):
        raise KeyRefused("rsa_small_factor", "the RSA modulus has a small prime factor; the "
                                             "key is broken")
    if is_roca_vulnerable(n):
        raise KeyRefused("rsa_roca", "the RSA key was made by a generator vulnerable to ROCA "
                                     "(CVE-2017-15361) and can be factored; make a new key "
                                     "with other software")
    if fermat_factorable(n):
        raise KeyRefused("rsa_fermat", "the RSA key's primes are so close together that "
                                       "Fermat's method factors it; make a new key")
    if debian is not None and n in debian:
        raise KeyRefused("debian_weak", "the RSA key is one of the predictable keys of "
                                        "Debian's broken OpenSSL (CVE-2008-0166); make a "
                                        "new key")


def check_subscriber_key(public_key: object, *,
                         is_key_blocked: Callable[[str], bool] | None = None,
                         allowed_curves: frozenset[str] | None = None,
                         debian_weak_keys: DebianWeakKeys | None = None) -> str:
    """Apply the policy; the key's description ("RSA 2048", "ECDSA P-256"), or
    :class:`KeyRefused`. ``allowed_curves`` narrows the curves (names as in
    :data:`ALLOWED_CURVES`' values)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        _check_rsa(public_key, debian_weak_keys)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = ALLOWED_CURVES.get(public_key.curve.name)
        if curve is None or (allowed_curves is not None and curve not in allowed_curves):
            offered = sorted(allowed_curves or ALLOWED_CURVES.values())
            raise KeyRefused("ec_curve", f"the elliptic curve {curve or public_key.curve.name} "
                                         f"is not allowed; use {', '.join(offered)}")
    else:
        raise KeyRefused("algorithm", f"{describe_public_key(public_key)} keys are not "
                                      "allowed; use RSA (2048 bits or more) or ECDSA "
                                      "(P-256, P-384, P-521)")
    if is_key_blocked is not None and is_key_blocked(spki_sha256(public_key)):
        raise KeyRefused("compromised", "this key was reported compromised (a certificate "
                                        "for it was revoked for key compromise); make a new "
                                        "key")
    return describe_public_key(public_key)
