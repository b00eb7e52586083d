"""Outbound DANE (RFC 7672) with a DNSSEC-validating unbound, as deployed (issue 15).

Nothing leaves the machine. NSD serves `remote.example` DNSSEC-signed; unbound validates it
from the zone's DS record (its only trust anchor) and answers on a loopback address of its own,
port 53; the sending Postfix runs with the deployed settings (`smtp_dns_support_level =
dnssec`, `smtp_tls_security_level = dane`) in a mount namespace where /etc/resolv.conf names
that unbound with `options trust-ad`. It looks up the MX, the address and the TLSA record like
any mail to the outside. The remote MX is a second Postfix with STARTTLS on another loopback
address, delivering into a Maildir: that Maildir is where a message "arrived".

- `good.remote.example`: TLSA `3 1 1` of the key the remote MX presents (the record
  `mailglue dns` would print for it) -> sent, `Verified TLS connection established`;
- `bad.remote.example`: TLSA of another key (a botched key roll-over) -> deferred, stays in
  our queue with the reason, never sent, not even over unverified TLS or in clear;
- `forged.remote.example`: the zone's signed TLSA names another key, and an answer forged on
  the way names the key the server presents (as a man in the middle would) -> unbound finds
  it bogus, Postfix defers: the forged match is never believed;
- `plain.remote.example`: signed zone but no TLSA -> opportunistic TLS, sent unverified;
- `relay.test`: through a relay host given by address (`smtp:[127.0.0.1]:port`, as the single
  inventory's stand-in for the outside world) that offers no TLS -> sent: no DNS, no DANE.

The remote MX listens on a port other than 25, and the sender's `smtp_tcp_port` names it, so
the TLSA records live at `_<port>._tcp.<mx host>`, exactly as `_25._tcp` would.
"""

from __future__ import annotations

import datetime
import os
import pwd
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from milters.dns.config import spki_sha256
from tests.harness.logs import DaemonLogs
from tests.harness.messages import build_message, unique_message_id
from tests.harness.nsd import Nsd
from tests.harness.postfix import RELAY_DOMAIN, Postfix, SmtpSink
from tests.harness.process import wait_until
from tests.harness.smtp import send
from tests.harness.unbound import Unbound, free_loopback_address

ZONE = "remote.example"
DOMAINS = ("good", "bad", "forged", "plain")
SENDER = "alice@example.org"
# What ansible/roles/postfix deploys for mail to the outside (tests/unit/test_dane_settings.py
# checks that the role still says so).
DEPLOYED_MAIN_CF = {
    "smtp_dns_support_level": "dnssec",
    "smtp_tls_security_level": "dane",
    "smtp_tls_loglevel": "1",
}
# TLS needs Postfix's tlsmgr (session cache, entropy); the harness's master.cf has no TLS
TLSMGR = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
VIRTUAL = "virtual   unix  -       n       n       -       -       virtual\n"


def self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    """A fresh key and self-signed certificate for `name` (DANE-EE needs no CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@dataclass
class DaneWorld:
    sender: Postfix  # ours, as deployed for outbound mail
    remote: Postfix  # the remote MX stand-in
    maildir: Path  # where the remote MX delivers every message
    unbound: Unbound
    nsd: Nsd
    relay: SmtpSink  # the relay host given by address

    def arrived(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted((self.maildir / "new").glob("*"))]

    def arrived_for(self, recipient: str) -> list[bytes]:
        needle = f"To: <{recipient}>".encode()
        return [m for m in self.arrived() if needle in m]

    def sender_log(self) -> str:
        return self.sender.maillog.read_text(encoding="utf-8", errors="replace")

    def log_lines(self, queue_id: str) -> list[str]:
        return [line for line in self.sender_log().splitlines() if f" {queue_id}: " in line]


@pytest.fixture(scope="module")
def dane(stack_root: Path, daemon_logs: DaemonLogs, smtp_sink: SmtpSink) -> Iterator[DaneWorld]:
    root = Path(tempfile.mkdtemp(prefix="dane-", dir=stack_root))
    root.chmod(0o755)
    nsd = Nsd(root / "nsd", ZONE)
    unbound: Unbound | None = None
    remote: Postfix | None = None
    sender: Postfix | None = None
    try:
        # The remote MX first: its address and port go into the zone.
        mx_key, mx_cert = self_signed(f"mx.{ZONE}", root / "remote-tls")
        _, other_cert = self_signed(f"mx.{ZONE}", root / "rolled-over-key")
        # unbound and the remote MX share a loopback address other than 127.0.0.1, which the
        # sending Postfix counts as itself ("mail loops back to myself")
        unbound_host = free_loopback_address()
        maildir_base = root / "remote-mail"
        maildir_base.mkdir()
        postfix_user = pwd.getpwnam("postfix")
        os.chown(maildir_base, postfix_user.pw_uid, postfix_user.pw_gid)
        remote = Postfix(
            root / "remote-mx",
            root / "no-lmtp",
            ("127.0.0.1", 9),
            host=unbound_host,
            main_cf={
                "myhostname": f"mx.{ZONE}",
                "mydomain": ZONE,
                "myorigin": ZONE,
                "mydestination": "",
                "relay_domains": "",
                "virtual_mailbox_domains": ", ".join(f"{d}.{ZONE}" for d in DOMAINS),
                "virtual_mailbox_base": str(maildir_base),
                "virtual_mailbox_maps": "static:inbox/",
                "virtual_mailbox_limit": "0",
                "virtual_uid_maps": f"static:{postfix_user.pw_uid}",
                "virtual_gid_maps": f"static:{postfix_user.pw_gid}",
                "smtpd_tls_security_level": "may",
                "smtpd_tls_chain_files": f"{mx_key}, {mx_cert}",
                "smtpd_tls_loglevel": "1",
                "smtpd_tls_received_header": "yes",
            },
            master_extra=TLSMGR + VIRTUAL,
        )
        daemon_logs.register("dane remote-mx", remote.maillog)
        remote.start()

        port, host = remote.port, remote.host
        right = spki_sha256(mx_cert.read_bytes())
        wrong = spki_sha256(other_cert.read_bytes())
        records = []
        tlsa_of = {"good": right, "bad": wrong, "forged": wrong, "plain": None}
        for domain, tlsa in tlsa_of.items():
            mx = f"mx-{domain}.{ZONE}."
            records += [f"{domain}.{ZONE}. IN MX 10 {mx}", f"{mx} IN A {host}"]
            if tlsa:
                records.append(f"_{port}._tcp.{mx} IN TLSA 3 1 1 {tlsa}")

        def forge(signed_zone: str) -> str:
            """mx-forged's TLSA now names the key the server presents; its RRSIG does not."""
            owner = f"_{port}._tcp.mx-forged.{ZONE}."
            lines = signed_zone.splitlines(keepends=True)
            for i, line in enumerate(lines):
                fields = line.split()
                if fields[:1] == [owner] and "TLSA" in fields[:4]:
                    lines[i] = line.replace(wrong, right)
            assert lines != signed_zone.splitlines(keepends=True), "no TLSA line to forge"
            return "".join(lines)

        daemon_logs.register("dane nsd", nsd.log_path)
        nsd.start("\n".join(records) + "\n", signed=True, forge=forge)

        unbound = Unbound(
            root / "unbound", {ZONE: nsd.address}, [nsd.trust_anchor], host=unbound_host
        )
        daemon_logs.register("dane unbound", unbound.log_path)
        unbound.start()

        sender = Postfix(
            root / "sender",
            root / "no-lmtp",
            smtp_sink.address,  # relay.test goes there, by address
            resolv_conf=unbound.resolv_conf,
            master_extra=TLSMGR,
            main_cf={
                **DEPLOYED_MAIN_CF,
                "disable_dns_lookups": "no",
                "dnssec_probe": f"ns:{ZONE}",
                # the remote MX's port (so its TLSA records are at _<port>._tcp.<mx host>)
                "smtp_tcp_port": str(port),
            },
        )
        daemon_logs.register("dane sender", sender.maillog)
        sender.start()
        yield DaneWorld(sender, remote, maildir_base / "inbox", unbound, nsd, smtp_sink)
    finally:
        for daemon in (sender, remote, unbound):
            if daemon is not None:
                daemon.stop()
        nsd.stop()


def submit(world: DaneWorld, recipient: str) -> str:
    """Hand one message to our Postfix (as a member's client would); its queue id."""
    message = build_message(
        f"dane test to {recipient}",
        sender=SENDER,
        recipient=recipient,
        subject=f"DANE check for {recipient}",
        message_id=unique_message_id(),
    )
    message = message.replace(
        f"To: Alice Example <{recipient}>".encode(), f"To: <{recipient}>".encode()
    )
    tx = send(world.sender.address, SENDER, [recipient], message)
    assert tx.data is not None and tx.data.code == 250, tx
    found = re.search(r"queued as (\w+)", tx.data.text)
    assert found, tx.data
    return found.group(1)


def message_id_of(world: DaneWorld, queue_id: str) -> str:
    for line in world.log_lines(queue_id):
        found = re.search(r"message-id=(<[^>]+>)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"no message-id logged for {queue_id}")


def wait_for_status(world: DaneWorld, queue_id: str, timeout: float = 60) -> str:
    """The first delivery-status line (sent, deferred, bounced) of the message."""

    def status_line() -> str | None:
        for line in world.log_lines(queue_id):
            if " status=" in line:
                return line
        return None

    wait_until(lambda: status_line() is not None, timeout, f"a delivery status for {queue_id}")
    line = status_line()
    assert line is not None
    return line


def test_the_resolver_validates_the_signed_zone(dane: DaneWorld) -> None:
    """unbound answers the TLSA question Postfix asks with the AD bit (validated)."""
    port = dane.remote.port
    query = dns.message.make_query(f"_{port}._tcp.mx-good.{ZONE}", "TLSA", want_dnssec=True)
    answer = dns.query.udp(query, dane.unbound.host, port=dane.unbound.port, timeout=10)
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer, answer
    assert answer.flags & dns.flags.AD, answer


def test_matching_tlsa_sends_over_verified_tls(dane: DaneWorld) -> None:
    recipient = f"carol@good.{ZONE}"
    queue_id = submit(dane, recipient)
    status = wait_for_status(dane, queue_id)
    assert "status=sent" in status, status
    wait_until(lambda: bool(dane.arrived_for(recipient)), 20, "the message at the remote MX")
    log = dane.sender_log()
    assert f"Verified TLS connection established to mx-good.{ZONE}[" in log, log
    received = dane.arrived_for(recipient)[0].decode()
    assert "with ESMTPS" in received, received  # the remote MX saw it under TLS
    assert queue_id not in dane.sender.queue_ids()
    # Postfix's own probe (dnssec_probe, at its first DNSSEC lookup) found validation working
    assert "DNSSEC validation may be unavailable" not in log


def test_mismatching_tlsa_defers_and_never_sends(dane: DaneWorld) -> None:
    recipient = f"dave@bad.{ZONE}"
    queue_id = submit(dane, recipient)
    status = wait_for_status(dane, queue_id)
    assert "status=deferred" in status, status
    assert "certificate" in status.lower(), status  # the reason names the certificate check
    log = dane.sender_log()
    assert (
        f"server certificate verification failed for mx-bad.{ZONE}[" in log
        and "no matching DANE TLSA records" in log
    ), log
    assert f"Verified TLS connection established to mx-bad.{ZONE}" not in log

    # A retry changes nothing: still queued, with the reason postqueue shows the admin.
    def attempts() -> list[str]:
        return [line for line in dane.log_lines(queue_id) if " status=" in line]

    dane.sender.flush()
    wait_until(lambda: len(attempts()) >= 2, 30, f"a second delivery attempt of {queue_id}")
    assert all("status=deferred" in line for line in attempts()), attempts()
    queued = {str(m["queue_id"]): m for m in dane.sender.queue()}
    assert queue_id in queued, queued
    recipients = queued[queue_id]["recipients"]
    assert isinstance(recipients, list)
    reasons = [str(r.get("delay_reason", "")) for r in recipients]
    assert any("certificate" in r.lower() for r in reasons), reasons
    # Nothing reached the remote MX, in clear or not: no copy, and it never saw the message.
    assert dane.arrived_for(recipient) == []
    remote_log = dane.remote.maillog.read_text(encoding="utf-8", errors="replace")
    assert message_id_of(dane, queue_id) not in remote_log


def test_a_forged_tlsa_answer_is_not_believed(dane: DaneWorld) -> None:
    recipient = f"grace@forged.{ZONE}"
    port = dane.remote.port
    query = dns.message.make_query(f"_{port}._tcp.mx-forged.{ZONE}", "TLSA", want_dnssec=True)
    answer = dns.query.udp(query, dane.unbound.host, port=dane.unbound.port, timeout=10)
    assert answer.rcode() == dns.rcode.SERVFAIL, answer  # bogus: unbound withholds it
    queue_id = submit(dane, recipient)
    status = wait_for_status(dane, queue_id)
    assert "status=deferred" in status, status
    assert "TLSA" in status, status  # the reason names the failed TLSA lookup
    assert f"Verified TLS connection established to mx-forged.{ZONE}" not in dane.sender_log()
    assert queue_id in dane.sender.queue_ids()
    assert dane.arrived_for(recipient) == []
    remote_log = dane.remote.maillog.read_text(encoding="utf-8", errors="replace")
    assert message_id_of(dane, queue_id) not in remote_log


def test_no_tlsa_falls_back_to_opportunistic_tls(dane: DaneWorld) -> None:
    recipient = f"erin@plain.{ZONE}"
    queue_id = submit(dane, recipient)
    status = wait_for_status(dane, queue_id)
    assert "status=sent" in status, status
    wait_until(lambda: bool(dane.arrived_for(recipient)), 20, "the message at the remote MX")
    assert f"TLS connection established to mx-plain.{ZONE}[" in dane.sender_log()
    assert f"Verified TLS connection established to mx-plain.{ZONE}" not in dane.sender_log()


def test_a_relay_host_given_by_address_still_gets_mail_without_tls(dane: DaneWorld) -> None:
    recipient = f"frank@{RELAY_DOMAIN}"
    queue_id = submit(dane, recipient)
    status = wait_for_status(dane, queue_id)
    assert "status=sent" in status, status
    message_id = message_id_of(dane, queue_id)
    assert any(message_id.encode() in m for m in dane.relay.messages())
