"""Time building and signing a CRL of 100,000 entries, against one of 1,000.

    .venv/bin/python services/ca-signer/bench_crl.py [entries]

A linear build shows a ratio near 100 (the number of entries times); cryptography's
one-by-one ``add_revoked_certificate`` would show a ratio far above it (quadratic).
Serials are random 159-bit numbers and every entry has its own revocation time, the
worst case for the entry encoder.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

from chancery_ca_signer.pki.crl import RevokedEntry, build_crl
from chancery_ca_signer.pki.hierarchy import create_hierarchy
from cryptography import x509

REASONS = ("key_compromise", "superseded", "unspecified", "cessation_of_operation")


def timed_build(count: int, issuing_cert: x509.Certificate, key, now: datetime) -> float:
    entries = [RevokedEntry(x509.random_serial_number(), now - timedelta(seconds=i),
                            REASONS[i % len(REASONS)]) for i in range(count)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        crl = build_crl(issuing_cert, key, entries, 1, now)
        best = min(best, time.perf_counter() - started)
    assert len(crl) == count
    return best


def timed_builder_baseline(count: int, issuing_cert: x509.Certificate, key,
                           now: datetime) -> float:
    """For comparison: RevokedCertificateBuilder per entry, then one builder call."""
    reason = x509.CRLReason(x509.ReasonFlags.key_compromise)
    started = time.perf_counter()
    revoked = [x509.RevokedCertificateBuilder(x509.random_serial_number(),
                                              now - timedelta(seconds=i),
                                              [x509.Extension(reason.oid, False, reason)]).build()
               for i in range(count)]
    key.sign_crl(x509.CertificateRevocationListBuilder(
        issuer_name=issuing_cert.subject, last_update=now, next_update=now + timedelta(days=7),
        revoked_certificates=revoked))
    return time.perf_counter() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = datetime.now(UTC).replace(microsecond=0)
    hierarchy = create_hierarchy(passphrase=b"benchmark-passphrase-0123456789",
                                 public_base_url="http://pki.chancery.com",
                                 organization="Chancery Benchmark", country="US", now=now)
    small = timed_build(1_000, hierarchy.issuing_cert, hierarchy.issuing_key, now)
    large = timed_build(count, hierarchy.issuing_cert, hierarchy.issuing_key, now)
    print(f"key: {hierarchy.issuing_key.key_type}")
    print(f"CRL of {1_000:,} entries: {small * 1000:.1f} ms")
    print(f"CRL of {count:,} entries: {large * 1000:.1f} ms")
    print(f"ratio: {large / small:.1f} (linear would be {count / 1_000:.0f})")
    baseline = timed_builder_baseline(count, hierarchy.issuing_cert, hierarchy.issuing_key, now)
    print(f"for comparison, RevokedCertificateBuilder per entry: {baseline * 1000:.1f} ms "
          f"({baseline / large:.1f} times slower)")


if __name__ == "__main__":
    main()
