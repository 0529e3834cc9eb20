"""Detached background processes with pid files, logs and group-wide stopping.

`chancery-stack up` exits while the stack keeps running, and `down` may run from
another shell, so a process is identified by its pid file (pid plus kernel start
time, so a recycled pid is never mistaken for ours). Each process leads its own
session, so a stop signal reaches its whole group (gunicorn workers, beam helpers)
and a Ctrl-C in the caller's terminal reaches none of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path


class StackError(RuntimeError):
    """Something in the stack failed to start or stop; the message says what and why."""


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def pid_alive(pid: int) -> bool:
    """Running and not a zombie (a zombie is dead but still answers kill(pid, 0))."""
    _reap(pid)
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it cannot linger."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, found by scanning /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members


def write_pid_file(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {start_time(pid) or ''}\n")


def read_pid_file(path: Path) -> int | None:
    """The pid recorded in `path` if that very process still runs, else None."""
    try:
        parts = path.read_text().split()
    except FileNotFoundError:
        return None
    if not parts or not parts[0].isdigit():
        return None
    pid = int(parts[0])
    if not pid_alive(pid):
        return None
    if len(parts) > 1 and start_time(pid) != parts[1]:
        return None  # the pid was recycled by an unrelated process
    return pid


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pgid: int, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """`sig` to the group, SIGKILL whatever is left after `timeout`. True if it was graceful."""
    signal_group(pgid, sig)
    if wait_for(lambda: not group_members(pgid), timeout):
        _reap(pgid)
        return True
    signal_group(pgid, signal.SIGKILL)
    wait_for(lambda: not group_members(pgid), 10)
    _reap(pgid)
    return False


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for error messages that explain themselves."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path, pid_path: Path,
          cwd: Path) -> subprocess.Popen[bytes]:
    """Start a detached process (own session) logging to `log_path`; record its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n=== {stamp} chancery-stack starts: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise StackError(f"cannot start {argv[0]}: {exc}") from exc
    write_pid_file(pid_path, proc.pid)
    return proc
