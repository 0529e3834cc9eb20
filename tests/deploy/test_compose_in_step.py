"""docker-compose.yml and the files it mounts are renderings of the topology.

No container engine is needed: the committed files must equal a fresh rendering, so
editing the compose file without the topology (or the reverse) fails here. Regenerate
with `make compose`.
"""

from __future__ import annotations

from chancery_deploy.compose import (
    ASSETS_DIR,
    REPO_ROOT,
    compose_model,
    render_assets,
    render_compose,
)
from chancery_deploy.topology import SERVICES, compose_topology

REGENERATE = "out of step with chancery_deploy/topology.py; run `make compose`"


def test_committed_compose_file_matches_the_topology() -> None:
    committed = (REPO_ROOT / "docker-compose.yml").read_text()
    assert committed == render_compose(), f"docker-compose.yml is {REGENERATE}"


def test_committed_compose_assets_match_the_topology() -> None:
    for name, text in render_assets().items():
        assert (ASSETS_DIR / name).read_text() == text, f"deploy/compose/{name} is {REGENERATE}"


def test_compose_runs_every_process_of_the_topology() -> None:
    topology = compose_topology()
    services = compose_model(topology)["services"]
    for proc in topology.processes():
        entry = services[proc.group]
        assert entry["command"] == list(proc.argv)
        env = dict(item.split("=", 1) for item in entry["environment"] if "=" in item)
        assert env == dict(proc.env)
        assert [k for k in env if k.endswith("_DATABASE_URL")] == [proc.service.database_url_var]
        assert "127.0.0.1" not in env[proc.service.database_url_var]
        assert "127.0.0.1" not in env["CHANCERY_BROKER_URL"]
    assert services["ca-signer-consumer"]["deploy"] == {"replicas": 2}
    assert services["identity-web"]["command"][2] == "0.0.0.0:8101"


def test_compose_can_scale_signer_workers() -> None:
    assert "replicas: 4" in render_compose(signer_workers=4)


def test_init_sql_creates_each_database_with_its_own_role() -> None:
    sql = render_assets()["init-databases.sql"]
    for svc in SERVICES:
        assert f"CREATE DATABASE {svc.slug} OWNER {svc.slug};" in sql
        assert f"REVOKE ALL ON DATABASE {svc.slug} FROM PUBLIC;" in sql


def test_dockerfile_installs_every_package() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    assert dockerfile.startswith("FROM python:3.11-slim") or "\nFROM python:3.11-slim" in dockerfile
    assert "requirements.lock" in dockerfile
    logical_lines = dockerfile.replace("\\\n", " ").splitlines()
    installs = [line for line in logical_lines if "pip install" in line and "--no-deps" in line]
    assert len(installs) == 1, "the Dockerfile must `pip install --no-deps` the local packages"
    for folder in ["shared", "deploy", *(f"services/{s.name}" for s in SERVICES)]:
        assert f" ./{folder} " in installs[0], folder
    assert " -e " not in installs[0]

