import datetime as dt

import pytest
from chancery_ca_signer.pki import validity

UTC = dt.UTC
S = dt.timedelta(seconds=1)


def d(*args):
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "issued, br_max, capped",
    [
        (d(2025, 6, 1), 398, 397),
        (d(2026, 3, 14, 23, 59, 59), 398, 397),
        (d(2026, 3, 15), 200, 199),
        (d(2026, 11, 26, 12), 200, 199),
        (d(2027, 3, 14, 23, 59, 59), 200, 199),
        (d(2027, 3, 15), 100, 99),
        (d(2029, 3, 14, 23, 59, 59), 100, 99),
        (d(2029, 3, 15), 47, 46),
        (d(2035, 1, 1), 47, 46),
    ],
)
def test_max_validity_follows_the_br_schedule_counted_inclusively(issued, br_max, capped):
    assert validity.max_validity_days(issued) == br_max
    not_after = validity.cap_not_after(issued)
    # Inclusive counting: notAfter - notBefore + 1 s is exactly the cap, one day under the BR max.
    assert validity.validity_period(issued, not_after) == dt.timedelta(days=capped)
    assert not_after - issued + S <= dt.timedelta(days=br_max - 1)
    # One more second would exceed the cap.
    assert validity.validity_period(issued, not_after + S) > validity.max_validity(issued)


def test_requested_not_after_within_the_limit_is_kept():
    nb = d(2026, 6, 1)
    assert validity.cap_not_after(nb, d(2026, 7, 1)) == d(2026, 7, 1)


def test_requested_not_after_beyond_the_limit_is_cut():
    nb = d(2026, 6, 1)
    assert validity.cap_not_after(nb, d(2028, 1, 1)) == nb + dt.timedelta(days=199) - S


def test_not_after_before_not_before_is_refused():
    with pytest.raises(ValueError):
        validity.cap_not_after(d(2026, 6, 1), d(2026, 5, 1))


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError):
        validity.cap_not_after(dt.datetime(2026, 6, 1))


def test_backdated_not_before_cannot_select_a_longer_older_limit():
    nb = d(2026, 3, 14, 23)  # backdated into the 398-day era
    signed = d(2026, 3, 15, 1)
    not_after = validity.cap_not_after(nb, issued_at=signed)
    assert validity.validity_period(nb, not_after) == dt.timedelta(days=199)


def test_microseconds_are_dropped_like_x509_does():
    nb = d(2026, 6, 1).replace(microsecond=999_999)
    assert validity.cap_not_after(nb).microsecond == 0


@pytest.mark.parametrize(
    "at, days",
    [
        (d(2026, 3, 14), 398),
        (d(2026, 3, 15), 200),
        (d(2027, 3, 15), 100),
        (d(2029, 3, 14), 100),
        (d(2029, 3, 15), 10),
    ],
)
def test_validation_reuse_period_follows_the_br_schedule(at, days):
    assert validity.max_validation_reuse_days(at) == days
    assert validity.validation_reusable(at - dt.timedelta(days=days), at)
    assert not validity.validation_reusable(at - dt.timedelta(days=days) - S, at)


def test_validation_from_the_future_is_not_reusable():
    assert not validity.validation_reusable(d(2026, 6, 2), d(2026, 6, 1))


def test_validation_expiry_accounts_for_the_schedule_shrinking():
    # Validated 300 days before the 2026-03-15 step: fine under 398 days, too old under 200.
    validated = d(2026, 3, 15) - dt.timedelta(days=300)
    assert validity.validation_expires_at(validated) == d(2026, 3, 15)
    # Validated well inside the 200-day era: expires after 200 days.
    validated = d(2026, 6, 1)
    expires = validity.validation_expires_at(validated)
    assert validity.validation_reusable(validated, expires - dt.timedelta(microseconds=1))
    assert not validity.validation_reusable(validated, expires)
    assert expires - validated == dt.timedelta(days=200, microseconds=1)


def test_a_fixed_cap_replaces_the_br_schedule():
    nb = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # the BR allow 46 days by then
    latest = validity.cap_not_after(nb, max_days=398)
    assert validity.validity_period(nb, latest) == dt.timedelta(days=398)
    asked = nb + dt.timedelta(days=10)
    assert validity.cap_not_after(nb, asked, max_days=398) == asked
    with pytest.raises(ValueError):
        validity.cap_not_after(nb, max_days=0)
