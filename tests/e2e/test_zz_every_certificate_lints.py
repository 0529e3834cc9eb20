"""Runs after the other end-to-end tests (pytest takes a folder's files in name order):
every certificate the stacks issued during the run, public or private, is linted again
from its final PEM with the linter meant for it (the CA/B Forum serverauth lint for dv,
ov and ev; pkilint's RFC 5280 validators and Chancery's private rules for private). The
signer lints before it signs; this checks what actually left it."""

from __future__ import annotations

from collections import Counter

from chancery_ca_signer.testing import assert_lints_clean


def test_every_certificate_the_stack_issued_passes_its_linter(stack):
    issued = stack.issued_certificates()
    assert issued, f"the {stack.mode} stack issued nothing: the other e2e tests did not run"
    for profile, pem in issued:
        assert_lints_clean(pem, profile)
    counts = Counter(profile for profile, _ in issued)
    print(f"{stack.mode}: linted {dict(counts)}")
    # the walk-through orders a private certificate, the others public ones: both
    # hierarchies were exercised and checked
    assert counts["private"] and counts["dv"], counts
