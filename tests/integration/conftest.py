"""Real-daemon fixtures: spamd, clamd, Cyrus, slapd, Postfix, all in one temp dir on loopback.

Session-scoped because spamd alone takes seconds to load its rules; every daemon is stopped at
session end, also after failures. A failing test's report shows what each daemon logged during
that test (see tests/harness/logs.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from tests.harness.clamd import Clamd
from tests.harness.cyrus import Cyrus
from tests.harness.logs import DaemonLogs
from tests.harness.mailman import Mailman
from tests.harness.milter import ScanMilter
from tests.harness.postfix import Postfix, SmtpSink
from tests.harness.process import LOOPBACK, free_port
from tests.harness.slapd import USERS as LDAP_USERS
from tests.harness.slapd import Slapd
from tests.harness.spamd import Spamd
from tests.harness.syslog_catcher import SyslogCatcher

DAEMON_LOGS = pytest.StashKey[DaemonLogs]()

# Users with a Cyrus mailbox (same passwords as in LDAP) and one SASL user without a mailbox.
MAILBOX_USERS = {u.uid: u.password for u in LDAP_USERS}  # alice, bob, carol
NO_MAILBOX_USER = ("dave", "dave-secret")

MakePostfix = Callable[..., Postfix]


# --- pytest hooks ----------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.stash[DAEMON_LOGS] = DaemonLogs()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[DAEMON_LOGS].mark()  # a failed setup shows what the daemons said


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    item.config.stash[DAEMON_LOGS].mark()  # a failed test shows only its own lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for title, text in item.config.stash[DAEMON_LOGS].sections():
            report.sections.append((title, text))
    return report


# --- infrastructure ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def daemon_logs(pytestconfig: pytest.Config) -> DaemonLogs:
    """Register extra log files here to have them shown when a test fails."""
    return pytestconfig.stash[DAEMON_LOGS]


@pytest.fixture(scope="session")
def stack_root() -> Iterator[Path]:
    """The session's directory for every daemon, outside pytest's 0700 tree.

    Daemons run as their own users (cyrus, postfix, clamav...) and must traverse every parent
    directory; another pytest session resets /tmp/pytest-of-root to 0700 when it starts, which
    would cut a running Cyrus off from its own files. MAILGLUE_KEEP_STACK=1 keeps it.
    """
    root = Path(tempfile.mkdtemp(prefix="mailglue-stack-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        if not os.environ.get("MAILGLUE_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def syslog(stack_root: Path, daemon_logs: DaemonLogs) -> Iterator[SyslogCatcher]:
    """/dev/log catcher: Cyrus logs nowhere else."""
    catcher = SyslogCatcher(stack_root / "syslog.log")
    daemon_logs.register("syslog", catcher.log_path)
    catcher.start()
    try:
        yield catcher
    finally:
        catcher.stop()


# --- daemons ---------------------------------------------------------------------------------


class Daemon(Protocol):
    log_path: Path

    def start(self) -> None: ...

    def stop(self) -> None: ...


D = TypeVar("D", bound=Daemon)


@contextlib.contextmanager
def started(daemon: D, name: str, logs: DaemonLogs) -> Iterator[D]:
    """Start a harness daemon with its log registered; stop it whatever happens."""
    logs.register(name, daemon.log_path)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def spamd(stack_root: Path, daemon_logs: DaemonLogs) -> Iterator[Spamd]:
    with started(Spamd(stack_root / "spamd"), "spamd", daemon_logs) as d:
        yield d


@pytest.fixture(scope="session")
def clamd(stack_root: Path, daemon_logs: DaemonLogs) -> Iterator[Clamd]:
    with started(Clamd(stack_root / "clamd"), "clamd", daemon_logs) as d:
        yield d


@pytest.fixture(scope="session")
def cyrus(stack_root: Path, daemon_logs: DaemonLogs, syslog: SyslogCatcher) -> Iterator[Cyrus]:
    """Cyrus with mailboxes for alice, bob, carol; dave can log in but has no mailbox."""
    d = Cyrus(stack_root / "cyrus", syslog_path=syslog.log_path)
    daemon_logs.register("cyrmaster", d.log_path)
    try:
        d.start()
        for user, password in MAILBOX_USERS.items():
            d.add_user(user, password)
            d.create_mailbox(user)
        d.add_user(*NO_MAILBOX_USER)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def slapd(stack_root: Path, daemon_logs: DaemonLogs) -> Iterator[Slapd]:
    with started(Slapd(stack_root / "slapd"), "slapd", daemon_logs) as d:
        yield d


@pytest.fixture(scope="session")
def smtp_sink(stack_root: Path, daemon_logs: DaemonLogs) -> Iterator[SmtpSink]:
    """Where Postfix relays mail for relay.test (the non-local recipients)."""
    with started(SmtpSink(stack_root / "smtp-sink"), "smtp-sink", daemon_logs) as d:
        yield d


@pytest.fixture(scope="session")
def milter_port() -> int:
    """The fixed port the session's Postfix calls as its milter; a test's milter listens here."""
    return free_port()


@pytest.fixture(scope="session")
def milter_address(milter_port: int) -> str:
    return f"inet:{LOOPBACK}:{milter_port}"


@pytest.fixture(scope="session")
def scan_milter_process(
    stack_root: Path,
    daemon_logs: DaemonLogs,
    milter_port: int,
    spamd: Spamd,
    clamd: Clamd,
    cyrus: Cyrus,
) -> Iterator[ScanMilter]:
    """The scan milter on `milter_port`: scans with the session's spamd and clamd, delivers
    mail for example.org to the session's Cyrus over LMTP before answering the client."""
    milter = ScanMilter(
        stack_root / "milter",
        milter_port,
        {
            "milter": {"hostname": "mx.example.org", "time_budget": 60, "keepalive_interval": 5},
            "spam": {"backends": [f"inet:{spamd.host}:{spamd.port}"], "timeout": 30},
            "virus": {
                "backends": [f"unix:{clamd.socket_path}"],
                "timeout": 30,
                "max_size": 100 * 1024 * 1024,
            },
            "delivery": {
                "mode": "lmtp",
                "local_domains": ["example.org"],
                "lmtp_backend": f"unix:{cyrus.lmtp_socket}",
            },
        },
    )
    daemon_logs.register("milter", milter.log_path)
    daemon_logs.register("milter-events", milter.events_path)
    try:
        yield milter
    finally:
        milter.stop()


@pytest.fixture
def scan_milter(scan_milter_process: ScanMilter) -> ScanMilter:
    """The scan milter with the default test config (restarted if a test changed it)."""
    scan_milter_process.ensure()
    return scan_milter_process


@pytest.fixture(scope="session")
def postfix(
    stack_root: Path,
    daemon_logs: DaemonLogs,
    cyrus: Cyrus,
    smtp_sink: SmtpSink,
    milter_address: str,
) -> Iterator[Postfix]:
    """The session's Postfix, calling the milter at `milter_address`."""
    pf = Postfix(stack_root / "postfix", cyrus.lmtp_socket, smtp_sink.address, milter_address)
    daemon_logs.register("postfix", pf.maillog)
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()


@pytest.fixture
def make_postfix(
    stack_root: Path, daemon_logs: DaemonLogs, cyrus: Cyrus, smtp_sink: SmtpSink
) -> Iterator[MakePostfix]:
    """Factory for extra Postfix instances (own milter/main.cf), stopped at the end of the test."""
    started: list[Postfix] = []
    tmp_path = Path(tempfile.mkdtemp(prefix="test-", dir=stack_root))
    tmp_path.chmod(0o755)

    def make(milter: str | None = None, main_cf: Mapping[str, str] | None = None) -> Postfix:
        root = tmp_path / f"postfix{len(started)}"
        pf = Postfix(root, cyrus.lmtp_socket, smtp_sink.address, milter, main_cf)
        daemon_logs.register(f"postfix:{tmp_path.name}/{root.name}", pf.maillog)
        started.append(pf)
        pf.start()
        return pf

    try:
        yield make
    finally:
        for pf in started:
            pf.stop()


@pytest.fixture(scope="session")
def mailman(stack_root: Path, daemon_logs: DaemonLogs, smtp_sink: SmtpSink) -> Iterator[Mailman]:
    """Mailman 3 core from Debian (REST and LMTP on loopback); what it sends goes to the
    session's smtp-sink. Starting takes 15-30 s; `mailman.reset()` empties it for a test."""
    daemon = Mailman(stack_root / "mailman", smtp_sink.address)
    daemon_logs.register("mailman.log", daemon.mailman_log)
    daemon_logs.register("mailman smtp.log", daemon.smtp_log)
    with started(daemon, "mailman", daemon_logs) as d:
        yield d
