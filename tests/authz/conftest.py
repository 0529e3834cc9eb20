import pytest

from tests.authz.world import World, build_world
from tests.conftest import PASSWORD


@pytest.fixture(scope="session", params=["embedded", "distributed"])
def world(request) -> World:
    """One world per run mode, shared by the matrix and the list-visibility tests."""
    stack = request.getfixturevalue(f"{request.param}_stack")
    return build_world(stack.base_url, PASSWORD, request.getfixturevalue("loopback_dns"))
