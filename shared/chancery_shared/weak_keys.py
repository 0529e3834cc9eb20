"""Real RSA private keys with the weaknesses the key policy refuses, for tests.

Each builder returns a working private key (it signs a CSR like any other), made of
primes chosen to have one weakness: primes close enough for Fermat's method, or primes
of the Infineon form that ROCA (CVE-2017-15361) factors. Used by the key-policy tests of
orders and ca-signer; nothing in the product imports it.
"""

from __future__ import annotations

import math
import secrets

from cryptography.hazmat.primitives.asymmetric import rsa

_SMALL_PRIMES = [p for p in range(2, 3000) if all(p % q for q in range(2, math.isqrt(p) + 1))]
_SMALL_PRIMORIAL = math.prod(_SMALL_PRIMES)


def is_probable_prime(n: int, rounds: int = 8) -> bool:
    """Miller-Rabin, after a cheap gcd sieve against the primes below 3000."""
    if n < 3000:
        return n in _SMALL_PRIMES
    if math.gcd(n, _SMALL_PRIMORIAL) != 1:
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def next_prime(n: int) -> int:
    n |= 1
    while not is_probable_prime(n):
        n += 2
    return n


def roca_style_prime(bits: int) -> int:
    """A prime of the Infineon form k*M + (65537^a mod M)."""
    primes = [p for p in range(2, 168) if all(p % q for q in range(2, math.isqrt(p) + 1))]
    m = math.prod(primes)
    # k in [1.5 * 2^(bits-1) / m, 2^bits / m - 1]: the prime has exactly `bits` bits and is
    # >= 1.5 * 2^(bits-1), so the product of two such primes has exactly 2*bits bits.
    k_low = ((3 << (bits - 2)) + m - 1) // m
    k_high = (1 << bits) // m - 1
    while True:
        k = k_low + secrets.randbelow(k_high - k_low)
        candidate = k * m + pow(65537, secrets.randbelow(2**64), m)
        if candidate < (1 << bits) and is_probable_prime(candidate):
            return candidate


def private_key_from_primes(p: int, q: int, e: int = 65537) -> rsa.RSAPrivateKey:
    n, phi = p * q, (p - 1) * (q - 1)
    d = pow(e, -1, phi)
    return rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=d % (p - 1), dmq1=d % (q - 1), iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, n)).private_key()


def fermat_weak_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """Two primes 2^20 apart: Fermat's method factors the modulus in its first round."""
    while True:
        p = next_prime(secrets.randbits(bits // 2) | (3 << (bits // 2 - 2)))
        q = next_prime(p + 2**20)
        if (p * q).bit_length() == bits and math.gcd(65537, (p - 1) * (q - 1)) == 1:
            return private_key_from_primes(p, q)


def roca_weak_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """Both primes of the Infineon form: the ROCA test recognises the modulus."""
    while True:
        p, q = roca_style_prime(bits // 2), roca_style_prime(bits // 2)
        if p != q and math.gcd(65537, (p - 1) * (q - 1)) == 1:
            return private_key_from_primes(p, q)
