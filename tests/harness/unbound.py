"""Debian's unbound as a DNSSEC-validating resolver for the tests, on loopback port 53.

Port 53 because the C library's resolver (what Postfix's smtp client uses) has no way to name
another port in resolv.conf; an address of its own (127.0.0.2 or the next free one), because a
deployed unbound may hold 127.0.0.1:53. It knows only the zones it is given: each is a stub to a
test NSD, validated from the trust anchor (DS record) the test hands it; nothing is asked of
the outside world. `resolv_conf` is a resolv.conf naming it, with `options trust-ad` so the C
library passes the AD bit on to Postfix.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.harness.process import DaemonError, ManagedProcess

PORT = 53


def free_loopback_address(port: int = PORT) -> str:
    """The first of 127.0.0.2, .3, ... where both UDP and TCP `port` can be bound now."""
    for last in range(2, 255):
        host = f"127.0.0.{last}"
        with contextlib.ExitStack() as stack:
            try:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                    sock.bind((host, port))
            except OSError:
                continue
            return host
    raise DaemonError(f"no loopback address with port {port} free")


class Unbound:
    def __init__(
        self,
        root: Path,
        stubs: Mapping[str, tuple[str, int]],
        trust_anchors: Sequence[str],
        host: str | None = None,
    ) -> None:
        self.root = root
        self.stubs = dict(stubs)  # zone -> (address, port) of its authoritative server
        self.trust_anchors = list(trust_anchors)
        self.host = host or free_loopback_address()
        self.port = PORT
        self.log_path = root / "unbound.log"
        self.resolv_conf = root / "resolv.conf"
        self._proc: ManagedProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def config(self) -> str:
        lines = [
            "server:",
            f"  interface: {self.host}",
            f"  port: {self.port}",
            "  do-ip6: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{self.root}"',
            f'  pidfile: "{self.root / "unbound.pid"}"',
            '  logfile: ""',  # with -d: stderr, into log_path
            "  use-syslog: no",
            "  verbosity: 1",
            "  val-log-level: 2",  # say why an answer is bogus
            "  do-not-query-localhost: no",  # the test NSD is on loopback
            '  module-config: "validator iterator"',
        ]
        lines += [f'  trust-anchor: "{anchor}"' for anchor in self.trust_anchors]
        for zone, (host, port) in self.stubs.items():
            lines += ["stub-zone:", f'  name: "{zone}"', f"  stub-addr: {host}@{port}"]
        lines += ["remote-control:", "  control-enable: no"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "unbound.conf"
        conf.write_text(self.config(), encoding="utf-8")
        self.resolv_conf.write_text(f"nameserver {self.host}\noptions trust-ad\n", encoding="utf-8")
        self.resolv_conf.chmod(0o644)
        self._proc = ManagedProcess(
            "unbound", ["/usr/sbin/unbound", "-d", "-p", "-c", str(conf)], self.log_path
        )
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.address])
            self._proc = None
