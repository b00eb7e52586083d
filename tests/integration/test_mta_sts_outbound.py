"""Outgoing mail under MTA-STS (RFC 8461), with the real parts the postfix role deploys: Debian's
mta-sts-daemon answers Postfix's smtp_tls_policy_maps over socketmap, fetching each destination's
policy from a test name server (NSD) and an HTTPS stand-in, certificates from a test CA.

Two destinations publish an `enforce` policy made by our own `mailglue dns` code:
good.sts.test, whose MX is the one its policy names, and bad.sts.test, whose MX record points
elsewhere (mx.evil.sts.test, with a certificate valid for that name, as a DNS spoofer's would
be). The first is delivered over verified TLS; the second is deferred and nothing of it is sent.
See tests/harness/mta_sts.py for how the daemon and Postfix are made to see the test DNS.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from milters.dns.records import Facts, MailDomain, mta_sts_id, mta_sts_policy, txt
from tests.harness.mta_sts import (
    ConnectProxy,
    MtaStsDaemon,
    NamespacedPostfix,
    PolicyServer,
    StarttlsMx,
    resolv_conf,
    socketmap_query,
)
from tests.harness.nsd import Nsd
from tests.harness.tls_ca import TestCa

# Loopback addresses of their own: port 53 for the test DNS (the resolvers ask nothing else),
# and an MX address Postfix does not count as itself (127.0.0.1 would be "loops back to myself").
NAMESERVER = "127.53.84.83"
MX_ADDRESS = "127.53.84.25"
GOOD, BAD, PLAIN = "good.sts.test", "bad.sts.test", "plain.sts.test"


def _port_53_free() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((NAMESERVER, 53))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mta-sts-daemon") is None or shutil.which("unshare") is None,
    reason="needs root (port 53, mount namespaces) and Debian's postfix-mta-sts-resolver",
)


def enforce(domain: str) -> Facts:
    """The facts our own `mailglue dns` would have for a domain whose only MX is mx.DOMAIN."""
    return Facts(hostname=f"mx.{domain}", domains=(MailDomain(domain),), mta_sts_mode="enforce")


def zone() -> str:
    lines = [
        f"{GOOD}. IN MX 10 mx.{GOOD}.",
        f"mx.{GOOD}. IN A {MX_ADDRESS}",
        f"{BAD}. IN MX 10 mx.evil.sts.test.",
        f"mx.evil.sts.test. IN A {MX_ADDRESS}",
        f"{PLAIN}. IN MX 10 mx.evil.sts.test.",  # the same MX, no MTA-STS policy
    ]
    for domain in (GOOD, BAD):
        lines.append(
            f"_mta-sts.{domain}. IN TXT {txt(f'v=STSv1; id={mta_sts_id(enforce(domain))}')}"
        )
        lines.append(f"mta-sts.{domain}. IN A 127.0.0.1")
    return "\n".join(lines) + "\n"


@dataclass
class World:
    daemon: MtaStsDaemon
    postfix: NamespacedPostfix
    mx: StarttlsMx
    policies: PolicyServer
    proxy: ConnectProxy


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    if not _port_53_free():
        pytest.skip(f"{NAMESERVER}:53 is taken")
    # Not pytest's tmp_path: its parents are 0700, and Postfix (user postfix) must get in.
    root = Path(tempfile.mkdtemp(prefix="mta-sts-"))
    root.chmod(0o755)
    ca = TestCa(root / "ca")
    (root / "ca").chmod(0o755)
    policies = PolicyServer(
        {d: mta_sts_policy(enforce(d)) for d in (GOOD, BAD)},
        *ca.issue("policy", [f"mta-sts.{GOOD}", f"mta-sts.{BAD}"]),
    )
    proxy = ConnectProxy(policies.address)
    mx = StarttlsMx(*ca.issue("mx", [f"mx.{GOOD}", "mx.evil.sts.test"]), host=MX_ADDRESS)
    nsd = Nsd(root / "nsd", "sts.test")
    nsd.host, nsd.port = NAMESERVER, 53
    resolv = resolv_conf(root, NAMESERVER)
    daemon = MtaStsDaemon(root, resolv, proxy.address, ca.ca_file)
    transport = root / "transport"
    transport.write_text(
        "".join(f"{d} smtp:{d}:{mx.address[1]}\n" for d in (GOOD, BAD, PLAIN)), encoding="ascii"
    )
    postfix = NamespacedPostfix(
        root / "postfix",
        lmtp_socket=root / "no-lmtp",
        relay_address=("127.0.0.1", 9),
        master_extra="tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n",
        main_cf={
            "relay_domains": f"{GOOD} {BAD} {PLAIN}",
            "transport_maps": f"texthash:{transport}",
            "disable_dns_lookups": "no",
            "smtp_dns_support_level": "enabled",
            "smtp_host_lookup": "dns",
            "smtp_tls_security_level": "may",
            "smtp_tls_CAfile": str(ca.ca_file),
            "smtp_tls_loglevel": "1",
            "smtp_tls_policy_maps": daemon.socketmap,
        },
    )
    postfix.resolv = resolv
    started: list[object] = []
    try:
        for server in (policies, proxy, mx):
            server.start()
            started.append(server)
        nsd.start(zone())
        started.append(nsd)
        daemon.start()
        started.append(daemon)
        postfix.start()
        started.append(postfix)
        yield World(daemon, postfix, mx, policies, proxy)
    finally:
        for part in reversed(started):
            part.stop()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)


def maillog_lines(postfix: NamespacedPostfix, recipient: str) -> list[str]:
    text = postfix.maillog.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if recipient in line or "TLS" in line]


def send_and_wait(world: World, recipient: str, want: str, timeout: float = 60) -> list[str]:
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = recipient
    message["Subject"] = f"MTA-STS to {recipient}"
    message.set_content("hello\n")
    with smtplib.SMTP(*world.postfix.address, timeout=30) as smtp:
        smtp.send_message(message)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = maillog_lines(world.postfix, recipient)
        if any(f"to=<{recipient}>" in line and want in line for line in lines):
            return lines
        time.sleep(0.2)
    raise AssertionError(
        f"no '{want}' for {recipient} in {timeout}s:\n"
        + "\n".join(maillog_lines(world.postfix, ""))
    )


def test_the_daemon_answers_with_the_policy_our_own_code_published(world: World) -> None:
    reply = socketmap_query(world.daemon.address, "postfix", f"{GOOD}:{world.mx.address[1]}")
    assert reply == f"OK secure match=mx.{GOOD} servername=hostname".encode()
    assert (f"mta-sts.{GOOD}", "/.well-known/mta-sts.txt") in world.policies.requests
    assert f"mta-sts.{GOOD}:443" in world.proxy.targets
    # No policy published: nothing to enforce, Postfix falls back to its own level.
    assert socketmap_query(world.daemon.address, "postfix", "nopolicy.sts.test") == b"NOTFOUND "


def test_an_enforced_policy_whose_mx_does_not_match_defers_and_sends_nothing(world: World) -> None:
    recipient = f"bob@{BAD}"
    earlier = len(world.mx.sessions)
    lines = send_and_wait(world, recipient, "status=deferred")
    deferred = next(line for line in lines if f"to=<{recipient}>" in line)
    assert "mx.evil.sts.test" in deferred and "certificate" in deferred.lower(), deferred
    assert f"mta-sts.{BAD}:443" in world.proxy.targets
    # The stand-in MX saw STARTTLS (the policy says secure) and nothing else in clear, and no
    # message at all: Postfix gave up at the certificate check.
    assert world.mx.sessions[earlier:], "Postfix never reached the MX"
    for session in world.mx.sessions[earlier:]:
        clear = [c for c in session.commands if c.startswith("clear: ")]
        assert all(c.split()[1].upper() in ("EHLO", "STARTTLS") for c in clear), clear
        assert not session.messages
    assert world.postfix.queue(), "the message must stay queued for a later try"


def test_an_enforced_policy_whose_mx_matches_is_sent_over_verified_tls(world: World) -> None:
    recipient = f"carol@{GOOD}"
    before = sum(len(s.messages) for s in world.mx.sessions)
    lines = send_and_wait(world, recipient, "status=sent")
    assert any(f"Verified TLS connection established to mx.{GOOD}" in line for line in lines), lines
    delivered = [s for s in world.mx.sessions if s.messages]
    assert sum(len(s.messages) for s in world.mx.sessions) == before + 1
    assert all(s.tls for s in delivered)


def test_without_a_policy_the_same_mx_gets_the_mail(world: World) -> None:
    """The control: what the bad.sts.test message was kept from is the policy, not the MX."""
    recipient = f"dave@{PLAIN}"
    lines = send_and_wait(world, recipient, "status=sent")
    sent = next(line for line in lines if f"to=<{recipient}>" in line and "status=sent" in line)
    assert "relay=mx.evil.sts.test" in sent, sent
