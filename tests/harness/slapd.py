"""slapd with a tiny directory: the users the policy service and SASL look up.

Data is loaded offline with slapadd before the first start (no bind race, no network). slapd
runs in the foreground with `-d`, so its log goes to our file instead of the absent syslog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .process import LOOPBACK, ManagedProcess, chown, free_port, run

SLAPD_USER = "openldap"
BASE_DN = "dc=example,dc=org"
PEOPLE_DN = f"ou=people,{BASE_DN}"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PASSWORD = "ldap-admin-secret"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis", "misc")  # misc: mailHost
# mailQuotaKiB: the schema the Ansible ldap role installs
MAILGLUE_SCHEMA = Path(__file__).parents[2] / "ansible/roles/ldap/files/mailglue.schema"


@dataclass(frozen=True)
class LdapUser:
    """A person entry: `mail` holds the primary address first, then aliases."""

    uid: str
    password: str
    mail: tuple[str, ...]

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{PEOPLE_DN}"


USERS = (
    LdapUser("alice", "alice-secret", ("alice@example.org", "alice.liddell@example.org")),
    LdapUser("bob", "bob-secret", ("bob@example.org", "robert@example.org")),
    LdapUser("carol", "carol-secret", ("carol@example.org",)),
)


def ldif(users: tuple[LdapUser, ...] = USERS) -> str:
    entries = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\n"
        "dc: example\no: mailglue tests\n",
        f"dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n",
    ]
    for u in users:
        mails = "".join(f"mail: {m}\n" for m in u.mail)
        entries.append(
            f"dn: {u.dn}\nobjectClass: inetOrgPerson\nuid: {u.uid}\ncn: {u.uid.title()}\n"
            f"sn: {u.uid.title()}\nuserPassword: {u.password}\n{mails}"
        )
    return "\n".join(entries)


class Slapd:
    """slapd on a loopback port, base dc=example,dc=org, back_mdb in the temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = LOOPBACK
        self.port = free_port()
        self.conf_path = root / "slapd.conf"
        self.data_dir = root / "data"
        self.log_path = root / "slapd.log"
        self._proc: ManagedProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        return f"ldap://{self.host}:{self.port}/"

    def configure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        includes = "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS)
        # A copy in our own directory: the checkout may sit where slapd's user cannot read.
        schema = self.root / MAILGLUE_SCHEMA.name
        schema.write_bytes(MAILGLUE_SCHEMA.read_bytes())
        includes += f"include {schema}\n"
        self.conf_path.write_text(
            f"""\
{includes}
pidfile {self.root / "slapd.pid"}
argsfile {self.root / "slapd.args"}
modulepath /usr/lib/ldap
moduleload back_mdb

access to attrs=userPassword
  by anonymous auth
  by self read
  by * none
access to * by * read

database mdb
maxsize 104857600
suffix "{BASE_DN}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {self.data_dir}
index objectClass eq
index uid,mail eq
"""
        )
        ldif_path = self.root / "people.ldif"
        ldif_path.write_text(ldif())
        run(["slapadd", "-q", "-f", str(self.conf_path), "-l", str(ldif_path)])
        # slapd exits 1 silently when it cannot write its data or pid files.
        for p in [self.root, self.data_dir, *self.data_dir.iterdir()]:
            chown(p, SLAPD_USER)

    def start(self, timeout: float = 30) -> None:
        if not self.conf_path.exists():
            self.configure()
        argv = [
            "/usr/sbin/slapd",
            "-f",
            str(self.conf_path),
            "-h",
            self.uri,
            "-u",
            SLAPD_USER,
            "-g",
            SLAPD_USER,
            "-d",
            "stats",  # foreground, connection/operation log to stderr
        ]
        self._proc = ManagedProcess("slapd", argv, self.log_path)
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.address])
