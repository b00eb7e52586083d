"""spamd, offline and deterministic, with test rules that put a message at an exact score.

The milter's bands (>3.0 tag, >=5.0 reject) are checked at their edges, so a test message must
score exactly its test rule: incidental rules that fire on well-formed test mail are zeroed here.

`tuned` (the default) runs spamd as the spamassassin role deploys it: the body rules that
`sa-compile` turned into native code are matched by Rule2XSBody (`spamassassin_compile_rules`),
and spamd, which has no per-user configuration here, no longer restores its whole configuration
after every message (`spamassassin_skip_config_restore`, the role's Mailglue::SpamdKeepConfig).
`tuned=False` is the spamd deployed before issue 17, for the side-by-side benchmark and the test
that both give every message the same score and tests.
"""

from __future__ import annotations

import re
import shutil
import socket
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from .process import LOOPBACK, DaemonError, ManagedProcess, chown, free_port, log_tail

SPAMD_USER = "debian-spamd"
SA_CONFIG_DIR = Path("/etc/spamassassin")

COMPILED_PRE = "sa-compile.pre"
"""Debian's sa-compile package drops this into /etc/spamassassin; only a tuned spamd loads it."""
COMPILED_PRE_TEXT = (
    "# Body rules compiled by sa-compile (re2c + gcc), matched natively.\n"
    "loadplugin Mail::SpamAssassin::Plugin::Rule2XSBody\n"
)
COMPILED_RULES_DIR = Path("/var/lib/spamassassin/compiled")
"""Where sa-compile writes and Rule2XSBody reads (per Perl and SpamAssassin version); the
plugin uses a compiled rule only where its name and regex equal the loaded rule's, so rules of
our own (the test rules below) simply run in Perl."""
KEEP_CONFIG_DIR = Path(__file__).resolve().parents[2] / "ansible/roles/spamassassin/files/perl"
"""The role's Mailglue::SpamdKeepConfig, loaded by a tuned spamd exactly as deployed."""
KEEP_CONFIG_ACTIVE = "mailglue: spamd keeps its configuration between messages"
_ZOOM = re.compile(r"zoom: able to use (\d+)/(\d+) '(\w+)' compiled rules")

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


def authres_rules(authserv_id: str) -> list[str]:
    """The milter's SPF/DKIM/DMARC results, read from its Authentication-Results by
    SpamAssassin's AuthRes plugin and scored as SpamAssassin's own rules score them with network
    tests on; the same lines as the spamassassin role's local.cf."""
    return [
        "loadplugin Mail::SpamAssassin::Plugin::AuthRes",
        f"authres_trusted_authserv {authserv_id}",
        "authres_networks all",
        *(
            line
            for name, method, result, score in AUTHRES_SCORES
            for line in (
                f"header {name} eval:check_authres_result('{method}','{result}')",
                f"score {name} {score}",
            )
        ),
    ]


# (rule, method, result, score): SpamAssassin's SPF_FAIL, SPF_SOFTFAIL, DKIM_INVALID,
# DKIM_VALID and DMARC_NONE scores (a DMARC failure of any policy that was not refused).
AUTHRES_SCORES = (
    ("MG_AUTH_SPF_FAIL", "spf", "fail", "0.919"),
    ("MG_AUTH_SPF_SOFTFAIL", "spf", "softfail", "0.665"),
    ("MG_AUTH_DKIM_INVALID", "dkim", "fail", "0.1"),
    ("MG_AUTH_DKIM_VALID", "dkim", "pass", "-0.1"),
    ("MG_AUTH_DMARC_FAIL", "dmarc", "fail", "0.898"),
)


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
        *authres_rules("mx.example.org"),
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


def deployed_local_cf() -> str:
    """local.cf as the spamassassin role writes it with its defaults (templates/.../local.cf.j2),
    except Bayes: off here, so scores do not depend on what a database has learned (an empty
    database, as on a new deployment, scores nothing either). Stock scores: no test rules."""
    lines = [
        "# mailglue: the deployed local.cf (role defaults), Bayes off.",
        "required_score 5.0",
        "report_safe 0",
        "add_header all Mailglue-Tests _TESTSSCORES(,)_",
        "use_bayes 0",
        "bayes_auto_learn 0",
        "dns_available no",
        "skip_rbl_checks 1",
        "use_razor2 0",
        "use_pyzor 0",
        *authres_rules("mail.example.org"),
    ]
    return "\n".join(lines) + "\n"


class Spamd:
    """One spamd on a loopback port; slow to start (~several s), so one per test session."""

    def __init__(
        self,
        root: Path,
        max_children: int = 5,
        extra_args: tuple[str, ...] = (),
        tuned: bool = True,
        local_cf_text: str | None = None,
        compiled_rules: bool | None = None,
        keep_config: bool | None = None,
    ) -> None:
        """`tuned` sets both tunings; `compiled_rules` / `keep_config` set one alone (to
        measure what each saves, bench/spamd_cost.py)."""
        self.root = root
        self.host = LOOPBACK
        self.port = free_port()
        self.site_dir = root / "site"
        self.home_dir = root / "home"
        self.log_path = root / "spamd.log"
        self.max_children = max_children
        self.extra_args = extra_args
        self.tuned = tuned
        self.compiled_rules = tuned if compiled_rules is None else compiled_rules
        self.keep_config = tuned if keep_config is None else keep_config
        # A copy of the role's module in our own directory: perl also searches there for the
        # modules spamd's children load later, as spamd's user, who may not be able to enter
        # the checkout (under a 0700 directory, as a clean CI clone is).
        self.perl_dir = root / "perl"
        self.command: tuple[str, ...] = ("/usr/sbin/spamd",)
        if self.keep_config:  # as the role's spamd command with spamassassin_skip_config_restore
            self.command = (
                "/usr/bin/perl",
                "-T",
                f"-I{self.perl_dir}",
                "-MMailglue::SpamdKeepConfig",
                "/usr/sbin/spamd",
            )
        self.local_cf_text = local_cf() if local_cf_text is None else local_cf_text
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
            if pre.name != COMPILED_PRE:  # the machine's sa-compile package must not decide
                shutil.copy(pre, self.site_dir / pre.name)
        if self.compiled_rules:
            if not any(COMPILED_RULES_DIR.glob("*/*/Mail/SpamAssassin/CompiledRegexps/body_0.pm")):
                raise DaemonError(
                    f"tuned spamd: no compiled body rules under {COMPILED_RULES_DIR}; "
                    "install Debian's sa-compile (its postinst runs sa-compile) or run sa-compile"
                )
            (self.site_dir / COMPILED_PRE).write_text(COMPILED_PRE_TEXT)
        (self.site_dir / "local.cf").write_text(self.local_cf_text)
        shutil.copytree(KEEP_CONFIG_DIR, self.perl_dir, dirs_exist_ok=True)
        self.home_dir.mkdir(exist_ok=True)
        chown(self.home_dir, SPAMD_USER, mode=0o700)

    def start(self, timeout: float = 60) -> None:
        if not (self.site_dir / "local.cf").exists():
            self.configure()
        argv = [
            *self.command,
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
        if self.compiled_rules and not self.compiled_rules_in_use():
            raise DaemonError(
                "tuned spamd started without compiled body rules (no 'zoom: able to use' line;"
                f" stale or missing sa-compile output?)\n{log_tail(self.log_path)}"
            )
        if self.keep_config and not self.keeps_config():
            raise DaemonError(f"tuned spamd restores its configuration\n{log_tail(self.log_path)}")

    def keeps_config(self) -> bool:
        """True if Mailglue::SpamdKeepConfig said it is active (it prints that at start)."""
        try:
            return KEEP_CONFIG_ACTIVE in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def compiled_rules_in_use(self) -> dict[str, tuple[int, int]]:
        """Rule2XSBody's own report from the log: {'body_0': (used, compiled)}, empty if off."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return {}
        return {m[3]: (int(m[1]), int(m[2])) for m in _ZOOM.finditer(text)}

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
