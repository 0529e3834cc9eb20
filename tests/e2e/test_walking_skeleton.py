"""One certificate end to end, through the gateway, in both run modes."""

import pytest

from .conftest import PASSWORD
from .scenario import run_happy_path

pytestmark = pytest.mark.e2e


def test_embedded_mode_issues_a_certificate_end_to_end(embedded_url):
    run_happy_path(embedded_url, PASSWORD)


@pytest.mark.distributed
def test_distributed_mode_issues_a_certificate_end_to_end(distributed_url):
    run_happy_path(distributed_url, PASSWORD)
