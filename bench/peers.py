"""The peers mailglue is compared with, as Debian ships them, each on its own loopback port.

- spamass-milter + clamav-milter, chained in Postfix's smtpd_milters (the classic milter pair);
- amavisd-new after the queue (content_filter → amavisd → re-injection smtpd), its usual setup,
  with SpamAssassin in-process (it does not use spamd) reading spamd's own site config.

Thresholds as in the issue: tag 3.0, kill 5.0 where the peer has both knobs (amavisd-new);
spamass-milter only has a reject level (-r 5) and tags at SpamAssassin's required_score. Only
clean mail is sent, so the thresholds decide nothing here; they are set for honesty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.harness.clamd import Clamd
from tests.harness.process import LOOPBACK, ManagedProcess, chown, free_port, run
from tests.harness.spamd import Spamd

PACKAGES = ("spamass-milter", "clamav-milter", "amavisd-new")


def ensure_installed() -> None:
    """apt-get install the peers if any is missing (noninteractive; no daemon starts here)."""
    missing = []
    for pkg in PACKAGES:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        )
        if "install ok installed" not in res.stdout:
            missing.append(pkg)
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing peers: {' '.join(missing)}", flush=True)
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *missing],
        env=env,
        check=True,
    )


class _LoopbackMilter:
    """A peer milter on a loopback port, run in the foreground under the harness."""

    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: ManagedProcess | None = None

    @property
    def socket(self) -> str:
        """How Postfix's smtpd_milters names it."""
        return f"inet:{LOOPBACK}:{self.port}"

    def _run(self, argv: list[str]) -> None:
        self.process = ManagedProcess(self.name, argv, self.root / f"{self.name}.log")
        self.process.start()
        self.process.wait_ready((LOOPBACK, self.port))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop([(LOOPBACK, self.port)])


class SpamassMilter(_LoopbackMilter):
    """spamass-milter in the foreground; it runs one `spamc` per message against our spamd."""

    name = "spamass-milter"

    def __init__(self, root: Path, spamd: Spamd) -> None:
        super().__init__(root)
        self.spamd = spamd

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            "/usr/sbin/spamass-milter",
            "-p",
            f"inet:{self.port}@{LOOPBACK}",
            "-r",
            "5",  # reject at 5.0 (no -i 127.0.0.1: it would skip all loopback mail)
            "--",
            "-d",
            self.spamd.host,
            "-p",
            str(self.spamd.port),
        ]
        self._run(argv)


class ClamavMilter(_LoopbackMilter):
    """clamav-milter in the foreground, asking our clamd over its unix socket."""

    name = "clamav-milter"

    def __init__(self, root: Path, clamd: Clamd) -> None:
        super().__init__(root)
        self.clamd = clamd

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        chown(self.root, "clamav", mode=0o755)
        conf = self.root / "clamav-milter.conf"
        conf.write_text(
            f"""\
MilterSocket inet:{self.port}@{LOOPBACK}
ClamdSocket unix:{self.clamd.socket_path}
User clamav
Foreground yes
PidFile {self.root / "clamav-milter.pid"}
LogFile {self.root / "clamav-milter.events.log"}
OnInfected Reject
OnFail Defer
AddHeader Replace
MaxFileSize 25M
ReadTimeout 300
"""
        )
        self._run(["/usr/sbin/clamav-milter", "--config-file", str(conf)])


class Amavis:
    """amavisd-new (Debian's `amavisd`) in the foreground with a self-contained config."""

    def __init__(self, root: Path, spamd: Spamd, clamd: Clamd, reinject_port: int) -> None:
        self.root = root
        self.port = free_port()
        self.reinject_port = reinject_port
        self.spamd = spamd
        self.clamd = clamd
        self.children = spamd.max_children  # as many scanning processes as spamd has
        self.process: ManagedProcess | None = None

    def configure(self) -> Path:
        home = self.root / "home"
        for d in (home, home / "tmp", home / "db", home / "var"):
            d.mkdir(parents=True, exist_ok=True)
            chown(d, "amavis", mode=0o750)
        # clamd reads amavis's temp files by path (CONTSCAN): Debian's usual group setup.
        run(["usermod", "-aG", "amavis", "clamav"])
        conf = self.root / "amavisd.conf"
        conf.write_text(
            f"""\
use strict;
$MYHOME = '{home}';
$TEMPBASE = '{home}/tmp';
$db_home = '{home}/db';
$helpers_home = '{home}/var';
$pid_file = '{home}/amavisd.pid';
$lock_file = '{home}/amavisd.lock';
$daemon_user = 'amavis';
$daemon_group = 'amavis';
$myhostname = 'mx.example.org';
$mydomain = 'example.org';
@local_domains_maps = (['.example.org']);
@mynetworks = qw(127.0.0.0/8);
$inet_socket_bind = '127.0.0.1';
$inet_socket_port = {self.port};
@inet_acl = qw(127.0.0.1);
$forward_method = 'smtp:[127.0.0.1]:{self.reinject_port}';
$notify_method = $forward_method;
$max_servers = {self.children};
$child_timeout = 600;
$do_syslog = 0;
$LOGFILE = '{home}/amavis.log';
$log_level = 0;
$enable_db = 0;
$enable_zmq = 0;
$nanny_details_level = 0;
$enable_dkim_verification = 0;
$enable_dkim_signing = 0;
$QUARANTINEDIR = undef;
$virus_admin = undef;
$spam_admin = undef;
$sa_siteconfigpath = '{self.spamd.site_dir}';
$sa_local_tests_only = 1;
$sa_tag_level_deflt = -999;
$sa_tag2_level_deflt = 3.0;
$sa_kill_level_deflt = 5.0;
$sa_mail_body_size_limit = 512*1024;
$final_spam_destiny = D_DISCARD;
$final_virus_destiny = D_DISCARD;
$final_banned_destiny = D_PASS;
$final_bad_header_destiny = D_PASS;
@bypass_spam_checks_maps = (0);
@bypass_virus_checks_maps = (0);
@av_scanners = (
  ['ClamAV-clamd', \\&ask_daemon, ["CONTSCAN {{}}\\n", '{self.clamd.socket_path}'],
    qr/\\bOK$/m, qr/\\bFOUND$/m, qr/^.*?: (?!Infected Archive)(.*) FOUND$/m ],
);
@av_scanners_backup = ();
1;
"""
        )
        return conf

    def start(self) -> None:
        conf = self.configure()
        argv = ["/usr/sbin/amavisd", "-c", str(conf), "foreground"]
        self.process = ManagedProcess("amavisd", argv, self.root / "amavisd.log")
        self.process.start()
        self.process.wait_ready((LOOPBACK, self.port), timeout=120)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop([(LOOPBACK, self.port)], timeout=30)


def amavis_master_cf(amavis_port: int, reinject_port: int, children: int) -> str:
    """master.cf lines: the transport to amavisd and the re-injection smtpd (no filters)."""
    del amavis_port  # the destination is in content_filter; kept for the caller's clarity
    return f"""\
amavisfeed unix - - n - {children} smtp
  -o smtp_data_done_timeout=1200
  -o smtp_send_xforward_command=yes
  -o disable_dns_lookups=yes
{LOOPBACK}:{reinject_port} inet n - n - - smtpd
  -o content_filter=
  -o smtpd_milters=
  -o receive_override_options=no_header_body_checks,no_unknown_recipient_checks,no_milters
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
"""


def have(binary: str) -> bool:
    return shutil.which(binary) is not None
