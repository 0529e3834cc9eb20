"""The local stack's infrastructure for real: PostgreSQL, RabbitMQ and nginx.

Starts only the servers (no Chancery service is needed) on free ports in a temp var
dir, beside any developer stack, and checks what the services rely on: database
isolation between services, confirmed persistent messaging, and the gateway's own
problem+json answers. The last test stops the stack and looks for leftovers.
"""

from __future__ import annotations

import http.client
import json
import uuid

import psycopg
import pytest
from chancery_deploy import Stack
from chancery_deploy.procs import group_members, pid_alive
from chancery_deploy.topology import SERVICES, port_is_free
from kombu import Connection, Exchange, Queue

pytestmark = pytest.mark.e2e


def test_each_database_admits_its_own_role_only(infra_stack: Stack) -> None:
    databases = infra_stack.topology.databases
    port = infra_stack.ports.postgres
    for db in databases:
        with psycopg.connect(host="127.0.0.1", port=port, user=db.role, password=db.password,
                             dbname=db.name, connect_timeout=5) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS probe (id int)")  # it owns its database
            conn.commit()
        for other in databases:
            if other is db:
                continue
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(host="127.0.0.1", port=port, user=other.role,
                                password=other.password, dbname=db.name, connect_timeout=5)


def test_wrong_password_is_refused(infra_stack: Stack) -> None:
    db = infra_stack.topology.databases[0]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=infra_stack.ports.postgres, user=db.role,
                        password="wrong", dbname=db.name, connect_timeout=5)


def test_broker_confirms_and_keeps_a_persistent_message(infra_stack: Stack) -> None:
    name = f"deploy-test-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(name, type="direct", durable=True)
    queue = Queue(name, exchange, routing_key=name, durable=True)
    url = infra_stack.topology.broker.url
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        producer.publish({"hello": "chancery"}, exchange=exchange, routing_key=name,
                         declare=[queue], delivery_mode=2, serializer="json")
        message = queue(conn.default_channel).get(no_ack=False)
        assert message is not None
        assert message.payload == {"hello": "chancery"}
        assert message.properties.get("delivery_mode") == 2
        message.ack()
        queue(conn.default_channel).delete()
        exchange(conn.default_channel).delete()


def test_guest_cannot_log_in(infra_stack: Stack) -> None:
    guest = f"amqp://guest:guest@127.0.0.1:{infra_stack.ports.amqp}//"
    with pytest.raises(Exception), Connection(guest, connect_timeout=5) as conn:  # noqa: B017
        conn.connect()


def _get(stack: Stack, path: str, source: str = "127.0.0.1") -> tuple[int, str, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.gateway, timeout=10,
                                      source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"X-Request-Id": "deploy-test-1"})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), json.loads(response.read())
    finally:
        conn.close()


def test_gateway_answers_502_problem_when_a_service_is_down(infra_stack: Stack) -> None:
    status, content_type, body = _get(infra_stack, "/api/orders/healthz")
    assert status == 502
    assert content_type.startswith("application/problem+json")
    assert body["status"] == 502 and body["title"] and body["type"] and body["detail"]


def test_gateway_answers_404_problem_for_unknown_paths(infra_stack: Stack) -> None:
    for path in ("/nope", "/api/unknown/x", "/"):
        status, content_type, body = _get(infra_stack, path)
        assert status == 404, path
        assert content_type.startswith("application/problem+json")
        assert body["status"] == 404


def test_gateway_serves_metrics_to_localhost_only(infra_stack: Stack) -> None:
    # Any 127.x address reaches the loopback listener, but only 127.0.0.1 is allowed.
    status, content_type, body = _get(infra_stack, "/api/audit/metrics", source="127.0.0.2")
    assert status == 403 and content_type.startswith("application/problem+json")
    status, _, _ = _get(infra_stack, "/api/audit/metrics")
    assert status == 502  # allowed through; nothing runs behind it


def test_status_reports_the_servers(infra_stack: Stack) -> None:
    rows = {row.name: row for row in infra_stack.status()}
    assert all(rows[name].alive for name in ("postgres", "rabbitmq", "nginx"))
    assert not any(row.alive for name, row in rows.items() if name.startswith(SERVICES[0].name))


@pytest.mark.parametrize("name", ["postgres", "rabbitmq", "nginx"])
def test_a_server_can_be_killed_and_restarted(infra_stack: Stack, name: str) -> None:
    """The hook fault-injection tests use: kill -9 one named process, start it again."""
    before = infra_stack.component(name).pid()
    assert before is not None
    infra_stack.kill(name)
    assert not infra_stack.component(name).alive()
    infra_stack.start(name)
    after = infra_stack.component(name).pid()
    assert after is not None and after != before
    if name == "postgres":  # committed data survived the crash
        db = infra_stack.topology.databases[0]
        with psycopg.connect(host="127.0.0.1", port=infra_stack.ports.postgres, user=db.role,
                             password=db.password, dbname=db.name) as conn:
            conn.execute("SELECT count(*) FROM probe")
    if name == "rabbitmq":
        with Connection(infra_stack.topology.broker.url, connect_timeout=5) as conn:
            conn.connect()
    if name == "nginx":
        assert _get(infra_stack, "/nope")[0] == 404


def test_down_leaves_no_process_behind(infra_stack: Stack) -> None:
    pids = {row.name: row.pid for row in infra_stack.status() if row.pid}
    assert set(pids) == {"postgres", "rabbitmq", "nginx"}
    infra_stack.down()
    for name, pid in pids.items():
        assert not pid_alive(pid), name
    for name in ("rabbitmq", "nginx"):  # led their own process groups
        assert not group_members(pids[name]), name
    ports = infra_stack.ports
    for port in (ports.gateway, ports.postgres, ports.amqp, ports.erlang_dist):
        assert port_is_free(port), port
    assert not any(row.alive for row in infra_stack.status())
    infra_stack.down()  # idempotent
