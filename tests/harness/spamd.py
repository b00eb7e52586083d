"""spamd, offline and deterministic, with test rules that put a message at an exact score.

The milter's bands (>3.0 tag, >=5.0 reject) are checked at their edges, so a test message must
score exactly its test rule: incidental rules that fire on well-formed test mail are zeroed here.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from .process import LOOPBACK, DaemonError, ManagedProcess, chown, free_port, log_tail

SPAMD_USER = "debian-spamd"
SA_CONFIG_DIR = Path("/etc/spamassassin")

TESTS_HEADER = "Mailglue-Tests"
"""spamd adds `X-Spam-Mailglue-Tests: RULE=score,...` at full precision (SPAMC HEADERS)."""


@dataclass(frozen=True)
class TestRule:
    """A body rule: `token` anywhere in the body makes rule `name` fire with exactly `score`."""

    __test__ = False  # not a pytest test class

    name: str
    token: str
    score: Decimal


def _rule(score: str) -> TestRule:
    suffix = score.replace(".", "_")
    return TestRule(f"MG_TEST_{suffix}", f"MAILGLUE_SCORE_{suffix}", Decimal(score))


RULE_3_0 = _rule("3.0")
RULE_3_1 = _rule("3.1")
RULE_4_0 = _rule("4.0")
RULE_4_9 = _rule("4.9")
RULE_4_999 = _rule("4.999")
RULE_5_0 = _rule("5.0")
TEST_RULES = (RULE_3_0, RULE_3_1, RULE_4_0, RULE_4_9, RULE_4_999, RULE_5_0)

# Stock rules that fire on the harness's test messages, found with SPAMC REPORT against this
# spamd. Zeroed in this TEST-ONLY config so a message scores exactly its test rule.
INCIDENTAL_RULES = {
    # -1.0: every relay in the Received header is trusted (127.0.0.1, as in all loopback tests).
    "ALL_TRUSTED": "-1.0 on every loopback-relayed test message",
    # -0.001 each when scanned without a Received header (Postfix does not pass its own
    # Received header to milters; a milter that forgets to build one must not shift scores).
    "NO_RECEIVED": "-0.001 without a Received header",
    "NO_RELAYS": "-0.001 without a Received header",
    # +0.6 (with MISSING_HEADERS etc. for bare messages): tests of the derived Message-ID send
    # mail without one on purpose and still want exact score bands.
    "MISSING_MID": "+0.6 on messages sent without a Message-ID on purpose",
}


def local_cf() -> str:
    """The whole test-only local.cf."""
    lines = [
        "# mailglue integration tests: offline, deterministic, no learning.",
        "use_bayes 0",
        "bayes_auto_learn 0",
        "dns_available no",
        "skip_rbl_checks 1",
        "use_razor2 0",
        "use_pyzor 0",
        "report_contact postmaster@example.org",
        "required_score 5.0",
        "# The milter reads per-test scores at full precision from this header.",
        "add_header all Mailglue-Tests _TESTSSCORES(,)_",
        "",
        "# Test rules with exact scores.",
    ]
    for r in TEST_RULES:
        lines += [
            f"body {r.name} /\\b{r.token}\\b/",
            f"describe {r.name} mailglue test rule, scores exactly {r.score}",
            f"score {r.name} {r.score}",
        ]
    lines += ["", "# Incidental rules zeroed so test messages score their test rule only."]
    for name, why in INCIDENTAL_RULES.items():
        lines += [f"# {why}", f"score {name} 0"]
    return "\n".join(lines) + "\n"


class Spamd:
    """One spamd on a loopback port; slow to start (~several s), so one per test session."""

    def __init__(self, root: Path, max_children: int = 5, extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.host = LOOPBACK
        self.port = free_port()
        self.site_dir = root / "site"
        self.home_dir = root / "home"
        self.log_path = root / "spamd.log"
        self.max_children = max_children
        self.extra_args = extra_args
        self._proc: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess | None:
        """The running daemon's process (None when stopped), for fault injection."""
        return self._proc

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def configure(self) -> None:
        self.site_dir.mkdir(parents=True, exist_ok=True)
        for pre in SA_CONFIG_DIR.glob("*.pre"):
            shutil.copy(pre, self.site_dir / pre.name)
        (self.site_dir / "local.cf").write_text(local_cf())
        self.home_dir.mkdir(exist_ok=True)
        chown(self.home_dir, SPAMD_USER, mode=0o700)

    def start(self, timeout: float = 60) -> None:
        if not (self.site_dir / "local.cf").exists():
            self.configure()
        argv = [
            "/usr/sbin/spamd",
            "-L",
            "-x",
            f"--listen={self.host}:{self.port}",
            f"--allowed-ips={self.host}",
            f"--username={SPAMD_USER}",
            f"--groupname={SPAMD_USER}",
            f"--siteconfigpath={self.site_dir}",
            f"--helper-home-dir={self.home_dir}",
            f"--max-children={self.max_children}",
            "--syslog=stderr",
            *self.extra_args,
        ]
        self._proc = ManagedProcess("spamd", argv, self.log_path)
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)
        self._ping(timeout)

    def _ping(self, timeout: float) -> None:
        """The parent accepts before its children have loaded the rules: wait for a PONG.

        (The bare readiness connect before this logs a harmless "bad protocol" warning.)
        """
        try:
            with socket.create_connection(self.address, timeout=timeout) as s:
                s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                reply = s.recv(1024)
        except OSError as exc:
            reply = repr(exc).encode()
        if b"PONG" not in reply:
            raise DaemonError(f"spamd did not answer PING: {reply!r}\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.address])
