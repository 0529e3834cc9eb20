"""A private PostgreSQL cluster from the Debian server binaries.

PostgreSQL refuses to run as root, so when the stack runs as root the cluster is owned
by the `postgres` system user and every server command goes through `runuser`. That
user must be able to reach the data directory; when the repository lives somewhere it
cannot traverse (a private home, pytest's 0700 temp dirs), the cluster moves to a
postgres-owned directory under /tmp, named after the port and the var dir so that two
stacks never share one. The chosen location is remembered in the stack directory.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .procs import StackError, pid_alive, tail, wait_for
from .topology import Database

SUPERUSER = "postgres"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin for ".s.PGSQL.<port>"


def find_bin_dir() -> Path | None:
    """Newest /usr/lib/postgresql/<version>/bin holding both initdb and postgres."""
    override = os.environ.get("CHANCERY_PG_BIN")
    candidates = [override] if override else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
        if Path(p).parent.name.isdigit() else 0, reverse=True)
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    return None


def running_as_root() -> bool:
    return os.geteuid() == 0


class LocalPostgres:
    """One cluster with a database and an owning login role per service."""

    name = "postgres"

    def __init__(self, stack_dir: Path, port: int, databases: Sequence[Database],
                 say: Callable[[str], None]) -> None:
        self.stack_dir = stack_dir
        self.port = port
        self.databases = tuple(databases)
        self.say = say
        self._root: Path | None = None

    # -- where things live -------------------------------------------------------

    @property
    def location_file(self) -> Path:
        return self.stack_dir / "postgres.location"

    @property
    def root(self) -> Path:
        """Cluster directory: data/, run/ (socket) and postgres.log live under it."""
        if self._root is None:
            self._root = self._recorded_root() or self._choose_root()
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def _recorded_root(self) -> Path | None:
        try:
            return Path(self.location_file.read_text().strip())
        except FileNotFoundError:
            return None

    def _choose_root(self) -> Path:
        preferred = self.stack_dir / "postgres"
        too_long = len(str(preferred / "run")) + len(f"/.s.PGSQL.{self.port}") > SOCKET_PATH_MAX
        if not too_long and (not running_as_root() or self._postgres_can_enter(self.stack_dir)):
            return preferred
        digest = hashlib.sha256(str(self.stack_dir.resolve()).encode()).hexdigest()[:10]
        fallback = Path(f"/tmp/chancery-pg-{self.port}-{digest}")
        reason = ("its socket path would be too long" if too_long
                  else f"user {SUPERUSER} cannot traverse {self.stack_dir}")
        self.say(f"postgres: data directory is {fallback} ({reason})")
        return fallback

    def _postgres_can_enter(self, directory: Path) -> bool:
        probe = ["runuser", "-u", SUPERUSER, "--", "test", "-x", str(directory)]
        return subprocess.run(probe, capture_output=True).returncode == 0

    # -- commands -----------------------------------------------------------------

    def _as_owner(self, argv: Sequence[str]) -> list[str]:
        """Run server commands as `postgres` when we are root (initdb/postgres insist)."""
        return ["runuser", "-u", SUPERUSER, "--", *argv] if running_as_root() else list(argv)

    def _bin(self, tool: str) -> str:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise StackError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                             "(run `make system-packages` as root)")
        return str(bin_dir / tool)

    def _run(self, argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._as_owner(argv), capture_output=True, text=True, timeout=timeout,
                              cwd="/", start_new_session=True)

    def _chown(self, path: Path) -> None:
        if running_as_root():
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        self._chown(path)

    # -- lifecycle ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Create (once) and configure the cluster; safe to repeat on every `up`."""
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        root = self.root
        owner_uid = pwd.getpwnam(SUPERUSER).pw_uid if running_as_root() else os.geteuid()
        if root.exists() and root.stat().st_uid != owner_uid:
            raise StackError(f"{root} exists but belongs to another user; remove it or pick "
                             "another CHANCERY_PG_PORT")
        for directory in (root, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
            self._chown(directory)
        self.location_file.write_text(f"{root}\n")
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._write(self.data_dir / "chancery.conf", self._server_settings())
        self._write(self.data_dir / "pg_hba.conf", self._hba())
        self._link_log()

    def _initdb(self) -> None:
        self.say(f"postgres: initdb {self.data_dir}")
        result = self._run([self._bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"])
        if result.returncode != 0:
            raise StackError(f"initdb failed:\n{result.stdout}{result.stderr}")
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# Chancery stack settings (rewritten on every start)\n"
                         "include = 'chancery.conf'\n")

    def _server_settings(self) -> str:
        return "\n".join([
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "unix_socket_permissions = 0700",
            "password_encryption = 'scram-sha-256'",
            # 5 services x (2 web workers + relay + consumers), each with a small pool.
            "max_connections = 300",
            "",
        ])

    def _hba(self) -> str:
        """The socket (owner-only directory) for administration; TCP per service role only."""
        lines = ["# TYPE DATABASE USER ADDRESS METHOD",
                 "local  all postgres trust"]
        lines += [f"host   {db.name} {db.role} 127.0.0.1/32 scram-sha-256" for db in self.databases]
        return "\n".join(lines) + "\n"

    def _link_log(self) -> None:
        """Make the server log easy to find beside the other logs."""
        link = self.stack_dir / "logs" / "postgres.log"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self.log_file)

    def postmaster_pid(self) -> int | None:
        if self._root is None and self._recorded_root() is None:
            return None  # never prepared: nothing can be running, and nothing to choose yet
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except (FileNotFoundError, PermissionError):
            return None
        return int(first) if first.isdigit() and pid_alive(int(first)) else None

    def alive(self) -> bool:
        return self.postmaster_pid() is not None

    def pid(self) -> int | None:
        return self.postmaster_pid()

    def start(self, timeout: float = 60) -> None:
        """Prepare, start with `pg_ctl -w`, then make sure the roles and databases exist."""
        self.prepare()
        if not self.alive():
            self._pg_ctl_start(timeout)
        self.ensure_databases()
        self.wait_ready(time.monotonic() + timeout)

    def _pg_ctl_start(self, timeout: float) -> None:
        # Retried: right after a kill -9 the old backends may still hold shared memory.
        deadline = time.monotonic() + timeout
        while True:
            result = self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "-l",
                                str(self.log_file), "-w", "-t", str(int(timeout)), "start"],
                               timeout=timeout + 10)
            if result.returncode == 0:
                return
            if time.monotonic() >= deadline:
                raise StackError(f"PostgreSQL did not start:\n{result.stdout}{result.stderr}\n"
                                 f"--- {self.log_file}\n{tail(self.log_file)}")
            time.sleep(1)

    def admin_connect(self):  # type: ignore[no-untyped-def]  # psycopg.Connection
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER,
                               dbname="postgres", autocommit=True, connect_timeout=5)

    def ensure_databases(self) -> None:
        """One login role and one database it owns per service; PUBLIC may not connect."""
        from psycopg import sql

        with self.admin_connect() as conn:
            for db in self.databases:
                role, name = sql.Identifier(db.role), sql.Identifier(db.name)
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                      (db.role,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                     "PASSWORD {}").format(role, sql.Literal(db.password)))
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                    (db.name,)).fetchone():
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, role))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))

    def can_login(self, db: Database) -> bool:
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user=db.role,
                                 password=db.password, dbname=db.name, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def wait_ready(self, deadline: float) -> None:
        """Every service role can log in to its database over TCP."""
        for db in self.databases:
            ok = wait_for(lambda db=db: self.can_login(db), max(deadline - time.monotonic(), 1))
            if not ok:
                raise StackError(f"PostgreSQL does not accept role {db.role} on 127.0.0.1:"
                                 f"{self.port}\n--- {self.log_file}\n{tail(self.log_file)}")

    def stop(self, timeout: float = 60) -> None:
        if not self.alive():
            return
        result = self._run([self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                            "-t", str(int(timeout)), "stop"], timeout=timeout + 10)
        if result.returncode != 0 and self.alive():
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster: the crash that recovery must survive."""
        pid = self.postmaster_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid), 10)

    def destroy(self) -> None:
        """Delete the cluster's files (after stop)."""
        if self._root is None and self._recorded_root() is None:
            return
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
        self.location_file.unlink(missing_ok=True)
