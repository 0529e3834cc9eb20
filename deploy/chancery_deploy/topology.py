"""The single description of Chancery's distributed topology.

Everything that runs in distributed mode is declared here once: the services and the
URL prefixes the gateway routes to them, their databases and roles, the broker account,
the ports, and every application process with its argv and environment. The local
multi-process stack (`local.py`), the nginx configuration (`gateway.py`) and the
compose file (`compose.py`) are all *renderings* of this description, so they cannot
drift apart: change a process here and all three change together.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ProcessKind = Literal["migrate", "web", "relay", "consumer"]


@dataclass(frozen=True)
class Service:
    """One Chancery service: its name, where the gateway sends traffic, its port slot."""

    name: str
    """The service name used by the `chancery` CLI and the wsgi factory (`ca-signer`)."""
    path_name: str
    """The `<service>` segment of its public API (`/api/ca/...` for ca-signer)."""
    index: int
    """Port slot: the web process listens on `service_base + index`."""
    extra_prefixes: tuple[str, ...] = ()
    """Public prefixes outside its `/api/<name>/` that it also owns (`/ca/` for ca-signer,
    the API browser's `/api/docs` for identity)."""

    @property
    def slug(self) -> str:
        """Identifier-safe name, used for its database and its PostgreSQL role."""
        return self.name.replace("-", "_")

    @property
    def env_name(self) -> str:
        """Upper-case form used in environment variable names (`CA_SIGNER`)."""
        return self.slug.upper()

    @property
    def database_url_var(self) -> str:
        """The variable holding this service's database URL."""
        return f"CHANCERY_{self.env_name}_DATABASE_URL"

    @property
    def api_prefix(self) -> str:
        return f"/api/{self.path_name}/"

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Every URL prefix the gateway routes to this service, full URI kept."""
        return (self.api_prefix, *self.extra_prefixes)

    @property
    def health_path(self) -> str:
        return f"{self.api_prefix}healthz"

    @property
    def metrics_path(self) -> str:
        return f"{self.api_prefix}metrics"


SERVICES: tuple[Service, ...] = (
    Service("identity", "identity", 1, ("/api/docs",)),
    Service("orders", "orders", 2),
    Service("ca-signer", "ca", 3, ("/ca/",)),
    Service("ledger", "ledger", 4),
    Service("audit", "audit", 5),
)


def service(name: str) -> Service:
    """Look a service up by name; a typo should fail loudly, not route nowhere."""
    for svc in SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in SERVICES)}")


PORT_VARIABLES: Mapping[str, str] = {
    "gateway": "CHANCERY_PORT",
    "service_base": "CHANCERY_SERVICE_PORT_BASE",
    "postgres": "CHANCERY_PG_PORT",
    "amqp": "CHANCERY_AMQP_PORT",
    "erlang_dist": "CHANCERY_ERLANG_DIST_PORT",
}
"""Environment variables that override each port of the local stack."""


@dataclass(frozen=True)
class Ports:
    """Every TCP port of the local stack, all bound to 127.0.0.1.

    They are configurable and shiftable as a block so that a test stack can run
    beside a developer's `make up` without either noticing the other.
    """

    gateway: int = 8080
    service_base: int = 8100
    postgres: int = 55432
    amqp: int = 55672
    erlang_dist: int = 55673

    def service(self, svc: Service) -> int:
        return self.service_base + svc.index

    def all(self) -> dict[str, int]:
        """Every port the stack listens on, by a readable name."""
        ports = {"gateway": self.gateway, "postgres": self.postgres, "amqp": self.amqp,
                 "erlang_dist": self.erlang_dist}
        ports.update({f"{svc.name}-web": self.service(svc) for svc in SERVICES})
        return ports

    def offset(self, delta: int) -> Ports:
        """The same layout moved by `delta`, for a second stack on the same machine."""
        return Ports(self.gateway + delta, self.service_base + delta, self.postgres + delta,
                     self.amqp + delta, self.erlang_dist + delta)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        """Defaults overridden by CHANCERY_PORT, CHANCERY_PG_PORT and friends."""
        environ = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for attr, var in PORT_VARIABLES.items():
            raw = environ.get(var, "").strip()
            if raw:
                try:
                    values[attr] = int(raw)
                except ValueError:
                    raise ValueError(f"{var} must be a port number, got {raw!r}") from None
        return cls(**values)

    @classmethod
    def find_free(cls, first_offset: int = 1000, step: int = 100, attempts: int = 200) -> Ports:
        """The first shifted layout whose ports are all free right now (tests use it)."""
        for attempt in range(attempts):
            candidate = cls().offset(first_offset + attempt * step)
            if all(port_is_free(port) for port in candidate.all().values()):
                return candidate
        raise RuntimeError("no free block of ports found for a Chancery stack")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (checked by binding, not connecting).

    SO_REUSEADDR as the servers themselves set it, so connections lingering in
    TIME_WAIT after a stop do not count as "in use".
    """
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Secrets:
    """Passwords of the broker account and of each service's database role.

    The local stack generates them once per var dir; the compose rendering uses
    `${VAR:-dev-default}` placeholders so operators inject real ones. Values are
    placed into URLs unescaped, so they must be URL-safe (generated ones are).
    """

    broker_password: str
    database_passwords: Mapping[str, str]

    def database_password(self, svc: Service) -> str:
        return self.database_passwords[svc.name]

    @classmethod
    def generate(cls) -> Secrets:
        return cls(secrets.token_urlsafe(24), {s.name: secrets.token_urlsafe(24) for s in SERVICES})

    def to_dict(self) -> dict[str, object]:
        return {"broker_password": self.broker_password,
                "database_passwords": dict(self.database_passwords)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Secrets:
        passwords = data["database_passwords"]
        if not isinstance(passwords, Mapping) or set(passwords) != {s.name for s in SERVICES}:
            raise ValueError("secrets file does not list a password for every service")
        return cls(str(data["broker_password"]), {str(k): str(v) for k, v in passwords.items()})


@dataclass(frozen=True)
class Database:
    """One service's database; the role of the same name owns it and nothing else."""

    service: Service
    host: str
    port: int
    password: str

    @property
    def name(self) -> str:
        return self.service.slug

    @property
    def role(self) -> str:
        return self.service.slug

    @property
    def url(self) -> str:
        """SQLAlchemy URL with the psycopg 3 driver, as the services expect."""
        return f"postgresql+psycopg://{self.role}:{self.password}@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class Broker:
    """The RabbitMQ account all Chancery processes use (vhost `/` of a dedicated node)."""

    host: str
    port: int
    password: str
    user: str = "chancery"
    vhost: str = "/"

    @property
    def url(self) -> str:
        # kombu reads `amqp://u:p@h:port//` as vhost "/"; other vhosts follow the single slash.
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{self.vhost}"


@dataclass(frozen=True)
class Addressing:
    """How processes reach each other: loopback locally, service names under compose."""

    postgres_host: str = "127.0.0.1"
    amqp_host: str = "127.0.0.1"
    bind_host: str = "127.0.0.1"
    web_host_template: str = "127.0.0.1"
    """`str.format` template with `{service}`, e.g. `{service}-web` under compose."""

    def web_host(self, svc: Service) -> str:
        return self.web_host_template.format(service=svc.name)


@dataclass(frozen=True)
class AppProcess:
    """One application process: what to run, with which environment, on which port."""

    group: str
    """Name shared by identical replicas (`ca-signer-consumer`); compose scales on it."""
    service: Service
    kind: ProcessKind
    argv: tuple[str, ...]
    env: Mapping[str, str]
    port: int | None = None
    replica: int | None = None

    @property
    def name(self) -> str:
        """Unique process name: the group, plus `-<n>` for replicated processes."""
        return self.group if self.replica is None else f"{self.group}-{self.replica}"

    @property
    def one_shot(self) -> bool:
        """Migrations run to completion before anything else of the service starts."""
        return self.kind == "migrate"


TRUSTED_PROXIES_LOCAL = "127.0.0.1,::1"
#: Unacknowledged signing commands one signer worker may hold (RabbitMQ basic.qos).
SIGNER_PREFETCH = 2


@dataclass(frozen=True)
class Topology:
    """The whole distributed deployment, as data."""

    ports: Ports
    secrets: Secrets
    var_dir: str
    """CHANCERY_VAR_DIR for the application processes."""
    run_dir: str
    """Where per-process runtime files (gunicorn control sockets) go."""
    signer_workers: int = 2
    addressing: Addressing = field(default_factory=Addressing)
    trusted_proxies: str = TRUSTED_PROXIES_LOCAL
    public_port: str | None = None
    """CHANCERY_PORT as the apps see it; defaults to the gateway port."""
    services: tuple[Service, ...] = SERVICES

    def __post_init__(self) -> None:
        if self.signer_workers < 1:
            raise ValueError("ca-signer needs at least one worker")

    @property
    def broker(self) -> Broker:
        return Broker(self.addressing.amqp_host, self.ports.amqp, self.secrets.broker_password)

    def database(self, svc: Service) -> Database:
        return Database(svc, self.addressing.postgres_host, self.ports.postgres,
                        self.secrets.database_password(svc))

    @property
    def databases(self) -> tuple[Database, ...]:
        return tuple(self.database(svc) for svc in self.services)

    def web_url(self, svc: Service) -> str:
        return f"http://{self.addressing.web_host(svc)}:{self.ports.service(svc)}"

    @property
    def jwks_url(self) -> str:
        identity = service("identity")
        return f"{self.web_url(identity)}{identity.api_prefix}.well-known/jwks.json"

    def common_env(self) -> dict[str, str]:
        """What every application process gets, whatever its service."""
        return {
            "CHANCERY_BROKER_URL": self.broker.url,
            "CHANCERY_JWKS_URL": self.jwks_url,
            "CHANCERY_TRUSTED_PROXIES": self.trusted_proxies,
            "CHANCERY_VAR_DIR": self.var_dir,
            "CHANCERY_PORT": self.public_port or str(self.ports.gateway),
        }

    def service_env(self, svc: Service) -> dict[str, str]:
        """Common environment plus this service's database URL, and no other (least privilege)."""
        env = self.common_env()
        env[svc.database_url_var] = self.database(svc).url
        return env

    def processes(self) -> tuple[AppProcess, ...]:
        """Every application process, in start order: migrations, web, relays, consumers."""
        result: list[AppProcess] = []
        for kind in ("migrate", "web", "relay", "consumer"):
            for svc in self.services:
                result.extend(self._processes_of(svc, kind))
        return tuple(result)

    def process(self, name: str) -> AppProcess:
        for proc in self.processes():
            if proc.name == name:
                return proc
        raise KeyError(f"unknown process {name!r}")

    def _processes_of(self, svc: Service, kind: ProcessKind) -> list[AppProcess]:
        env = self.service_env(svc)
        group = f"{svc.name}-{kind}"
        if kind == "web":
            port = self.ports.service(svc)
            argv = ("gunicorn", "--bind", f"{self.addressing.bind_host}:{port}",
                    "--workers", "2", "--threads", "4",
                    # gunicorn's maximum (its default is 4094): the gateway's own request
                    # line limit (8 KiB, gateway.LINE_BUFFER) is the one a client meets
                    "--limit-request-line", "8190",
                    # Each arbiter gets its own control socket: the default one is per
                    # user, and five gunicorns would otherwise steal it from each other.
                    "--control-socket", f"{self.run_dir}/{group}.ctl",
                    f"chancery_shared.wsgi:create_app('{svc.name}')")
            return [AppProcess(group, svc, kind, argv, env, port)]
        argv = ("chancery", kind if kind != "consumer" else "consume", svc.name)
        if kind == "consumer" and svc.name == "ca-signer":
            # The signer workers compete for the signing queue; scale them here only.
            # Each holds at most SIGNER_PREFETCH unacknowledged commands, so work spreads
            # over the workers and a killed one hands back little.
            argv += ("--prefetch", str(SIGNER_PREFETCH))
            return [AppProcess(group, svc, kind, argv, env, replica=n)
                    for n in range(1, self.signer_workers + 1)]
        return [AppProcess(group, svc, kind, argv, env)]

    def routes(self) -> tuple[tuple[str, Service], ...]:
        """(prefix, service) pairs the gateway serves, each prefix passed on unchanged."""
        return tuple((prefix, svc) for svc in self.services for prefix in svc.prefixes)


def local_topology(ports: Ports, secrets: Secrets, var_dir: str, run_dir: str,
                   signer_workers: int = 2) -> Topology:
    """Everything on loopback: the `make up` stack."""
    return Topology(ports, secrets, var_dir, run_dir, signer_workers)


COMPOSE_GATEWAY_IP = "10.213.47.10"
COMPOSE_SUBNET = "10.213.47.0/24"


def compose_secrets() -> Secrets:
    """Compose-time placeholders: operators set the variables, dev defaults otherwise."""
    return Secrets(
        "${CHANCERY_BROKER_PASSWORD:-chancery-dev}",
        {s.name: f"${{CHANCERY_{s.env_name}_DB_PASSWORD:-{s.slug}-dev}}" for s in SERVICES},
    )


def compose_topology(signer_workers: int = 2) -> Topology:
    """Containers: service names instead of loopback, the images' default ports."""
    return Topology(
        ports=Ports(gateway=8080, service_base=8100, postgres=5432, amqp=5672, erlang_dist=25672),
        secrets=compose_secrets(),
        var_dir="/var/lib/chancery",
        run_dir="/tmp",
        signer_workers=signer_workers,
        addressing=Addressing(postgres_host="postgres", amqp_host="rabbitmq", bind_host="0.0.0.0",
                              web_host_template="{service}-web"),
        # Services trust X-Forwarded-For only from the gateway, pinned to a fixed address.
        trusted_proxies=COMPOSE_GATEWAY_IP,
        public_port="${CHANCERY_PORT:-8080}",
    )


PASSTHROUGH_EXAMPLES = ("CHANCERY_DEV_PASSWORD", "CHANCERY_DEV_BOOTSTRAP",
                        "CHANCERY_PUBLIC_BASE_URL", "CHANCERY_CA_KEY_PASSPHRASE",
                        "CHANCERY_IDENTITY_KEY_PASSPHRASE")
"""Caller variables the compose file forwards by name (locally every CHANCERY_* is)."""

_NEVER_PASSED = re.compile(
    r"^CHANCERY_[A-Z0-9_]+_(DATABASE_URL|DB_PASSWORD)$|^CHANCERY_BROKER_PASSWORD$")


def passthrough(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's CHANCERY_* variables a process may inherit.

    Database URLs and passwords are never inherited: a process gets exactly its own
    service's URL from the topology, even if the caller exported someone else's.
    """
    return {k: v for k, v in environ.items()
            if k.startswith("CHANCERY_") and not _NEVER_PASSED.match(k)}


def process_environment(proc: AppProcess, environ: Mapping[str, str],
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Final environment of a process: base OS variables, then passthrough, then topology.

    The topology wins over the caller so that e.g. a stray CHANCERY_BROKER_URL cannot
    point one process of the stack at a different broker.
    """
    env = dict(base or {})
    env.update(passthrough(environ))
    env.update(proc.env)
    return env

