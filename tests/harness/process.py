"""Process plumbing shared by every daemon fixture.

Readiness is proven by connecting, never by sleeping: a daemon is ready when its socket accepts.
Stopping waits for the socket to stop accepting, because killed daemons here linger as zombies
for ~2 s (PID 1 reaps slowly) and ``kill -0`` keeps succeeding meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"

Address = tuple[str, int] | Path
"""A TCP (host, port) pair or the path of a unix stream socket."""


class DaemonError(RuntimeError):
    """A daemon died or never became ready; the message carries its log tail."""


def free_port() -> int:
    """Ask the kernel for an unused loopback port (the tiny bind race is acceptable in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as this is open: bound, never
    listening, so no other program can take it meanwhile (a port merely found free once can
    be anyone's by the time a test uses it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        yield int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note that it is missing, for error messages."""
    try:
        data = path.read_bytes()
    except OSError:
        return f"(no log at {path})"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:]) or f"(empty log {path})"


def make_traversable(path: Path) -> None:
    """Let unprivileged daemon users (cyrus, postfix, ...) reach files under a 0700 pytest dir."""
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == 0 and not st.st_mode & stat.S_IXOTH:
            p.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH | stat.S_IXGRP)


def chown(path: Path, user: str, group: str | None = None, mode: int | None = None) -> None:
    """Hand a file or directory to a daemon's user (the harness runs as root)."""
    import grp
    import pwd

    pw = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    os.chown(path, pw.pw_uid, gid)
    if mode is not None:
        path.chmod(mode)


def accepts(address: Address, timeout: float = 0.5) -> bool:
    """True if a stream connection to the address succeeds right now."""
    if isinstance(address, Path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = str(address)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = address
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def describe(address: Address) -> str:
    """Human-readable address for error messages."""
    return str(address) if isinstance(address, Path) else f"{address[0]}:{address[1]}"


def run(argv: Sequence[str], log: Path | None = None, timeout: float = 60) -> str:
    """Run a helper command to completion; raise with its output (and a log tail) on failure."""
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        tail = f"\n--- {log} ---\n{log_tail(log)}" if log else ""
        raise DaemonError(
            f"{' '.join(argv)} exited {res.returncode}\n{res.stdout}{res.stderr}{tail}"
        )
    return res.stdout


class ManagedProcess:
    """A foreground daemon we own: output to a log file, own process group, reliable stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        extra_logs: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.extra_logs = list(extra_logs)
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process in its own session so stop() can signal its whole group."""
        if self.running():
            raise DaemonError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, address: Address, timeout: float = 30) -> None:
        """Poll until the address accepts; fail fast with the log tail if the process died."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            if accepts(address):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise DaemonError(
                    f"{self.name} exited with {self.proc.returncode} before "
                    f"{describe(address)} accepted\n{self._tails()}"
                )
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"{self.name}: {describe(address)} not accepting after {timeout}s\n"
                    f"{self._tails()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _tails(self) -> str:
        return "\n".join(f"--- {p} ---\n{log_tail(p)}" for p in [self.log_path, *self.extra_logs])

    def stop(self, addresses: Sequence[Address] = (), timeout: float = 10) -> None:
        """SIGTERM the leader, SIGKILL the group after a grace period, wait for sockets to close."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # the leader shuts its own workers down cleanly
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        # Children (preforked workers) may outlive the leader: make sure the group is gone.
        _signal_group(proc.pid, signal.SIGKILL)
        self.proc = None
        wait_closed(addresses, timeout=timeout, what=self.name)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_closed(addresses: Sequence[Address], timeout: float = 10, what: str = "daemon") -> None:
    """Wait until none of the addresses accepts any more (zombie listeners linger briefly)."""
    deadline = time.monotonic() + timeout
    for address in addresses:
        while accepts(address, timeout=0.2):
            if time.monotonic() > deadline:
                raise DaemonError(f"{what}: {describe(address)} still accepting after stop")
            time.sleep(0.05)


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    """Poll for an asynchronous effect (a queued mail delivered); fail naming what we awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
