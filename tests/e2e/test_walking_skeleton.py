"""One certificate end to end, through the gateway, in both run modes."""

import pytest
from chancery_shared.messaging import topology
from chancery_shared.messaging.consumer import peek_dead_letters

from tests.conftest import PASSWORD
from tests.e2e.scenario import run_happy_path

pytestmark = pytest.mark.e2e


def assert_no_dead_letters(broker_url: str) -> None:
    dead = {queue: peek_dead_letters(broker_url, queue) for queue in topology.QUEUES}
    assert not any(dead.values()), dead


def test_a_certificate_is_issued_end_to_end(stack, loopback_dns):
    run_happy_path(stack.base_url, PASSWORD, loopback_dns)
    assert_no_dead_letters(stack.broker_url)
