"""The running Chancery stacks shared by the cross-service tests (end to end, authz).

Each is started once per test run and shared: the embedded process in this test
process, and the distributed stack from deploy/ on free loopback ports. Tests that use
them create their own accounts or names, so they do not depend on one another.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import require_servers  # the repository root's conftest

PASSWORD = "e2e-dev-password-123"


class LoopbackDns:
    """A small authoritative DNS server on loopback that test stacks use as their resolver.

    It answers what a test put in ``records`` (``(name, type) -> [rdata text]``) and
    NOERROR with an empty answer for everything else: CAA then finds no restriction, so
    issuance goes through the real lookup path, and a validation check finds a token only
    when a test published one.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.records: dict[tuple[str, str], list[str]] = {}
        self.lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True, name="loopback-dns")
        self._thread.start()

    def publish(self, name: str, rdtype: str, *values: str) -> None:
        with self.lock:
            self.records[(name.lower().rstrip("."), rdtype.upper())] = list(values)

    def _serve(self) -> None:
        import dns.message
        import dns.rdatatype
        import dns.rrset

        while True:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if self._stopped:  # close()'s wake-up call
                return
            try:
                query = dns.message.from_wire(wire)
                response = dns.message.make_response(query)
                question = query.question[0]
                key = (question.name.to_text().lower().rstrip("."),
                       dns.rdatatype.to_text(question.rdtype))
                with self.lock:
                    values = list(self.records.get(key, ()))
                if values:
                    response.answer.append(dns.rrset.from_text_list(
                        question.name, 60, "IN", key[1], values))
            except Exception:  # noqa: BLE001 - garbage in: ignore it, as a server would
                continue
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        """Stop the server thread, then close its socket (not under the thread's feet)."""
        self._stopped = True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"", ("127.0.0.1", self.port))
        self._thread.join(5)
        self.sock.close()


@pytest.fixture(scope="session")
def loopback_dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns()
    yield server
    server.close()


def stack_environment(dns: LoopbackDns) -> dict[str, str]:
    """What every test stack runs with: the development seed and the loopback resolver."""
    return {"CHANCERY_DEV_BOOTSTRAP": "true", "CHANCERY_DEV_PASSWORD": PASSWORD,
            "CHANCERY_DNS_RESOLVER": "127.0.0.1", "CHANCERY_DNS_PORT": str(dns.port),
            "CHANCERY_DNS_TIMEOUT_SECONDS": "2",
            # revocations reach the CRL within seconds instead of a minute
            "CHANCERY_CRL_CHECK_SECONDS": "2"}


@dataclass(frozen=True)
class RunningStack:
    mode: str
    base_url: str
    broker_url: str
    var_dir: Path | None = None
    """The distributed stack's var dir (its processes, logs and state), else None."""
    ca_signer_database_url: str | None = None
    """Where ca-signer keeps what it issued (read by the final lint of every certificate)."""

    def issued_certificates(self) -> list[tuple[str, str]]:
        """(profile, PEM) of every certificate this stack's ca-signer has issued."""
        from sqlalchemy import create_engine, text

        assert self.ca_signer_database_url, f"the {self.mode} stack names no ca-signer DB"
        engine = create_engine(self.ca_signer_database_url)
        try:
            with engine.connect() as connection:
                return [(row.profile, row.certificate_pem) for row in connection.execute(text(
                    "SELECT profile, certificate_pem FROM certificates "
                    "WHERE certificate_pem IS NOT NULL ORDER BY created_at"))]
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory, loopback_dns) -> Iterator[RunningStack]:
    from chancery_shared.embedded import EmbeddedChancery
    from chancery_shared.testing import purge_broker

    broker_url = "memory://e2e-embedded"  # its own in-memory broker (see broker.connect)
    purge_broker(broker_url)
    var = tmp_path_factory.mktemp("embedded")
    chancery = EmbeddedChancery({**os.environ, "CHANCERY_VAR_DIR": str(var),
                                 "CHANCERY_BROKER_URL": broker_url,
                                 **stack_environment(loopback_dns)})
    chancery.start()
    try:
        yield RunningStack("embedded", chancery.serve_in_background(), broker_url,
                           ca_signer_database_url=str(
                               chancery.services["ca-signer"].engine.url.render_as_string(
                                   hide_password=False)))
    finally:
        chancery.stop()


@pytest.fixture(scope="session")
def distributed_stack(tmp_path_factory, loopback_dns) -> Iterator[RunningStack]:
    require_servers()
    from chancery_deploy import Ports, Stack

    var = tmp_path_factory.mktemp("distributed")
    stack = Stack(var_dir=var, ports=Ports.find_free(),
                  environ={**os.environ, **stack_environment(loopback_dns)})
    try:
        stack.up()
        yield RunningStack("distributed", stack.base_url, stack.env["CHANCERY_BROKER_URL"],
                           var, stack.env["CHANCERY_CA_SIGNER_DATABASE_URL"])
    finally:
        stack.destroy()  # also removes a PostgreSQL cluster relocated to /tmp


@pytest.fixture(params=["embedded", "distributed"])
def stack(request) -> RunningStack:
    """Run the test once in each mode."""
    return request.getfixturevalue(f"{request.param}_stack")
