"""What members and outside servers do in the deployment tests: send over 587 after login,
deliver on 25 from outside, look into a folder over IMAPS, and the outside world's mailbox
(a stand-in MX on loopback that the single inventory's `mail_relayhost` points at)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from tests.deploy.stack import smoke
from tests.harness.smtp import Transaction, send

MX = ("127.0.0.1", 25)
SUBMISSION = ("127.0.0.1", 587)
OUTSIDE = "friend@example.net"


# --- the outside world: a stand-in MX ------------------------------------------------------


class RemoteMx:
    """Postfix's smtp-sink on the relay host address; one file per received transaction.
    `flush` asks the sending Postfix to retry its deferred mail (default: this machine's)."""

    def __init__(self, directory: Path, flush: Callable[[], object] | None = None) -> None:
        self.directory = directory
        self.flush = flush or (lambda: subprocess.run(["postqueue", "-f"], check=False))

    def all_containing(self, token: str) -> list[bytes]:
        found = []
        for path in sorted(self.directory.rglob("*")):
            if path.is_file() and token.encode() in (data := path.read_bytes()):
                found.append(data)
        return found

    def find(self, token: str, timeout: float = 60.0) -> bytes | None:
        """The first received transaction containing `token`, waiting for Postfix's queue."""
        deadline = time.monotonic() + timeout
        flushed = False
        while True:
            found = self.all_containing(token)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                return None
            if not flushed and time.monotonic() > deadline - timeout / 2:
                self.flush()  # retry deferred mail now
                flushed = True
            time.sleep(0.5)


@contextlib.contextmanager
def outside_mx(
    host: str, port: int, flush: Callable[[], object] | None = None
) -> Iterator[RemoteMx]:
    """A stand-in for the rest of the internet's MX hosts, listening on host:port while open."""
    directory = Path(tempfile.mkdtemp(prefix="remote-mx-"))
    directory.chmod(0o777)  # smtp-sink drops to nobody
    sink = subprocess.Popen(
        [
            "/usr/sbin/smtp-sink",
            "-u",
            "nobody",
            "-d",
            f"{directory}/%H%M%S.",
            f"{host}:{port}",
            "64",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                assert sink.poll() is None and time.monotonic() < deadline, (
                    "smtp-sink did not start"
                )
                time.sleep(0.1)
        remote = RemoteMx(directory, flush)
        remote.flush()
        yield remote
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


# --- people and their mail clients -----------------------------------------------------------


def person(deployed: dict[str, Any], uid: str) -> dict[str, str]:
    found: dict[str, str] = next(u for u in deployed["users"] if u["uid"] == uid)
    return found


def token() -> str:
    return uuid.uuid4().hex[:12]


def message(sender: str, recipients: list[str], subject: str, body: str = "hello\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    # the subject's last word (the test's token) in the Message-ID finds the milter's event
    msg["Message-ID"] = make_msgid(idstring=subject.split()[-1], domain="journey.test")
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)


def with_attachment(who: dict[str, str], to: str, subject: str, data: bytes) -> bytes:
    """A member's message with `data` attached as a file (base64 makes it ~4/3 as large)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = who["mail"], to, subject
    msg["Date"] = formatdate(localtime=True)
    msg.set_content("the data set, as promised\n")
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename="data.bin")
    return msg.as_bytes(policy=SMTP)


def just_under_the_size_limit(sender: str, to: str, subject: str) -> tuple[bytes, bytes]:
    """(message, attached file) 1.5 to 2.5 KB under Postfix's message_size_limit: about as large
    as the submission port takes (its Received line and our headers count too)."""
    limit = int(
        subprocess.run(
            ["postconf", "-h", "message_size_limit"], capture_output=True, text=True, check=True
        ).stdout
    )
    overhead = len(with_attachment({"mail": sender}, to, subject, b""))
    size = (limit - overhead - 2000) * 3 // 4 * 76 // 78  # base64: 4/3, and CRLF per 76
    data = os.urandom(size)
    raw = with_attachment({"mail": sender}, to, subject, data)
    assert limit - 2500 < len(raw) < limit - 1500, (limit, len(raw))
    return raw, data


def submit(
    who: dict[str, str],
    recipients: list[str],
    subject: str,
    body: str = "hello\n",
    *,
    sender: str | None = None,
    port: int = 587,
) -> Transaction:
    """What a mail client does: STARTTLS, AUTH as the member, send."""
    mail_from = who["mail"] if sender is None else sender
    return send(
        ("127.0.0.1", port),
        mail_from,
        recipients,
        message(mail_from or who["mail"], recipients, subject, body),
        helo="laptop.journey.test",
        login=(who["uid"], who["password"]),
    )


def from_outside(
    sender: str,
    recipients: list[str],
    subject: str,
    body: str = "hi\n",
    *,
    raw: bytes | None = None,
    source: str | None = None,
) -> Transaction:
    """What another domain's MTA does on port 25 (STARTTLS, no AUTH); `raw`: its own bytes."""
    if raw is None:
        raw = message(sender, recipients, subject, body)
    return send(MX, sender, recipients, raw, starttls=True, source=source)


# The single inventory's test-only SpamAssassin rule scores a body with this token 4.5:
# tagged (X-Spam-Flag: YES), not refused.
TAG_TOKEN = "mailglue-test-tag-4-5"


def tagged_from_outside(sender: str, recipients: list[str], subject: str) -> Transaction:
    """Mail from outside that the real spamd scores between tagging and refusal."""
    return from_outside(sender, recipients, subject, f"special offer {TAG_TOKEN}\n")


def in_folder(
    who: dict[str, str], subject: str, folder: str = "INBOX", timeout: float = 60
) -> bytes | None:
    found: bytes | None = smoke.find_subject(
        who["uid"], who["password"], subject, timeout=timeout, mailbox=folder
    )
    return found


def attachments_of(who: dict[str, str], subject: str) -> list[bytes]:
    """The attached files of the newest message with this subject in the INBOX, over IMAPS."""
    with smoke.imap_login(who["uid"], who["password"]) as imap:
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "SUBJECT", f'"{subject}"')
        _, fetched = imap.fetch(found[0].split()[-1], "(BODY.PEEK[])")
    raw = next(part[1] for part in fetched if isinstance(part, tuple))
    stored = message_from_bytes(raw, policy=SMTP)
    return [part.get_content() for part in stored.iter_attachments()]


def size_limit() -> int:
    """The largest message the server takes, as a mail client learns it: EHLO's SIZE."""
    with smtplib.SMTP(*SUBMISSION, timeout=30) as smtp:
        smtp.ehlo("laptop.journey.test")
        return int(smtp.esmtp_features["size"])


def assert_delivered(tx: Transaction) -> None:
    assert tx.data is not None and tx.data.code == 250, tx


def relay_address(variables: dict[str, Any]) -> tuple[str, int]:
    match = re.fullmatch(r"\[([\d.]+)\]:(\d+)", str(variables.get("mail_relayhost", "")))
    assert match, "the single inventory's mail_relayhost must be [127.0.0.1]:PORT"
    return match.group(1), int(match.group(2))


def dkim_signatures(
    received: bytes,
    domain: str = "example.org",
    key_file: Callable[[str], str] | None = None,
) -> dict[str, bool]:
    """Each DKIM signature on the copy the remote MX received ("selector a=algorithm"), and
    whether dkimpy (an implementation independent of the signer) verifies it against the key
    we would publish: the TXT record beside the private key (`mailglue dns` prints it).
    `key_file(selector)`: that file's text, when it is on another host."""
    import dkim

    def read_here(selector: str) -> str:
        return Path(f"/etc/opendkim/keys/{domain}/{selector}.txt").read_text()

    def txt(name: bytes, timeout: int = 5) -> bytes:
        record = (key_file or read_here)(name.decode().split("._domainkey.")[0])
        return "".join(re.findall(r'"([^"]*)"', record)).encode()

    message = received.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    verifier = dkim.DKIM(message)
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    results = {}
    for index in range(count):
        ok = bool(verifier.verify(idx=index, dnsfunc=txt))
        fields = verifier.signature_fields
        results[f"{fields[b's'].decode()} a={fields[b'a'].decode()}"] = ok
    return results


def dkim_verifies(received: bytes, domain: str = "example.org") -> bool:
    """At least one DKIM signature, and every one of them verifies."""
    results = dkim_signatures(received, domain)
    return bool(results) and all(results.values())
