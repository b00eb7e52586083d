"""slapd configured by the Ansible ldap role's own slapd.conf template, provider or consumer.

The replication test must exercise what the role deploys, not a second copy of its directives
that could drift, so the template is rendered here with Jinja2 as Ansible would render it. Only
the paths a test cannot use (/run/slapd, the schema installed under /etc/ldap) are moved into
the test's directory, and each of them must appear exactly once, so a template change that
moves them fails loudly here instead of silently testing something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jinja2

from .process import LOOPBACK, ManagedProcess, chown, free_port, run
from .slapd import MAILGLUE_SCHEMA, SLAPD_USER

ROLE = Path(__file__).resolve().parents[2] / "ansible/roles/ldap"
TEMPLATE = ROLE / "templates/etc/ldap/slapd.conf.j2"


def render_role_conf(settings: Mapping[str, object]) -> str:
    """slapd.conf as the role's template makes it from these role variables.

    Ansible renders templates with trim_blocks on; StrictUndefined makes a variable the
    template gained but the test does not give an error rather than an empty string.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["bool"] = ansible_bool
    context = {"ansible_managed": "rendered by tests/harness/slapd_role.py", **settings}
    return env.get_template(TEMPLATE.name).render(context)


def ansible_bool(value: object) -> bool:
    """Ansible's `bool` filter: a switch set on the command line arrives as a string."""
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true", "y", "t")
    return bool(value)


def relocate(conf: str, root: Path) -> str:
    """Point the deployed run-time and schema paths into `root`."""
    moves = {
        "/run/slapd/slapd.pid": root / "slapd.pid",
        "/run/slapd/slapd.args": root / "slapd.args",
        "/etc/ldap/schema/mailglue.schema": root / MAILGLUE_SCHEMA.name,
    }
    for old, new in moves.items():
        if conf.count(old) != 1:
            raise ValueError(f"the role's slapd.conf names {old} {conf.count(old)} times, not once")
        conf = conf.replace(old, str(new))
    return conf


def hash_password(secret: str) -> str:
    """An {SSHA} hash, as the role's ssha_file module stores the rootpw."""
    return run(["slappasswd", "-h", "{SSHA}", "-s", secret]).strip()


class RoleSlapd:
    """One slapd on a loopback port, its slapd.conf rendered from the role's template."""

    def __init__(self, root: Path, name: str, settings: Mapping[str, object]) -> None:
        self.root = root
        self.name = name
        self.port = free_port()
        self.data_dir = root / "data"
        self.conf_path = root / "slapd.conf"
        self.log_path = root / "slapd.log"
        self.settings = {**settings, "ldap_database_dir": str(self.data_dir)}
        self._proc: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        return f"ldap://{LOOPBACK}:{self.port}/"

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def configure(self, ldif: str | None = None) -> None:
        """Write slapd.conf (checked with slaptest) and load `ldif` offline, if given."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        (self.root / MAILGLUE_SCHEMA.name).write_bytes(MAILGLUE_SCHEMA.read_bytes())
        self.conf_path.write_text(relocate(render_role_conf(self.settings), self.root))
        run(["slaptest", "-u", "-f", str(self.conf_path)])
        if ldif is not None:
            ldif_path = self.root / "load.ldif"
            ldif_path.write_text(ldif)
            # -w: the provider's contextCSN, so a replica's first refresh knows where it stands.
            run(["slapadd", "-q", "-w", "-f", str(self.conf_path), "-l", str(ldif_path)])
        for p in [self.root, self.data_dir, *self.data_dir.iterdir()]:
            chown(p, SLAPD_USER)

    def start(self, timeout: float = 30) -> None:
        argv = ["/usr/sbin/slapd", "-f", str(self.conf_path), "-h", self.uri]
        argv += ["-u", SLAPD_USER, "-g", SLAPD_USER, "-d", "stats,sync"]
        self._proc = ManagedProcess(self.name, argv, self.log_path)
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.address])

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()
