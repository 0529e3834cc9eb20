"""One certificate end to end, through the gateway, in both run modes."""

import pytest

from chancery_shared.messaging import topology
from chancery_shared.messaging.consumer import peek_dead_letters

from .conftest import PASSWORD
from .scenario import run_happy_path

pytestmark = pytest.mark.e2e


def assert_no_dead_letters(broker_url: str) -> None:
    dead = {queue: peek_dead_letters(broker_url, queue) for queue in topology.QUEUES}
    assert not any(dead.values()), dead


def test_embedded_mode_issues_a_certificate_end_to_end(embedded):
    base_url, broker_url = embedded
    run_happy_path(base_url, PASSWORD)
    assert_no_dead_letters(broker_url)


@pytest.mark.distributed
def test_distributed_mode_issues_a_certificate_end_to_end(distributed):
    base_url, broker_url = distributed
    run_happy_path(base_url, PASSWORD)
    assert_no_dead_letters(broker_url)
