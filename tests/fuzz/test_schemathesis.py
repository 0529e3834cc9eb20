"""Every operation of every service's OpenAPI document, fuzzed through the gateway.

schemathesis generates requests from each document (valid ones, and invalid ones that
must be refused with a 4xx), sends them through the gateway of a running stack signed
in as an admin of the development account and as the operator, and checks each answer:
never a 5xx, a documented status, the documented content type and a body matching the
documented schema. It runs once against each shared stack: the embedded one, and the
distributed one, where nginx, gunicorn and PostgreSQL answer. Generation is derandomized
(the same requests every run, in both modes) and bounded (``EXAMPLES`` per operation and
mode), so a failure reproduces and the run stays short.

Operations that would harm the signed-in user (a wrong current password counts towards
their lockout; logging out ends the session) are fuzzed with a throwaway admin instead,
so the shared development users stay usable for every other test.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import PASSWORD, RunningStack
from tests.e2e.scenario import Api, expect

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

SERVICES = ("identity", "orders", "ca", "ledger", "audit")
# examples per operation, role and generation mode, in each stack mode: the admin sees most
# of the API, the operator (platform-wide, no account of their own) is mostly refused, so
# fewer suffice. Sized so both stack modes together take 4 to 5 minutes on a loaded box;
# CHANCERY_FUZZ_SCALE=3 multiplies them for a deeper local run.
EXAMPLES = {"admin": {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 4},
            "operator": {GenerationMode.POSITIVE: 3, GenerationMode.NEGATIVE: 2},
            "throwaway": {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 4}}
SCALE = int(os.environ.get("CHANCERY_FUZZ_SCALE", "1"))
FUZZ_IP = "198.51.100.77"  # sign-in failures are throttled per address: keep them off others'
SELF_HARM = {("POST", "/api/identity/v1/me/password"),  # in this order: logging out last
             ("DELETE", "/api/identity/v1/sessions/current")}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
UNSATISFIABLE: set[tuple[str, GenerationMode]] = set()
"""(operation, generation mode) pairs for which no request can be generated (e.g. invalid
requests to an operation whose only parameter is a path segment). Finding that out is most
of a run's time (hypothesis tries hundreds of draws), and it depends on the document alone,
which is the same for every role and both stacks: so it is found out once per run."""


@dataclass
class FuzzReport:
    """What a run sent and what it found: each distinct bad answer once, with an example."""

    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[tuple[str, int, str], str] = field(default_factory=dict)

    def record(self, status: int) -> None:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def fail(self, case: Any, response: Any, failure: Any) -> None:
        key = (case.operation.label, response.status_code, failure.title)
        if key in self.failures:
            return
        query = f"?{case.query}" if case.query else ""
        sent = case.body if case.body.__class__.__name__ != "NotSet" else None
        self.failures[key] = (
            f"{case.method} {case.formatted_path}{query} "
            f"body={json.dumps(sent, default=str)[:300]} headers={case.headers} -> "
            f"{response.status_code} {response.text[:300]}\n    {failure.title}: "
            f"{str(failure.message)[:400]}")

    def summary(self) -> str:
        return "\n".join(self.failures.values())


def fuzz_operation(operation: Any, base_url: str, role: str, api: Api,
                   report: FuzzReport) -> None:
    """Send the role's EXAMPLES per mode to one operation; record bad answers."""
    headers = _headers(api)
    for mode, examples in EXAMPLES[role].items():
        checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
        fuzz_cases(operation, mode, examples * SCALE, checks, base_url, headers, report)


def fuzz_cases(operation: Any, mode: GenerationMode, examples: int, checks: list[Any],
               base_url: str, headers: dict[str, str], report: FuzzReport) -> None:
    """One operation in one generation mode."""
    if (operation.label, mode) in UNSATISFIABLE:
        return
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        report.record(response.status_code)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                report.fail(case, response, failure)

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - e.g. no value satisfies a negative schema
        if "Unsatisfiable" in type(exc).__name__ or "Unsatisfied" in str(exc):
            UNSATISFIABLE.add((operation.label, mode))
        else:
            report.failures[(operation.label, 0, "generation")] = (
                f"{operation.label} ({mode.value}): generation failed: "
                f"{type(exc).__name__}: {exc}"[:500])


def operations(base_url: str, service: str) -> list[Any]:
    """The operations of one service's document, as the gateway serves it."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/{service}/openapi.json")
    # the bearer token is ours to send (a request without it is a plain 401), and unknown
    # query parameters are ignored by design, as most HTTP APIs do
    schema.config.generation.update(with_security_parameters=False,
                                    allow_extra_parameters=False)
    found = [result.ok() for result in schema.get_all_operations()]
    assert found, f"{service}: no operations in its document"
    return found


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def fuzz_stack(request: pytest.FixtureRequest) -> RunningStack:
    """Each mode's shared stack: in the distributed one nginx, gunicorn and PostgreSQL
    answer. Module-scoped, so every service is fuzzed in one mode, then in the other."""
    return request.getfixturevalue(f"{request.param}_stack")


@pytest.fixture(scope="module")
def signed_in(fuzz_stack: RunningStack) -> dict[str, Api]:
    """The two roles of the brief, plus a throwaway admin for self-harming operations."""
    anonymous = Api(fuzz_stack.base_url)
    admin = anonymous.login("admin@example.com", PASSWORD)
    operator = anonymous.login("operator@chancery.local", PASSWORD)
    email = f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
    expect(admin.post("/api/identity/v1/users", {
        "email": email, "name": "Fuzz Throwaway", "role": "admin", "unit_ids": [],
        "password": "fuzz-throwaway-password-1"}), 201)
    throwaway = anonymous.login(email, "fuzz-throwaway-password-1")
    return {"admin": admin, "operator": operator, "throwaway": throwaway}


def _headers(api: Api) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token}", "X-Forwarded-For": FUZZ_IP}


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_answers_as_documented(fuzz_stack: RunningStack,
                                               signed_in: dict[str, Api], service: str) -> None:
    """No 5xx and no answer outside the document, for the admin and for the operator."""
    base_url = fuzz_stack.base_url
    report, started = FuzzReport(), time.monotonic()
    everything = operations(base_url, service)
    harmless = [op for op in everything if (op.method.upper(), op.path) not in SELF_HARM]
    harmful = sorted((op for op in everything if (op.method.upper(), op.path) in SELF_HARM),
                     key=lambda op: op.method.upper() == "DELETE")  # logging out last
    for role in ("admin", "operator"):
        for operation in harmless:
            fuzz_operation(operation, base_url, role, signed_in[role], report)
    for operation in harmful:
        fuzz_operation(operation, base_url, "throwaway", signed_in["throwaway"], report)
    print(f"\n{fuzz_stack.mode} {service}: {report.requests} requests in "
          f"{time.monotonic() - started:.0f} s, statuses {sorted(report.statuses.items())}")
    assert report.requests > 0
    assert not report.failures, report.summary()
    # the development users were not harmed: they can still work
    for role in ("admin", "operator"):
        assert requests.get(f"{base_url}/api/identity/v1/me", timeout=30,
                            headers=_headers(signed_in[role])).status_code == 200
