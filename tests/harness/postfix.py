"""A private Postfix instance (own config, queue and maillog dirs) and an smtp-sink relay target.

Delivery choice: `mydestination = example.org` with `local_recipient_maps =` and
`local_transport = lmtp:unix:<cyrus socket>`, so Postfix hands every example.org recipient to
Cyrus itself and lets Cyrus decide (550 5.1.1 for a missing mailbox), like the lmtp: transport
the design's fold rule relies on for retries. `relay.test` goes to smtp-sink via a transport map,
so tests have non-local recipients. Several instances coexist: each has its own queue dir (the
master.pid lock lives there) and its own ports; Debian's default instance (/etc/postfix, not
configured here) is untouched.

`resolv_conf=`: Postfix's DNS lookups go through the C library, which reads only
/etc/resolv.conf; such an instance is started in a mount namespace of its own (`unshare
--mount`, we are root) where that file is bind-mounted over /etc/resolv.conf. Its master and
every child it spawns stay in that namespace; the rest of the machine keeps its resolver.
"""

from __future__ import annotations

import contextlib
import json
import os
import smtplib
import time
from collections.abc import Mapping
from pathlib import Path

from .process import (
    LOOPBACK,
    DaemonError,
    ManagedProcess,
    accepts,
    chown,
    free_port,
    log_tail,
    run,
    wait_closed,
)

MYHOSTNAME = "mx.example.org"
LOCAL_DOMAIN = "example.org"
RELAY_DOMAIN = "relay.test"

# master.cf: chroot "n" everywhere (nothing populates a chroot in a temp dir).
_MASTER_CF = """\
{smtpd_listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class SmtpSink:
    """Postfix's smtp-sink: accepts everything and dumps each message to a file in a dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = LOOPBACK
        self.port = free_port()
        self.dump_dir = root / "messages"
        self.log_path = root / "smtp-sink.log"
        self._proc: ManagedProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self, timeout: float = 10) -> None:
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        chown(self.dump_dir, "postfix")  # smtp-sink drops to user postfix
        argv = [
            "/usr/sbin/smtp-sink",
            "-u",
            "postfix",
            "-d",
            f"{self.dump_dir}/%H%M%S.",
            f"{self.host}:{self.port}",
            "64",
        ]
        self._proc = ManagedProcess("smtp-sink", argv, self.log_path)
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)

    @property
    def process(self) -> ManagedProcess | None:
        return self._proc

    def messages(self) -> list[bytes]:
        """Every transaction received so far (smtp-sink's dump format: envelope + message)."""
        return [p.read_bytes() for p in sorted(self.dump_dir.iterdir())]

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.address])


class Postfix:
    """One private Postfix: `postfix -c DIR check/start/stop`, smtpd on a free loopback port."""

    def __init__(
        self,
        root: Path,
        lmtp_socket: Path,
        relay_address: tuple[str, int],
        milter: str | None = None,
        main_cf: Mapping[str, str] | None = None,
        master_extra: str = "",
        host: str = LOOPBACK,
        resolv_conf: Path | None = None,
    ) -> None:
        self.root = root
        self.host = host
        self.resolv_conf = resolv_conf
        self.port = free_port()
        self.master_extra = master_extra  # more master.cf services (see reinject_service)
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"
        self.data_dir = root / "data"
        self.maillog = root / "maillog"
        self.lmtp_socket = lmtp_socket
        self.relay_address = relay_address
        self.milter = milter
        self.extra_main_cf = dict(main_cf or {})

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def main_cf(self) -> dict[str, str]:
        """The main.cf parameters; `main_cf=` given to the constructor overrides any of them."""
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "myhostname": MYHOSTNAME,
            "mydomain": LOCAL_DOMAIN,
            "myorigin": LOCAL_DOMAIN,
            "mydestination": LOCAL_DOMAIN,
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "local_transport": f"lmtp:unix:{self.lmtp_socket}",
            "relay_domains": RELAY_DOMAIN,
            "transport_maps": f"texthash:{self.config_dir / 'transport'}",
            "disable_dns_lookups": "yes",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "no",
            "message_size_limit": str(50 * 1024 * 1024),  # room for the 30 MB test message
            "queue_run_delay": "10s",
            "minimal_backoff_time": "10s",
            "maximal_backoff_time": "30s",
            "milter_default_action": "tempfail",
            "milter_protocol": "6",
            "milter_connect_timeout": "10s",
            "milter_command_timeout": "30s",
            "milter_content_timeout": "120s",
            "smtpd_milters": self.milter or "",
            "non_smtpd_milters": "",
        }
        params.update(self.extra_main_cf)
        return params

    def configure(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        chown(self.data_dir, "postfix", mode=0o700)
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (self.config_dir / "main.cf").write_text(main)
        listen = f"{self.host}:{self.port}"
        master_cf = _MASTER_CF.format(smtpd_listen=listen) + self.master_extra
        (self.config_dir / "master.cf").write_text(master_cf)
        host, port = self.relay_address
        (self.config_dir / "transport").write_text(f"{RELAY_DOMAIN} smtp:[{host}]:{port}\n")
        # Postfix waits (polling 300 ms, ~2 s) while main.cf looks freshly written; backdate it.
        past = time.time() - 60
        for name in ("main.cf", "master.cf", "transport"):
            os.utime(self.config_dir / name, (past, past))
        self.maillog.touch()
        chown(self.maillog, "postfix", mode=0o644)
        self.postfix("check")  # also creates the queue subdirectories

    def postfix(self, *args: str) -> str:
        return run(["/usr/sbin/postfix", "-c", str(self.config_dir), *args], log=self.maillog)

    def start(self, timeout: float = 30) -> None:
        if not (self.config_dir / "main.cf").exists():
            self.configure()
        if self.resolv_conf is None:
            self.postfix("start")
        else:
            unshare = ["/usr/bin/unshare", "--mount", "--propagation", "private"]
            bind = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
            postfix = ["/usr/sbin/postfix", "-c", str(self.config_dir), "start"]
            run(
                [*unshare, "/bin/sh", "-c", bind, "sh", str(self.resolv_conf), *postfix],
                self.maillog,
            )
        self._wait_banner(timeout)

    def _wait_banner(self, timeout: float) -> None:
        """master binds the port itself; a 220 banner proves smtpd really runs."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with smtplib.SMTP(self.host, self.port, timeout=5) as s:
                    code, _ = s.noop()
                    if code == 250:
                        return
            except (OSError, smtplib.SMTPException) as exc:
                last = exc
            time.sleep(0.05)
        raise DaemonError(
            f"postfix smtpd {self.host}:{self.port} not ready: {last!r}\n"
            f"--- {self.maillog} ---\n{log_tail(self.maillog)}"
        )

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 15) -> None:
        """`postfix stop`, then wait until master is gone and the port closed (SIGKILL if not)."""
        pid = self.master_pid()
        if pid is None or not _alive(pid):
            return
        with contextlib.suppress(DaemonError):
            self.postfix("stop")
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, 9)
        wait_closed([self.address], timeout=timeout, what="postfix")

    def running(self) -> bool:
        pid = self.master_pid()
        return pid is not None and _alive(pid) and accepts(self.address)

    # --- queue -----------------------------------------------------------------------------

    def queue(self) -> list[dict[str, object]]:
        """`postqueue -j`: one dict per queued message (queue_id, recipients, reasons...)."""
        out = run(["/usr/sbin/postqueue", "-c", str(self.config_dir), "-j"])
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        return [str(m["queue_id"]) for m in self.queue()]

    def queue_is_empty(self) -> bool:
        return not self.queue()

    def flush(self) -> None:
        """Ask the queue manager to retry every deferred message now."""
        run(["/usr/sbin/postqueue", "-c", str(self.config_dir), "-f"])

    def wait_queue_empty(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.queue_is_empty():
            if time.monotonic() > deadline:
                raise DaemonError(f"postfix queue not empty after {timeout}s: {self.queue()}")
            time.sleep(0.1)


def reinject_service(port: int) -> str:
    """The deployment's re-injection smtpd (its master.cf, 127.0.0.1:10025) as master.cf text:
    no scan milter, for the copies Mailman sends to a list's members, scanned once as the post."""
    return (
        f"{LOOPBACK}:{port} inet n - n - - smtpd\n"
        "  -o smtpd_milters=\n"
        "  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n"
    )


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (PID 1 reaps slowly here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
