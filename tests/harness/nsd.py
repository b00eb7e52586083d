"""NSD (Debian's authoritative name server) on a loopback port, serving one test zone: the
DNS `mailglue dns --check` asks, with nothing leaving the machine. `start(..., signed=True)`
serves the zone DNSSEC-signed (ldns-keygen / ldns-signzone from Debian's ldnsutils); its
`trust_anchor` (the KSK's DS record) is what a validating resolver must be given."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.harness.process import LOOPBACK, ManagedProcess, free_port, run


class Nsd:
    def __init__(self, root: Path, zone: str) -> None:
        self.root = root
        self.zone = zone.rstrip(".")
        self.host = LOOPBACK
        self.port = free_port()
        self.log_path = root / "nsd.log"
        self.trust_anchor = ""  # the KSK's DS record, once a signed zone is served
        self._proc: ManagedProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def start(
        self,
        records: str,
        timeout: float = 30,
        signed: bool = False,
        forge: Callable[[str], str] | None = None,
    ) -> None:
        """Serve `records` (zone-file lines with absolute names) under a minimal SOA and NS;
        `signed`: DNSSEC-signed with a fresh KSK and ZSK (ECDSA P-256, NSEC). `forge` edits
        the signed zone's text after signing: what it changes no longer matches its
        signatures, as an answer forged on the way would not (a validator finds it bogus)."""
        self.root.mkdir(parents=True, exist_ok=True)
        origin = self.zone + "."
        zone_file = self.root / "zone"
        zone_file.write_text(
            f"$ORIGIN {origin}\n$TTL 3600\n"
            f"@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300\n"
            f"@ IN NS ns.{origin}\nns IN A 127.0.0.1\n{records}",
            encoding="utf-8",
        )
        if signed:
            zone_file = self._sign(zone_file)
            if forge is not None:
                zone_file.write_text(forge(zone_file.read_text(encoding="utf-8")), "utf-8")
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
            f"zone:\n  name: {self.zone}\n  zonefile: {zone_file}\n",
            encoding="utf-8",
        )
        self._proc = ManagedProcess("nsd", ["/usr/sbin/nsd", "-d", "-c", str(conf)], self.log_path)
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)

    def _sign(self, zone_file: Path) -> Path:
        """Sign the zone file with a new key pair; return the signed file, keep the DS."""
        keys = self.root / "keys"
        keys.mkdir(exist_ok=True)
        names = []
        for ksk in (False, True):
            argv = ["/usr/bin/ldns-keygen", "-a", "ECDSAP256SHA256", *(["-k"] if ksk else [])]
            # ldns-keygen writes K<zone>+013+<id>.{key,private,ds} into its working directory
            out = subprocess.run(
                [*argv, self.zone],
                cwd=keys,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            names.append(str(keys / out.stdout.strip()))
        signed = self.root / "zone.signed"
        run(["/usr/bin/ldns-signzone", "-f", str(signed), str(zone_file), *names])
        self.trust_anchor = " ".join(Path(names[1] + ".ds").read_text().split())
        return signed

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.address])
            self._proc = None
