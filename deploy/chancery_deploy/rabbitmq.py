"""A private RabbitMQ node run from the Debian package's scripts as the current user.

Every path the node touches (mnesia, logs, config, plugins file, Erlang cookie via
HOME) is under the stack directory, and the system's /etc/rabbitmq is bypassed, so
the node neither needs nor disturbs the packaged service. The account is created by
a definitions file the node imports on every boot: that needs no `rabbitmqctl` (whose
own Erlang distribution ports are awkward to pin) and re-applies a changed password.
No `guest` user is ever created.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

from .procs import StackError, wait_for
from .topology import Broker, Ports

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
EPMD_PORT = 4369


def server_available() -> bool:
    return SERVER.exists()


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def node_name(ports: Ports) -> str:
    """Unique per AMQP port, so a test node and a developer's node coexist under one epmd."""
    return f"chancery-{ports.amqp}@localhost"


class RabbitLayout:
    """Files of the node under `<stack>/rabbitmq`."""

    def __init__(self, stack_dir: Path) -> None:
        self.base = stack_dir / "rabbitmq"

    @property
    def config(self) -> Path:
        return self.base / "rabbitmq.conf"

    @property
    def definitions(self) -> Path:
        return self.base / "definitions.json"

    def environment(self, ports: Ports) -> dict[str, str]:
        """Variables read by the rabbitmq-server script; they override /etc/rabbitmq."""
        base = self.base
        return {
            "HOME": str(base),
            "RABBITMQ_NODENAME": node_name(ports),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(ports.amqp),
            "RABBITMQ_DIST_PORT": str(ports.erlang_dist),
            "RABBITMQ_BASE": str(base),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.config),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def write(self, broker: Broker) -> None:
        """(Re)write config, empty plugin list and the account definitions."""
        for sub in ("", "mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("# intentionally empty: see chancery_deploy\n")
        self.config.write_text("\n".join([
            f"load_definitions = {self.definitions}",
            "loopback_users.guest = true",
            "log.console = true",
            "log.console.level = info",
            "log.file = false",
            "",
        ]))
        definitions = {
            "users": [{"name": broker.user, "password_hash": password_hash(broker.password),
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
            "vhosts": [{"name": broker.vhost}],
            "permissions": [{"user": broker.user, "vhost": broker.vhost,
                             "configure": ".*", "write": ".*", "read": ".*"}],
        }
        self.definitions.write_text(json.dumps(definitions, indent=2) + "\n")
        self.definitions.chmod(0o600)


def epmd_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", EPMD_PORT), timeout=1):
            return True
    except OSError:
        return False


def ensure_epmd() -> None:
    """Start the Erlang port mapper in its own session, bound to loopback.

    If the node started it, it would sit in the node's process group and die with it,
    pulling the rug from under any other node (a developer's stack) registered there.
    """
    if epmd_running():
        return
    env = dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1")
    try:
        subprocess.run(["epmd", "-daemon"], env=env, start_new_session=True, check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StackError(f"cannot start epmd: {exc}") from exc
    if not wait_for(epmd_running, 10):
        raise StackError("epmd did not start listening on 127.0.0.1:4369")


def amqp_accepts(broker: Broker) -> bool:
    """A real AMQP login with the stack's account (not just an open port)."""
    from kombu import Connection

    try:
        with Connection(broker.url, connect_timeout=2) as conn:
            conn.connect()
        return True
    except Exception:  # noqa: BLE001 - any failure simply means "not yet"
        return False
