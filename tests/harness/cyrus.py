"""A private Cyrus IMAPD instance: the mailbox store that mail must reach before we say 250.

Choices: `unixhierarchysep: no` and `virtdomains: off` (Debian's defaults), so the mailbox of
alice@example.org is `user.alice`, her folders `INBOX.Junk`. Cyrus logs only to syslog, with
the ident set by `syslog_prefix` below; run a SyslogCatcher to see it.
"""

from __future__ import annotations

import imaplib
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .process import LOOPBACK, DaemonError, ManagedProcess, chown, free_port

CYRUS_USER = "cyrus"
CYRUS_GROUP = "mail"
ADMIN_USER = "cyrusadmin"
ADMIN_PASSWORD = "admin-secret"
SERVERNAME = "mail.example.org"
SASL_REALM = SERVERNAME  # Cyrus asks sasldb for user@servername when no realm is given
SYSLOG_PREFIX = "mailglue-test-cyrus"
_LIBEXEC = Path("/usr/lib/cyrus/bin")


class Cyrus:
    """cyrmaster in the foreground, owning IMAP (TCP), LMTP (unix socket) and LMTP (TCP, -a)."""

    def __init__(self, root: Path, syslog_path: Path | None = None) -> None:
        self.root = root
        self.syslog_path = syslog_path
        self.host = LOOPBACK
        self.imap_port = free_port()
        self.lmtp_port = free_port()
        self.socket_dir = root / "socket"
        self.lmtp_socket = self.socket_dir / "lmtp"
        self.conf_path = root / "imapd.conf"
        self.cyrus_conf_path = root / "cyrus.conf"
        self.sasldb_path = root / "sasldb2"
        self.log_path = root / "cyrmaster.log"
        self._proc: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess | None:
        """The running daemon's process (None when stopped), for fault injection."""
        return self._proc

    @property
    def imap_address(self) -> tuple[str, int]:
        return (self.host, self.imap_port)

    @property
    def lmtp_address(self) -> tuple[str, int]:
        return (self.host, self.lmtp_port)

    # --- lifecycle -------------------------------------------------------------------------

    def configure(self) -> None:
        r = self.root
        # What Debian's makedirs would create (it hard-codes /etc/imapd.conf, so do it here).
        config_subdirs = ("db", "socket", "log", "msg", "proc", "ptclient", "quota", "user", "lock")
        dirs = ["config", "spool", "proc", "lock", "sieve", "socket"]
        for d in dirs + [f"config/{sub}" for sub in config_subdirs]:
            (r / d).mkdir(parents=True, exist_ok=True)
            chown(r / d, CYRUS_USER, CYRUS_GROUP, 0o750)
        # Postfix's lmtp client (user postfix) must reach the socket; cyrmaster makes it 0777.
        self.socket_dir.chmod(0o755)
        conf = f"""\
configdirectory: {r / "config"}
defaultpartition: default
partition-default: {r / "spool"}
proc_path: {r / "proc"}
mboxname_lockpath: {r / "lock"}
sievedir: {r / "sieve"}
lmtpsocket: {self.lmtp_socket}
idlesocket: {self.socket_dir / "idle"}
notifysocket: {self.socket_dir / "notify"}
servername: {SERVERNAME}
syslog_prefix: {SYSLOG_PREFIX}
admins: {ADMIN_USER}
proxyservers: {ADMIN_USER}
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {self.sasldb_path}
sasl_mech_list: PLAIN LOGIN
allowplaintext: yes
altnamespace: no
unixhierarchysep: no
virtdomains: off
lmtp_downcase_rcpt: yes
duplicatesuppression: yes
hashimapspool: true
idlemethod: poll
umask: 077
"""
        self.conf_path.write_text(conf)
        c = str(self.conf_path)
        self.cyrus_conf_path.write_text(
            f"""\
START {{
  recover cmd="ctl_cyrusdb -C {c} -r"
}}
SERVICES {{
  imap     cmd="imapd -C {c}" listen="{self.host}:{self.imap_port}" prefork=0 maxchild=50
  lmtpunix cmd="lmtpd -C {c}" listen="{self.lmtp_socket}" prefork=0 maxchild=20
  lmtp     cmd="lmtpd -C {c} -a" listen="{self.host}:{self.lmtp_port}" prefork=0 maxchild=20
}}
EVENTS {{
  checkpoint cmd="ctl_cyrusdb -C {c} -c" period=30
}}
"""
        )
        self.add_user(ADMIN_USER, ADMIN_PASSWORD)

    def start(self, timeout: float = 30) -> None:
        if not self.conf_path.exists():
            self.configure()
        argv = [
            str(_LIBEXEC / "master"),
            "-C",
            str(self.conf_path),
            "-M",
            str(self.cyrus_conf_path),
            "-p",
            str(self.root / "cyrmaster.pid"),
        ]  # no -d: stay in the foreground so the harness owns the process
        extra = [self.syslog_path] if self.syslog_path else []
        self._proc = ManagedProcess("cyrmaster", argv, self.log_path, extra_logs=extra)
        self._proc.start()
        for address in (self.imap_address, self.lmtp_address, self.lmtp_socket):
            self._proc.wait_ready(address, timeout=timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.imap_address, self.lmtp_address, self.lmtp_socket])

    # --- users and mailboxes ---------------------------------------------------------------

    def add_user(self, user: str, password: str) -> None:
        """Create or update a sasldb user (imapd reads the file as cyrus)."""
        res = subprocess.run(
            ["saslpasswd2", "-p", "-c", "-f", str(self.sasldb_path), "-u", SASL_REALM, user],
            input=password,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise DaemonError(f"saslpasswd2 {user}: {res.stdout}{res.stderr}")
        chown(self.sasldb_path, CYRUS_USER, CYRUS_GROUP, 0o640)

    def create_mailbox(self, user: str) -> None:
        """IMAP CREATE user.<user> as the admin (what Cyrus does at a user's first login)."""
        with self.imap() as imap:
            _ok(imap.create(f"user.{user}"), f"CREATE user.{user}")

    def mailboxes(self) -> list[str]:
        """All user mailboxes, as the admin sees them."""
        with self.imap() as imap:
            typ, data = imap.list('""', "user.*")
            _ok((typ, data), "LIST")
        names = []
        for line in data:
            if isinstance(line, bytes):
                m = re.search(rb'"?([^" ]+)"?$', line)
                if m:
                    names.append(m.group(1).decode())
        return names

    def messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Full RFC 822 bytes of every message in the user's folder (via admin proxy login)."""
        with self.imap(as_user=user) as imap:
            _ok(imap.select(folder, readonly=True), f"SELECT {folder}")
            typ, data = imap.uid("SEARCH", "ALL")
            _ok((typ, data), "SEARCH")
            uids = data[0].split() if data and data[0] else []
            result = []
            for uid in uids:
                typ, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                _ok((typ, fetched), "FETCH")
                first = fetched[0]
                if isinstance(first, tuple):
                    result.append(first[1])
            return result

    def count(self, user: str, folder: str = "INBOX") -> int:
        with self.imap(as_user=user) as imap:
            typ, data = imap.status(folder, "(MESSAGES)")
            _ok((typ, data), f"STATUS {folder}")
        m = re.search(rb"MESSAGES (\d+)", data[0] if isinstance(data[0], bytes) else b"")
        if not m:
            raise DaemonError(f"unexpected STATUS reply {data!r}")
        return int(m.group(1))

    def imap(self, as_user: str | None = None) -> imaplib.IMAP4:
        """An IMAP session as the admin, or as `as_user` authorized by the admin (proxy auth)."""
        imap = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        try:
            if as_user is None:
                imap.login(ADMIN_USER, ADMIN_PASSWORD)
            else:
                token = f"{as_user}\0{ADMIN_USER}\0{ADMIN_PASSWORD}".encode()
                imap.authenticate("PLAIN", lambda _challenge: token)
        except Exception:
            imap.shutdown()
            raise
        return imap


def _ok(result: tuple[str, Sequence[object]], what: str) -> None:
    typ, data = result
    if typ != "OK":
        raise DaemonError(f"IMAP {what} failed: {typ} {data!r}")
