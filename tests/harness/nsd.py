"""NSD (Debian's authoritative name server) on a loopback port, serving one test zone: the
DNS `mailglue dns --check` asks, with nothing leaving the machine."""

from __future__ import annotations

from pathlib import Path

from tests.harness.process import LOOPBACK, ManagedProcess, free_port


class Nsd:
    def __init__(self, root: Path, zone: str) -> None:
        self.root = root
        self.zone = zone.rstrip(".")
        self.host = LOOPBACK
        self.port = free_port()
        self.log_path = root / "nsd.log"
        self._proc: ManagedProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, records: str, timeout: float = 30) -> None:
        """Serve `records` (zone-file lines with absolute names) under a minimal SOA and NS."""
        self.root.mkdir(parents=True, exist_ok=True)
        origin = self.zone + "."
        (self.root / "zone").write_text(
            f"$ORIGIN {origin}\n$TTL 3600\n"
            f"@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300\n"
            f"@ IN NS ns.{origin}\nns IN A 127.0.0.1\n{records}",
            encoding="utf-8",
        )
        conf = self.root / "nsd.conf"
        conf.write_text(
            "server:\n"
            f"  ip-address: {self.host}@{self.port}\n"
            '  username: ""\n'
            '  chroot: ""\n'
            f"  zonesdir: {self.root}\n"
            f"  pidfile: {self.root / 'nsd.pid'}\n"
            f"  xfrdfile: {self.root / 'xfrd.state'}\n"
            f"  zonelistfile: {self.root / 'zone.list'}\n"
            '  database: ""\n'
            "remote-control:\n  control-enable: no\n"
            f"zone:\n  name: {self.zone}\n  zonefile: {self.root / 'zone'}\n",
            encoding="utf-8",
        )
        self._proc = ManagedProcess("nsd", ["/usr/sbin/nsd", "-d", "-c", str(conf)], self.log_path)
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.address])
            self._proc = None
