"""A multi-host test bed on this machine: Debian 12 containers with systemd as PID 1.

Why containers and not the machine itself: the split inventory (ldap, scanners, mailstore, mx)
and the systemd half of every role only run for real on separate hosts that boot systemd. Each
container here is such a host: its own root file system (debootstrap, so no image registry is
needed), systemd as PID 1, sshd, an address on a podman bridge this bed creates for itself, and
Ansible reaches it over SSH like any server.

Facts of this machine the commands below depend on (see STACK-NOTES.md): the kernel runs hybrid
cgroups, which podman's default runtime (crun) refuses, so every podman call names runc; root
lacks CAP_SYS_RESOURCE, so containers get lowered rlimits. The containers get CAP_SYS_ADMIN so
that systemd's sandboxing (PrivateTmp, ProtectSystem, ...) can set up mount namespaces, as on a
real server.

    python -m tests.multihost.bed up [--layout split|single]   # idempotent
    python -m tests.multihost.bed status
    python -m tests.multihost.bed down                          # containers and network gone

`up` writes an Ansible inventory directory (hosts.yml + the split inventory's group_vars) and
prints its path.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("MAILGLUE_BED_STATE", "/var/tmp/mailglue-multihost"))
PODMAN = ["podman", "--runtime", "runc"]
NETWORK = "mailglue-mh"
SUBNET = "10.89.60.0/24"
PREFIX = "mh-"  # every container this bed makes is named so; `down` removes only those
DOMAIN = "example.org"
SUITE = "bookworm"
IMAGE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "python3",
    "python3-apt",
    "iproute2",
    "sudo",
    "ca-certificates",
    "procps",
)
# Changing what goes into the image changes its tag, so a stale cached image is never reused.
IMAGE_RECIPE_VERSION = "1"
ULIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=16384:16384"]
SSH_OPTIONS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
    "-o",
    "BatchMode=yes",
]


@dataclasses.dataclass(frozen=True)
class Host:
    """One container: its short name, its address, the inventory groups it is in."""

    name: str
    address: str
    groups: tuple[str, ...]

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def container(self) -> str:
        return PREFIX + self.name


def _net(last: int) -> str:
    return SUBNET.rsplit(".", 1)[0] + f".{last}"


ALL_GROUPS = ("ldap", "scanners", "mailstore", "mx")
LAYOUTS: dict[str, tuple[Host, ...]] = {
    # Every group on one host: the quickest way through each role's systemd half.
    "single": (Host("mail1", _net(10), ALL_GROUPS),),
    # The layout: 1 ldap, 2 scanners, 2 mail stores, 2 MX.
    "split": (
        Host("ldap1", _net(20), ("ldap",)),
        Host("scan1", _net(21), ("scanners",)),
        Host("scan2", _net(22), ("scanners",)),
        Host("store1", _net(23), ("mailstore",)),
        Host("store2", _net(24), ("mailstore",)),
        Host("mx1", _net(25), ("mx",)),
        Host("mx2", _net(26), ("mx",)),
    ),
}


def log(message: str) -> None:
    print(f"[bed] {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str], *, check: bool = True, capture: bool = False, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(argv),
        check=check,
        input=stdin,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )


# --- host packages -------------------------------------------------------------------------------


def ensure_host_packages() -> None:
    """podman, runc and debootstrap from Debian; apt only when one of them is missing."""
    wanted = ["podman", "runc", "debootstrap"]
    missing = [p for p in wanted if run(["dpkg", "-s", p], check=False, capture=True).returncode]
    if missing:
        log(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y"]
        subprocess.run(
            [*apt, "--no-install-recommends", *missing],
            check=True,
            env=env,
        )


# --- image ---------------------------------------------------------------------------------------


def host_ca_files() -> list[Path]:
    """Local CAs this machine trusts; the containers reach the same mirrors through them."""
    return sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))


def image_name() -> str:
    digest = hashlib.sha256()
    digest.update(IMAGE_RECIPE_VERSION.encode())
    digest.update(" ".join(IMAGE_PACKAGES).encode())
    for ca in host_ca_files():
        digest.update(ca.read_bytes())
    return f"localhost/mailglue-{SUITE}-systemd:{digest.hexdigest()[:12]}"


def apt_mirror() -> str:
    """The Debian mirror apt uses here (deb822 sources first, then sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return parts[2] if parts[1].startswith("[") else parts[1]
    return "http://deb.debian.org/debian"


def configure_rootfs(root: Path) -> None:
    """What makes a debootstrap tree a host for this bed: apt sources, CAs, pip, sshd, ids."""
    # The same Debian sources (and so the same package versions) as this machine.
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        shutil.copy(sources, root / "etc/apt/sources.list.d/debian.sources")
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
    for ca in host_ca_files():
        shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
    run(["chroot", str(root), "update-ca-certificates"], capture=True)
    # pip's own CA bundle does not hold the local CAs: point it at the system's.
    (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    # Each container gets its own machine id at first boot (an empty file asks systemd for one).
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # No console in a container: getty would only fail and leave the system degraded.
    for unit in ("getty@tty1.service", "console-getty.service"):
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)


def ensure_image() -> str:
    """Build the image once (debootstrap + import); later calls find it in podman's store."""
    name = image_name()
    if run([*PODMAN, "image", "exists", name], check=False).returncode == 0:
        return name
    STATE.mkdir(parents=True, exist_ok=True)
    root = STATE / "rootfs"
    partial = STATE / "rootfs.partial"
    if not (root / "usr/bin/systemctl").exists():
        shutil.rmtree(partial, ignore_errors=True)
        log(f"debootstrap {SUITE} into {partial} (about a minute)")
        run(
            [
                "nice",
                "-n",
                "10",
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(IMAGE_PACKAGES),
                SUITE,
                str(partial),
                apt_mirror(),
            ]
        )
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
    configure_rootfs(root)
    log(f"importing {name}")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run([*PODMAN, "import", "-", name], stdin=tar.stdout, check=True)
    if tar.wait() != 0:
        raise RuntimeError("tar of the root file system failed")
    return name


# --- network, key, containers --------------------------------------------------------------------


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def ensure_network() -> None:
    """The bed's own bridge. CNI turns IPv4 forwarding on for it and never back off: the value
    before is kept, and `down` puts it back."""
    if run([*PODMAN, "network", "exists", NETWORK], check=False).returncode != 0:
        STATE.mkdir(parents=True, exist_ok=True)
        saved = STATE / "ip_forward.before"
        if not saved.exists():
            saved.write_text(IP_FORWARD.read_text())
        log(f"creating podman network {NETWORK} ({SUBNET})")
        run([*PODMAN, "network", "create", "--subnet", SUBNET, NETWORK], capture=True)


def ensure_key() -> Path:
    key = STATE / "id_ed25519"
    if not key.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailglue-bed", "-f", str(key)])
    return key


def container_running(name: str) -> bool:
    """Running by podman's record and in fact: a run killed with the machine's session leaves
    records that say "running" of containers whose processes are gone, and any exec into
    one fails ("cannot exec in a stopped container")."""
    done = run(
        [*PODMAN, "inspect", "--format", "{{.State.Running}}", name], check=False, capture=True
    )
    if done.returncode != 0 or done.stdout.strip() != b"true":
        return False
    return run([*PODMAN, "exec", name, "true"], check=False, capture=True).returncode == 0


def container_log(name: str) -> str:
    done = run([*PODMAN, "logs", "--tail", "40", name], check=False, capture=True)
    return (done.stdout + done.stderr).decode(errors="replace")


def start_container(host: Host, image: str, hosts: Sequence[Host], key: Path) -> None:
    """Start one host (or leave it running) and let the bed's key in as root."""
    if not container_running(host.container):
        run([*PODMAN, "rm", "-f", host.container], check=False, capture=True)
        add_hosts = [f"--add-host={h.fqdn}:{h.address}" for h in hosts if h != host]
        log(f"starting {host.container} ({host.fqdn}, {host.address})")
        run(
            [
                *PODMAN,
                "run",
                "-d",
                "--name",
                host.container,
                "--hostname",
                host.fqdn,
                "--network",
                NETWORK,
                "--ip",
                host.address,
                *add_hosts,
                "--systemd=always",
                "--cap-add=SYS_ADMIN",
                "--cap-add=NET_ADMIN",  # the firewall role's nftables rules
                *ULIMITS,
                image,
                "/sbin/init",
            ],
            capture=True,
        )
        if not container_running(host.container):
            raise RuntimeError(
                f"{host.container} stopped as soon as it started; its log:\n"
                + container_log(host.container)
            )
    public = (key.with_suffix(".pub")).read_bytes()
    run(
        [
            *PODMAN,
            "exec",
            "-i",
            host.container,
            "sh",
            "-c",
            "umask 077; mkdir -p /root/.ssh; cat > /root/.ssh/authorized_keys",
        ],
        stdin=public,
    )


def ssh(
    host: Host, key: Path, command: str, *, check: bool = False
) -> subprocess.CompletedProcess[bytes]:
    return run(
        ["ssh", "-i", str(key), *SSH_OPTIONS, f"root@{host.address}", command],
        check=check,
        capture=True,
    )


def wait_booted(host: Host, key: Path, timeout: float = 120) -> str:
    """systemd's own verdict once boot is over: running (or degraded, with the failed units)."""
    deadline = time.monotonic() + timeout
    while True:
        done = ssh(host, key, "systemctl is-system-running --wait")
        state = done.stdout.decode().strip()
        if state in ("running", "degraded"):
            if state == "degraded":
                failed = ssh(host, key, "systemctl --failed --plain --no-legend").stdout.decode()
                log(f"{host.fqdn} is degraded: {failed.strip()}")
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host.fqdn}: no SSH/systemd answer ({state or done.stderr!r})")
        time.sleep(1)


# --- inventory -----------------------------------------------------------------------------------

# Where the bed differs from the split inventory's example network (192.0.2.0/24). Host vars,
# as they must win over the split inventory's group_vars.
# This machine on the bed's bridge: the "outside world" of the bed (a stand-in MX, as in the
# single inventory, which the MX hosts relay everything not ours to).
GATEWAY = _net(1)
OUTSIDE_MX_PORT = 2526
HOST_VARS = {
    "spamassassin_allowed_ips": f"127.0.0.1,{SUBNET}",
    "mail_relayhost": f"[{GATEWAY}]:{OUTSIDE_MX_PORT}",
    "mail_service_manager": "systemd",
    # As in the single inventory, for the same reason: the only DNS reachable from here is this
    # machine's resolver, which answers without DNSSEC, so unbound forwards to it unvalidated.
    "resolver_forward_to_upstream": True,
    "resolver_root_trust_anchor": False,
}


def inventory(hosts: Sequence[Host], key: Path) -> dict[str, object]:
    """The split inventory's groups, with these containers as members, reached over SSH."""
    groups: dict[str, object] = {
        group: {"hosts": {h.fqdn: None for h in hosts if group in h.groups}} for group in ALL_GROUPS
    }
    return {
        "all": {
            "hosts": {
                h.fqdn: {"ansible_host": h.address, "bed_container": h.container, **HOST_VARS}
                for h in hosts
            },
            "children": groups,
            "vars": {
                "ansible_connection": "ssh",
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": " ".join(SSH_OPTIONS[:6]),
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        }
    }


def write_inventory(layout: str, hosts: Sequence[Host], key: Path) -> Path:
    """An inventory directory: hosts.yml here, group_vars from the inventory of the same name
    (the single one turns on webmail and mailing lists, so their roles run under systemd too)."""
    directory = STATE / f"inventory-{layout}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(
        "# Written by tests/multihost/bed.py; rewritten by every `up`.\n"
        + yaml.safe_dump(inventory(hosts, key), sort_keys=False)
    )
    link = directory / "group_vars"
    target = REPO / f"ansible/inventories/{layout}/group_vars"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
    return directory


# --- commands ------------------------------------------------------------------------------------


def up(layout: str) -> Path:
    hosts = LAYOUTS[layout]
    ensure_host_packages()
    image = ensure_image()
    ensure_network()
    key = ensure_key()
    for host in hosts:
        start_container(host, image, hosts, key)
    for host in hosts:
        log(f"{host.fqdn}: {wait_booted(host, key)}")
    directory = write_inventory(layout, hosts, key)
    print(directory)
    return directory


def our_containers() -> list[str]:
    done = run(
        [*PODMAN, "ps", "-a", "--filter", f"name=^{PREFIX}", "--format", "{{.Names}}"],
        capture=True,
    )
    return [n for n in done.stdout.decode().split() if n.startswith(PREFIX)]


def down() -> None:
    names = our_containers()
    if names:
        log(f"removing {' '.join(names)}")
        run([*PODMAN, "rm", "-f", "-t", "5", *names], capture=True)
    if run([*PODMAN, "network", "exists", NETWORK], check=False).returncode == 0:
        log(f"removing network {NETWORK}")
        run([*PODMAN, "network", "rm", NETWORK], capture=True)
    saved = STATE / "ip_forward.before"
    if saved.exists():
        log(f"IPv4 forwarding back to {saved.read_text().strip()}")
        IP_FORWARD.write_text(saved.read_text())
        saved.unlink()
    remove_cni_chains()


def remove_cni_chains() -> None:
    """CNI's firewall plugin leaves its two filter chains (and FORWARD's jump to them) behind
    once its last network is gone; take them away when no container at all is left."""
    if run([*PODMAN, "ps", "-a", "-q"], capture=True).stdout.strip():
        return
    jump = ["FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules"]
    while (
        run(["iptables", "-D", *jump, "-j", "CNI-FORWARD"], check=False, capture=True).returncode
        == 0
    ):
        pass
    for chain in ("CNI-FORWARD", "CNI-ADMIN"):
        run(["iptables", "-F", chain], check=False, capture=True)
        run(["iptables", "-X", chain], check=False, capture=True)


def status() -> None:
    done = run(
        [*PODMAN, "ps", "-a", "--filter", f"name=^{PREFIX}", "--format", "json"], capture=True
    )
    for entry in json.loads(done.stdout or b"[]"):
        print(entry["Names"][0], entry["State"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.multihost.bed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="build the image, start the hosts, write an inventory")
    up_parser.add_argument("--layout", choices=sorted(LAYOUTS), default="split")
    sub.add_parser("down", help="remove this bed's containers and network")
    sub.add_parser("status", help="list this bed's containers")
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args.layout)
    elif args.command == "down":
        down()
    else:
        status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
