"""A tiny /dev/log listener: Cyrus logs only to syslog and this machine runs no syslog daemon.

Without it Cyrus's errors (bad config, permission problems, lmtpd failures) simply vanish.
Only one process can own /dev/log: if a live listener already exists (a real syslogd or another
test session), we leave it alone and say so in our log file.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from pathlib import Path

DEV_LOG = Path("/dev/log")
_PRI = re.compile(rb"^<\d{1,3}>")


class SyslogCatcher:
    """Bind a unix datagram socket at /dev/log and append every message to a file."""

    def __init__(self, log_path: Path, socket_path: Path = DEV_LOG) -> None:
        self.log_path = log_path
        self.socket_path = socket_path
        self.owned = False
        self._inode = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.log_path.touch()
        if self.socket_path.exists() or self.socket_path.is_symlink():
            if _is_live(self.socket_path):
                self._note(f"{self.socket_path} belongs to another listener; not captured here")
                return
            self.socket_path.unlink()  # stale socket left by a crashed session
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.socket_path))
        self.socket_path.chmod(0o666)  # daemons log after dropping root
        self._inode = self.socket_path.stat().st_ino
        sock.settimeout(0.2)
        self._sock = sock
        self.owned = True
        self._thread = threading.Thread(target=self._loop, name="syslog-catcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if sock is not None:
            sock.close()
        if self.owned:
            # A syslog daemon started meanwhile (the deployment's rsyslogd) replaces the
            # socket with its own: removing that one would silence every daemon on the host.
            with contextlib.suppress(FileNotFoundError):
                if self.socket_path.stat().st_ino == self._inode:
                    self.socket_path.unlink()
            self.owned = False

    def _loop(self) -> None:
        with self.log_path.open("ab", buffering=0) as out:
            while (sock := self._sock) is not None:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                out.write(_PRI.sub(b"", data.rstrip(b"\0\n")) + b"\n")

    def _note(self, text: str) -> None:
        with self.log_path.open("a") as out:
            out.write(f"{time.strftime('%H:%M:%S')} harness: {text}\n")


def _is_live(path: Path) -> bool:
    """True if something is receiving on the datagram socket at path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True
