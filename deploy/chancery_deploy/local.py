"""The distributed topology on one machine, without containers (`make up`).

`Stack` starts PostgreSQL, RabbitMQ, nginx and every application process of the
topology as detached background processes whose data, logs and pid files live under
`<var>/stack/`. It is both the engine of `chancery-stack` and a Python API for test
fixtures (start only the infrastructure, kill -9 and restart one named process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import gateway, rabbitmq
from .postgres import LocalPostgres, find_bin_dir, running_as_root
from .procs import (
    StackError,
    group_members,
    pid_alive,
    read_pid_file,
    signal_group,
    spawn,
    stop_group,
    tail,
    wait_for,
)
from .topology import AppProcess, Ports, Secrets, Topology, local_topology, process_environment

BASE_ENV_KEYS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                 "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR",
                 "REQUESTS_CA_BUNDLE", "SOFTHSM2_CONF")
"""The only non-CHANCERY variables the stack's processes inherit from the caller."""

INFRA = ("postgres", "rabbitmq", "nginx")
APP_READY_TIMEOUT = 90.0
MIGRATE_TIMEOUT = 180.0
INFRA_TIMEOUT = 60.0
SETTLE_SECONDS = 5.0
"""How long a process without a readiness probe (relay, consumer) must stay up after
its start to count as started: long enough to import its service and connect."""


def default_var_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("CHANCERY_VAR_DIR") or "var").resolve()


def find_nginx() -> str | None:
    """nginx lives in /usr/sbin, which a non-root PATH often lacks."""
    if found := shutil.which("nginx"):
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


def missing_infrastructure() -> list[str]:
    """Server binaries the stack needs and this machine lacks (Debian package names)."""
    missing = []
    if find_bin_dir() is None:
        missing.append("postgresql")
    if not rabbitmq.server_available():
        missing.append("rabbitmq-server")
    if find_nginx() is None:
        missing.append("nginx")
    return missing


def http_answers(url: str, expect: int | None = None) -> bool:
    """True when `url` answers at all (or with status `expect`)."""
    import requests

    try:
        response = requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return expect is None or response.status_code == expect


@dataclass(frozen=True)
class ProcessStatus:
    """One line of `chancery-stack status`."""

    name: str
    pid: int | None
    alive: bool
    port: int | None
    log: Path
    state: str = "down"
    """`up`, `down`, or `done`: a one-shot or idle process that exited with status 0."""

    @property
    def ok(self) -> bool:
        return self.state in ("up", "done")


class Component(Protocol):
    name: str
    port: int | None

    @property
    def log_file(self) -> Path: ...
    def start(self) -> None: ...
    def wait_ready(self, deadline: float) -> None: ...
    def stop(self, timeout: float | None = None) -> None: ...
    def kill(self, sig: int = signal.SIGKILL) -> None: ...
    def pid(self) -> int | None: ...
    def alive(self) -> bool: ...


class Detached:
    """A process the stack spawns itself: RabbitMQ, nginx or an application process."""

    def __init__(self, name: str, argv: Callable[[], list[str]], env: Callable[[], dict[str, str]],
                 stack: Stack, ready: Callable[[], bool] | None = None,
                 before_start: Callable[[], None] | None = None, port: int | None = None,
                 stop_timeout: float = 15.0, may_finish: bool = False) -> None:
        self.name, self.port = name, port
        self._argv, self._env, self._ready, self._before = argv, env, ready, before_start
        self.stack, self.stop_timeout = stack, stop_timeout
        self.may_finish = may_finish
        """A migration, or a relay/consumer with nothing to do, may exit 0: not a failure."""
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def log_file(self) -> Path:
        return self.stack.logs_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.stack.run_dir / f"{self.name}.pid"

    @property
    def done_file(self) -> Path:
        return self.stack.run_dir / f"{self.name}.done"

    def pid(self) -> int | None:
        if self.popen is not None:
            # Our own child: ask Popen, which also keeps its exit status for us.
            if self.popen.poll() is None:
                return self.popen.pid
            return self.popen.pid if group_members(self.popen.pid) else None
        pid = read_pid_file(self.pid_file)
        if pid is not None:
            return pid
        recorded = _recorded_pid(self.pid_file)
        # The leader (a shell wrapper) may be gone while its group still runs.
        return recorded if recorded is not None and group_members(recorded) else None

    def alive(self) -> bool:
        return self.pid() is not None

    def finished(self) -> bool:
        """Exited with status 0 on its own (recorded, so other invocations see it too)."""
        return self.done_file.exists()

    def start(self) -> None:
        if self.alive():
            return
        if self._before:
            self._before()
        self.done_file.unlink(missing_ok=True)
        self.started_at = time.monotonic()
        self.popen = spawn(self._argv(), self._env(), self.log_file, self.pid_file,
                           self.stack.var_dir)

    def check_running(self) -> None:
        """Raise with the log tail if it died; accept a clean exit where that is allowed."""
        if self.alive():
            return
        code = self.popen.poll() if self.popen is not None else None
        if self.may_finish and code == 0:
            last = tail(self.log_file, 1)
            self.done_file.write_text(f"{last}\n")
            self.pid_file.unlink(missing_ok=True)
            self.stack.say(f"{self.name} exited 0 at start-up, nothing to do: {last}")
            return
        status = f" (exit status {code})" if code is not None else ""
        raise StackError(f"{self.name} exited during start-up{status}\n--- {self.log_file}\n"
                         f"{tail(self.log_file)}")

    def wait_ready(self, deadline: float) -> None:
        """Until the readiness probe passes; without a probe, until it survived a while."""
        def ready_or_dead() -> bool:
            if not self.alive():
                return True
            if self._ready is None:
                return time.monotonic() >= self.started_at + SETTLE_SECONDS
            return self._ready()

        wait_for(ready_or_dead, max(deadline - time.monotonic(), 0.5))
        self.check_running()
        if self.alive() and self._ready is not None and not self._ready():
            raise StackError(f"{self.name} did not become ready in time\n--- {self.log_file}\n"
                             f"{tail(self.log_file)}")

    def stop(self, timeout: float | None = None) -> None:
        pgid = self.pid()
        if pgid is not None:
            stop_group(pgid, self.stop_timeout if timeout is None else timeout)
        if self.popen is not None:
            self.popen.poll()
        self.pid_file.unlink(missing_ok=True)
        self.done_file.unlink(missing_ok=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        pgid = self.pid()
        if pgid is None:
            return
        signal_group(pgid, sig)
        if sig == signal.SIGKILL:
            wait_for(lambda: not group_members(pgid), 10)
            if self.popen is not None:
                self.popen.poll()  # collect it: no zombie left behind
            else:
                pid_alive(pgid)


def _recorded_pid(pid_file: Path) -> int | None:
    try:
        first = pid_file.read_text().split()[0]
    except (FileNotFoundError, IndexError):
        return None
    return int(first) if first.isdigit() else None


class PostgresComponent:
    """Adapter giving the PostgreSQL cluster the same shape as the spawned processes."""

    def __init__(self, stack: Stack) -> None:
        self.name, self.port = "postgres", stack.ports.postgres
        self.stack_dir_logs = stack.logs_dir
        self.cluster = LocalPostgres(stack.stack_dir, stack.ports.postgres,
                                     stack.topology.databases, stack.say)

    @property
    def log_file(self) -> Path:
        # The link `prepare()` makes: stable, and naming it needs no data-dir decision.
        return self.stack_dir_logs / "postgres.log"

    def start(self) -> None:
        self.cluster.start(INFRA_TIMEOUT)

    def wait_ready(self, deadline: float) -> None:
        self.cluster.wait_ready(deadline)

    def stop(self, timeout: float | None = None) -> None:
        self.cluster.stop(timeout or INFRA_TIMEOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if sig == signal.SIGKILL:
            self.cluster.kill()
        elif (pid := self.cluster.postmaster_pid()) is not None:
            os.kill(pid, sig)

    def pid(self) -> int | None:
        return self.cluster.postmaster_pid()

    def alive(self) -> bool:
        return self.cluster.alive()


class Stack:
    """Chancery's distributed topology running on this machine.

    `up()` is idempotent: what already runs is left alone. Ports default to
    `Ports.from_env()`, or to the ports recorded by a running stack in the same var dir.
    """

    def __init__(self, var_dir: str | os.PathLike[str] | None = None, ports: Ports | None = None, *,
                 signer_workers: int | None = None, environ: Mapping[str, str] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.environ: Mapping[str, str] = dict(os.environ if environ is None else environ)
        self.var_dir = (Path(var_dir).resolve() if var_dir is not None
                        else default_var_dir(self.environ))
        self.stack_dir = self.var_dir / "stack"
        self.logs_dir = self.stack_dir / "logs"
        self.run_dir = self.stack_dir / "run"
        self.say = say or (lambda message: print(message, file=sys.stderr, flush=True))
        recorded_ports, recorded_workers = self._read_state()
        self.ports: Ports = ports or recorded_ports or Ports.from_env(self.environ)
        workers = (signer_workers or recorded_workers
                   or int(self.environ.get("CHANCERY_SIGNER_WORKERS") or 2))
        self.topology: Topology = local_topology(self.ports, self._secrets(), str(self.var_dir),
                                                 str(self.run_dir), signer_workers=workers)
        self._components: dict[str, Component] = {}

    # -- state on disk ---------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.stack_dir / "stack.json"

    def _read_state(self) -> tuple[Ports | None, int | None]:
        """Ports and worker count of a stack started earlier from this var dir, if any."""
        try:
            data = json.loads(self.state_file.read_text())
            return Ports(**data["ports"]), data.get("signer_workers")
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None, None

    def _write_state(self) -> None:
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        state = {"ports": dataclasses.asdict(self.ports),
                 "signer_workers": self.topology.signer_workers}
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def _secrets(self) -> Secrets:
        """Generated once per var dir and kept (0600) so restarts find the same passwords."""
        path = self.stack_dir / "secrets.json"
        try:
            return Secrets.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            pass
        fresh = Secrets.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(fresh.to_dict(), handle, indent=2)
        return fresh

    # -- what a client needs -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def env(self) -> dict[str, str]:
        """Variables a client or test needs: the gateway, the broker and every database."""
        env = {"CHANCERY_BASE_URL": self.base_url, "CHANCERY_PORT": str(self.ports.gateway),
               "CHANCERY_VAR_DIR": str(self.var_dir)}
        env.update(self.topology.common_env())
        for db in self.topology.databases:
            env[db.service.database_url_var] = db.url
        return env

    # -- components ------------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items() if k in BASE_ENV_KEYS}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                                       "/usr/sbin", "/sbin"])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def process_env(self, proc: AppProcess) -> dict[str, str]:
        """The exact environment an application process is started with."""
        return process_environment(proc, self.environ, self._base_env())

    def component(self, name: str) -> Component:
        if name not in self._components:
            self._components[name] = self._make_component(name)
        return self._components[name]

    def app_names(self) -> list[str]:
        return [proc.name for proc in self.topology.processes()]

    def names(self) -> list[str]:
        """Every component in start order."""
        return [*INFRA, *self.app_names()]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each running component with its descendants (gunicorn
        workers, PostgreSQL backends), from /proc: what a benchmark's phase cost each."""
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
                parents[int(entry.name)], ticks[int(entry.name)] = stat
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        hz = os.sysconf("SC_CLK_TCK")
        result = {}
        for name in self.names():
            pid = self.component(name).pid()
            if pid is None or pid not in ticks:
                continue
            total, todo = 0, [pid]
            while todo:
                current = todo.pop()
                total += ticks.get(current, 0)
                todo.extend(children.get(current, []))
            result[name] = total / hz
        return result

    def _make_component(self, name: str) -> Component:
        if name == "postgres":
            return PostgresComponent(self)
        if name == "rabbitmq":
            return self._rabbitmq()
        if name == "nginx":
            return self._nginx()
        return self._app(self.topology.process(name))

    def _rabbitmq(self) -> Detached:
        layout = rabbitmq.RabbitLayout(self.stack_dir)

        def before() -> None:
            layout.write(self.topology.broker)
            rabbitmq.ensure_epmd()

        def env() -> dict[str, str]:
            return {**self._base_env(), **layout.environment(self.ports)}

        return Detached("rabbitmq", lambda: [str(rabbitmq.SERVER)], env, self,
                        ready=lambda: rabbitmq.amqp_accepts(self.topology.broker),
                        before_start=before, port=self.ports.amqp, stop_timeout=45)

    def _nginx(self) -> Detached:
        nginx_dir = self.stack_dir / "nginx"
        conf = nginx_dir / "nginx.conf"

        def argv() -> list[str]:
            return [find_nginx() or "nginx", "-p", str(nginx_dir), "-c", str(conf),
                    "-e", str(self.logs_dir / "nginx-error.log")]

        def before() -> None:
            (nginx_dir / "temp").mkdir(parents=True, exist_ok=True)
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            conf.write_text(gateway.render_local_nginx_conf(self.topology, self.stack_dir,
                                                            running_as_root()))
            _check_nginx_config(argv())

        return Detached("nginx", argv, self._base_env, self, before_start=before,
                        ready=lambda: http_answers(f"{self.base_url}/"), port=self.ports.gateway)

    def _app(self, proc: AppProcess) -> Detached:
        ready: Callable[[], bool] | None = None
        if proc.kind == "web" and proc.port is not None:
            url = f"http://127.0.0.1:{proc.port}{proc.service.health_path}"
            ready = lambda: http_answers(url, expect=200)  # noqa: E731
        env = self.process_env(proc)

        def argv() -> list[str]:
            executable = shutil.which(proc.argv[0], path=env["PATH"])
            if executable is None:
                raise StackError(f"{proc.name}: `{proc.argv[0]}` not found on {env['PATH']}")
            return [executable, *proc.argv[1:]]

        return Detached(proc.name, argv, lambda: env, self, ready=ready, port=proc.port,
                        stop_timeout=35 if proc.kind == "web" else 15,
                        may_finish=proc.kind != "web")

    # -- lifecycle -------------------------------------------------------------------------

    def up(self, apps: bool = True) -> None:
        """Start the infrastructure, then (unless apps=False) migrations and the services."""
        missing = missing_infrastructure()
        if missing:
            raise StackError(f"missing server packages: {', '.join(missing)} "
                             "(run `make system-packages` as root)")
        self._check_ports(apps)
        self._write_state()
        for name in INFRA:
            self._start_and_wait(name, INFRA_TIMEOUT)
        if apps:
            self._up_apps()
        self.say(f"chancery stack is up: {self.base_url} (data and logs under {self.stack_dir})")

    def _start_and_wait(self, name: str, timeout: float) -> None:
        component = self.component(name)
        self.say(f"starting {name}")
        component.start()
        component.wait_ready(time.monotonic() + timeout)

    def _check_ports(self, apps: bool) -> None:
        """Fail early and clearly when another program holds one of our ports."""
        from .topology import port_is_free

        busy = []
        for name in self.names() if apps else INFRA:
            component = self.component(name)
            port = component.port
            if port is not None and not component.alive() and not port_is_free(port):
                busy.append(f"{name} port {port}")
        rabbit_down = not self.component("rabbitmq").alive()
        if rabbit_down and not port_is_free(self.ports.erlang_dist):
            busy.append(f"erlang distribution port {self.ports.erlang_dist}")
        if busy:
            raise StackError("ports already in use: " + ", ".join(busy) +
                             " (another `make up`? set CHANCERY_PORT, CHANCERY_SERVICE_PORT_BASE, "
                             "CHANCERY_PG_PORT, CHANCERY_AMQP_PORT, CHANCERY_ERLANG_DIST_PORT)")

    def _up_apps(self) -> None:
        procs = self.topology.processes()
        self._migrate([p for p in procs if p.one_shot])
        long_running = [p for p in procs if not p.one_shot]
        for proc in long_running:
            self.say(f"starting {proc.name}")
            self.component(proc.name).start()
        deadline = time.monotonic() + APP_READY_TIMEOUT
        for proc in long_running:
            self.component(proc.name).wait_ready(deadline)
        for proc in long_running:  # a web process may have died while others were awaited
            component = self.component(proc.name)
            assert isinstance(component, Detached)
            if not component.finished():
                component.check_running()

    def _migrate(self, migrations: Iterable[AppProcess]) -> None:
        """Run every service's migration (in parallel: separate databases) and wait for all."""
        started = []
        for proc in migrations:
            component = self.component(proc.name)
            assert isinstance(component, Detached)
            component.pid_file.unlink(missing_ok=True)
            self.say(f"running {proc.name}")
            component.start()
            started.append(component)
        deadline = time.monotonic() + MIGRATE_TIMEOUT
        failures = [problem for component in started
                    if (problem := self._wait_migration(component, deadline))]
        if failures:
            raise StackError("\n\n".join(failures))

    @staticmethod
    def _wait_migration(component: Detached, deadline: float) -> str | None:
        """None on success, else what went wrong with the end of its log."""
        assert component.popen is not None
        try:
            code = component.popen.wait(max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            component.kill()
            code = None
        component.pid_file.unlink(missing_ok=True)
        if code == 0:
            component.done_file.write_text(f"{tail(component.log_file, 1)}\n")
            return None
        what = "did not finish in time" if code is None else f"failed (exit {code})"
        return f"{component.name} {what}\n--- {component.log_file}\n{tail(component.log_file, 15)}"

    def down(self, timeout: float = 15.0) -> None:
        """Stop everything this var dir's stack started; harmless when nothing runs."""
        apps = [self.component(n) for n in self.app_names()]
        strays = self._stray_pid_files()
        pgids = [pid for c in apps if (pid := c.pid()) is not None] + strays
        for pgid in pgids:
            signal_group(pgid, signal.SIGTERM)
        wait_for(lambda: not any(group_members(g) for g in pgids), timeout)
        for pgid in pgids:
            if group_members(pgid):
                stop_group(pgid, 0, signal.SIGKILL)
            pid_alive(pgid)
        for pattern in ("*.pid", "*.done"):
            for path in self.run_dir.glob(pattern) if self.run_dir.exists() else []:
                if path.stem not in INFRA:
                    path.unlink(missing_ok=True)
        for name in ("nginx", "rabbitmq", "postgres"):
            self.component(name).stop(None)
        self.state_file.unlink(missing_ok=True)

    def _stray_pid_files(self) -> list[int]:
        """Processes recorded in run/ but no longer in the topology (e.g. fewer workers now)."""
        known = set(self.names())
        pids = []
        for path in self.run_dir.glob("*.pid") if self.run_dir.exists() else []:
            if path.stem not in known and (pid := read_pid_file(path)) is not None:
                pids.append(pid)
        return pids

    def status(self) -> list[ProcessStatus]:
        result = []
        for name in self.names():
            component = self.component(name)
            pid = component.pid()
            finished = isinstance(component, Detached) and component.finished()
            state = "up" if pid is not None else "done" if finished else "down"
            result.append(ProcessStatus(name, pid, pid is not None, component.port,
                                        component.log_file, state))
        return result

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (default SIGKILL: a crash, no clean-up) to one named process."""
        self.component(name).kill(sig)

    def start(self, name: str, timeout: float = APP_READY_TIMEOUT) -> None:
        """Start one named process (if not running) and wait until it is ready."""
        self._start_and_wait(name, timeout)

    def restart(self, name: str, hard: bool = True) -> None:
        """Kill -9 (hard) or stop gracefully, then start again and wait until ready."""
        if hard:
            self.kill(name)
        else:
            self.component(name).stop(None)
        self.start(name)

    def destroy(self) -> None:
        """`down`, then delete every file of this stack (including a relocated PG cluster)."""
        self.down()
        postgres = self.component("postgres")
        assert isinstance(postgres, PostgresComponent)
        postgres.cluster.destroy()
        shutil.rmtree(self.stack_dir, ignore_errors=True)


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks of the process and its reaped children) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), sum(int(x) for x in fields[11:15])  # utime stime cutime cstime


@contextlib.contextmanager
def throwaway_servers(folder: str | os.PathLike[str], **stack_options: Any) -> Iterator[Stack]:
    """RabbitMQ, PostgreSQL and nginx of a stack in ``folder`` on free ports, for a
    benchmark: always destroyed afterwards, its progress printed to stderr."""
    stack = Stack(folder, Ports.find_free(),
                  say=lambda message: print(f"    [stack] {message}", file=sys.stderr,
                                            flush=True), **stack_options)
    try:
        started = time.monotonic()
        stack.up(apps=False)
        stack.say(f"up in {time.monotonic() - started:.0f}s")
        yield stack
    finally:
        stack.destroy()


def _check_nginx_config(argv: list[str]) -> None:
    """`nginx -t` first, so a bad config reads as a config error rather than a crash."""
    result = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise StackError(f"generated nginx configuration is invalid:\n{result.stderr}")
