"""The topology description: processes, environments, ports and gateway routes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chancery_deploy.gateway import render_compose_nginx_conf, render_local_nginx_conf
from chancery_deploy.local import Stack
from chancery_deploy.topology import (
    SERVICES,
    Ports,
    Secrets,
    Topology,
    compose_topology,
    local_topology,
    passthrough,
    process_environment,
)

DATABASE_URL = re.compile(r"^CHANCERY_[A-Z_]+_DATABASE_URL$")


@pytest.fixture
def topology() -> Topology:
    return local_topology(Ports(), Secrets.generate(), "/srv/var", "/srv/var/stack/run")


def test_every_service_has_migrate_web_relay_and_consumer(topology: Topology) -> None:
    kinds: dict[str, set[str]] = {}
    for proc in topology.processes():
        kinds.setdefault(proc.service.name, set()).add(proc.kind)
    assert kinds == {svc.name: {"migrate", "web", "relay", "consumer"} for svc in SERVICES}


def test_migrations_come_first_and_are_the_only_one_shots(topology: Topology) -> None:
    procs = topology.processes()
    first_other = next(i for i, p in enumerate(procs) if not p.one_shot)
    assert all(p.one_shot for p in procs[:first_other])
    assert not any(p.one_shot for p in procs[first_other:])
    migrations = {p.argv for p in procs if p.one_shot}
    assert migrations == {("chancery", "migrate", s.name) for s in SERVICES}


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_signer_workers_are_a_parameter(workers: int) -> None:
    topology = local_topology(Ports(), Secrets.generate(), "/v", "/v/run", signer_workers=workers)
    signers = [p for p in topology.processes()
               if p.service.name == "ca-signer" and p.kind == "consumer"]
    assert [p.name for p in signers] == [f"ca-signer-consumer-{n}" for n in range(1, workers + 1)]
    assert {p.argv for p in signers} == {("chancery", "consume", "ca-signer", "--prefetch", "2")}
    others = [p for p in topology.processes() if p.kind == "consumer" and p not in signers]
    assert len(others) == len(SERVICES) - 1


def test_signer_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        local_topology(Ports(), Secrets.generate(), "/v", "/v/run", signer_workers=0)


def test_web_command_is_gunicorn_on_loopback(topology: Topology) -> None:
    for svc in SERVICES:
        web = topology.process(f"{svc.name}-web")
        port = Ports().service(svc)
        assert web.port == port
        assert web.argv[:7] == ("gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                                "--threads", "4")
        assert web.argv[-1] == f"chancery_shared.wsgi:create_app('{svc.name}')"


def test_process_names_are_unique(topology: Topology) -> None:
    names = [p.name for p in topology.processes()]
    assert len(names) == len(set(names))


def test_each_process_sees_only_its_own_database(topology: Topology) -> None:
    for proc in topology.processes():
        urls = {k: v for k, v in proc.env.items() if DATABASE_URL.match(k)}
        assert list(urls) == [proc.service.database_url_var], proc.name
        role = proc.service.slug
        assert urls[proc.service.database_url_var].startswith(f"postgresql+psycopg://{role}:")
        assert urls[proc.service.database_url_var].endswith(f"@127.0.0.1:55432/{role}")


def test_common_environment(topology: Topology) -> None:
    env = topology.process("orders-relay").env
    password = topology.secrets.broker_password
    assert env["CHANCERY_BROKER_URL"] == f"amqp://chancery:{password}@127.0.0.1:55672//"
    assert env["CHANCERY_JWKS_URL"] == "http://127.0.0.1:8101/api/identity/.well-known/jwks.json"
    assert env["CHANCERY_TRUSTED_PROXIES"] == "127.0.0.1,::1"
    assert env["CHANCERY_VAR_DIR"] == "/srv/var"
    assert env["CHANCERY_PORT"] == "8080"


def test_caller_variables_pass_through_but_never_database_credentials(topology: Topology) -> None:
    caller = {
        "CHANCERY_DEV_PASSWORD": "s3cret",
        "CHANCERY_PUBLIC_BASE_URL": "https://pki.example.com",
        "CHANCERY_ORDERS_DATABASE_URL": "postgresql+psycopg://orders:x@elsewhere/orders",
        "CHANCERY_LEDGER_DB_PASSWORD": "x",
        "CHANCERY_BROKER_URL": "amqp://elsewhere//",
        "AWS_SECRET_ACCESS_KEY": "not for us",
    }
    assert "CHANCERY_ORDERS_DATABASE_URL" not in passthrough(caller)
    env = process_environment(topology.process("identity-web"), caller, {"PATH": "/usr/bin"})
    assert env["CHANCERY_DEV_PASSWORD"] == "s3cret"
    assert env["CHANCERY_PUBLIC_BASE_URL"] == "https://pki.example.com"
    assert "CHANCERY_ORDERS_DATABASE_URL" not in env
    assert "CHANCERY_LEDGER_DB_PASSWORD" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["CHANCERY_BROKER_URL"] == topology.broker.url  # the stack's broker wins
    assert env["PATH"] == "/usr/bin"


def test_stack_process_environment(tmp_path: Path) -> None:
    caller = {"PATH": "/usr/bin", "HOME": "/root", "CHANCERY_CA_KEY_PASSPHRASE": "pp",
              "CHANCERY_AUDIT_DATABASE_URL": "sqlite:///x.db", "SECRET_TOKEN": "no"}
    stack = Stack(tmp_path / "var", Ports().offset(3000), environ=caller)
    env = stack.process_env(stack.topology.process("ca-signer-consumer-2"))
    assert env["CHANCERY_CA_KEY_PASSPHRASE"] == "pp"
    assert [k for k in env if DATABASE_URL.match(k)] == ["CHANCERY_CA_SIGNER_DATABASE_URL"]
    assert "SECRET_TOKEN" not in env
    assert env["CHANCERY_VAR_DIR"] == str((tmp_path / "var").resolve())
    assert stack.base_url == "http://127.0.0.1:11080"
    # Secrets are generated once per var dir and reused.
    again = Stack(tmp_path / "var", Ports().offset(3000), environ=caller)
    assert again.topology.secrets == stack.topology.secrets
    assert (tmp_path / "var" / "stack" / "secrets.json").stat().st_mode & 0o077 == 0


def test_ports_are_unique_and_derived_from_a_base() -> None:
    for ports in (Ports(), Ports().offset(1000), Ports.from_env({"CHANCERY_PORT": "9000"})):
        values = list(ports.all().values())
        assert len(values) == len(set(values))
        assert sorted(ports.service(s) for s in SERVICES) == [ports.service_base + i
                                                              for i in range(1, 6)]
    assert Ports().all() | {} == {
        "gateway": 8080, "postgres": 55432, "amqp": 55672, "erlang_dist": 55673,
        "identity-web": 8101, "orders-web": 8102, "ca-signer-web": 8103, "ledger-web": 8104,
        "audit-web": 8105}
    env = {"CHANCERY_PORT": "9000", "CHANCERY_SERVICE_PORT_BASE": "9200",
           "CHANCERY_PG_PORT": "15432", "CHANCERY_AMQP_PORT": "15672",
           "CHANCERY_ERLANG_DIST_PORT": "15673"}
    assert Ports.from_env(env) == Ports(9000, 9200, 15432, 15672, 15673)
    with pytest.raises(ValueError, match="CHANCERY_PG_PORT"):
        Ports.from_env({"CHANCERY_PG_PORT": "five"})


def _locations(conf: str) -> dict[str, str]:
    """`location <prefix>` -> the block's body, from a rendered nginx config."""
    found = {}
    for match in re.finditer(r"location (=?\s?\S+) \{(.*?)\n\s*\}", conf, re.S):
        found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize("render", ["local", "compose"])
def test_gateway_routes_every_prefix_unchanged(topology: Topology, render: str) -> None:
    if render == "local":
        conf = render_local_nginx_conf(topology, Path("/srv/var/stack"), run_as_root=False)
        host = "127.0.0.1"
    else:
        topology = compose_topology()
        conf = render_compose_nginx_conf(topology)
        host = "{service}-web"
    locations = _locations(conf)
    expected = {"/api/identity/": "identity", "/api/orders/": "orders", "/api/ca/": "ca-signer",
                "/ca/": "ca-signer", "/api/ledger/": "ledger", "/api/audit/": "audit"}
    for prefix, name in expected.items():
        upstream = f"chancery_{name.replace('-', '_')}"
        # No URI part after the upstream: nginx passes the full original path on.
        assert f"proxy_pass http://{upstream};" in locations[prefix], prefix
        port = topology.ports.service(next(s for s in SERVICES if s.name == name))
        assert f"server {host.format(service=name)}:{port}" in conf
    for svc in SERVICES:
        body = locations[f"= /api/{svc.path_name}/metrics"]
        assert "allow 127.0.0.1;" in body and "deny all;" in body
    assert "return 404;" in locations["/"]
    for directive in ("client_max_body_size 1m;",
                      "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                      "proxy_set_header X-Forwarded-Proto $scheme;",
                      "proxy_set_header X-Request-Id $chancery_request_id;",
                      "proxy_set_header Host $chancery_host;",
                      "error_page 502 @problem_502;", "error_page 504 @problem_504;",
                      "error_page 404 @problem_404;"):
        assert directive in conf, directive
    assert "default_type application/problem+json;" in locations["@problem_502"]


def test_local_gateway_listens_on_loopback_only(topology: Topology) -> None:
    conf = render_local_nginx_conf(topology, Path("/srv/var/stack"), run_as_root=True)
    assert re.findall(r"listen (\S+);", conf) == ["127.0.0.1:8080"]
    assert "daemon off;" in conf and "user root root;" in conf
    for path in re.findall(r"(?:_path|pid|error_log|access_log) (/\S+)", conf):
        assert path.startswith("/srv/var/stack/"), path


def test_signer_workers_hold_few_unacknowledged_commands() -> None:
    topology = local_topology(Ports(), Secrets.generate(), "/v", "/v/run", signer_workers=3)
    signers = [p for p in topology.processes() if p.group == "ca-signer-consumer"]
    assert len(signers) == 3
    for process in signers:
        assert process.argv[-2:] == ("--prefetch", "2")
