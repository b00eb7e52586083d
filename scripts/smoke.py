#!/usr/bin/env python3
"""After `make up`: one clean mail and one GTUBE mail through port 25, the clean one read back
over IMAPS. Prints what happened; exits 1 if the clean mail was not delivered or GTUBE was
accepted.

The user and password default to the first user of the single-host inventory
(ansible/inventories/single/group_vars/all/main.yml); override with --user/--password/--address.
Only the standard library is needed (PyYAML is used when present to read the inventory).
"""

from __future__ import annotations

import argparse
import imaplib
import smtplib
import ssl
import sys
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INVENTORY_VARS = ROOT / "ansible/inventories/single/group_vars/all/main.yml"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def inventory_user() -> dict[str, str]:
    """The first mail user of the single-host inventory, if PyYAML can read it."""
    try:
        import yaml
    except ImportError:
        return {}
    try:
        data = yaml.safe_load(INVENTORY_VARS.read_text(encoding="utf-8"))
        user = data["ldap_users"][0]
        return {"user": user["uid"], "password": user["password"], "address": user["mail"]}
    except (OSError, KeyError, IndexError, TypeError):
        return {}


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the deployment's certificate is self-signed
    return context


def message(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="smoke.test")
    msg.set_content(body)
    return msg


def send(
    msg: EmailMessage, host: str = "127.0.0.1", port: int = 25, starttls: bool = True
) -> tuple[int, str]:
    """Send one message; return the final SMTP reply (code, text), whatever stage refused it."""
    try:
        with smtplib.SMTP(host, port, local_hostname="smoke.test", timeout=120) as smtp:
            smtp.ehlo()
            if starttls and smtp.has_extn("starttls"):
                smtp.starttls(context=tls_context())
                smtp.ehlo()
            refused = smtp.send_message(msg)
            if refused:
                code, text = next(iter(refused.values()))
                return code, text.decode(errors="replace")
            return 250, "accepted"
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text.decode(errors="replace")
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        return exc.smtp_code, error.decode(errors="replace") if isinstance(error, bytes) else error


def imap_login(
    user: str, password: str, host: str = "127.0.0.1", port: int = 993
) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(), timeout=30)
    imap.login(user, password)
    return imap


def find_subject(
    user: str, password: str, subject: str, timeout: float = 60.0, mailbox: str = "INBOX"
) -> bytes | None:
    """Poll the mailbox for a message with this subject; return its headers, or None."""
    deadline = time.monotonic() + timeout
    while True:
        with imap_login(user, password) as imap:
            imap.select(mailbox, readonly=True)
            status, data = imap.search(None, "SUBJECT", f'"{subject}"')
            numbers = data[0].split() if status == "OK" and data and data[0] else []
            if numbers:
                status, fetched = imap.fetch(numbers[-1], "(BODY.PEEK[HEADER])")
                for part in fetched:
                    if isinstance(part, tuple):
                        return bytes(part[1])
        if time.monotonic() >= deadline:
            return None
        time.sleep(1)


def main() -> int:
    defaults = inventory_user()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--user", default=defaults.get("user"))
    parser.add_argument("--password", default=defaults.get("password"))
    parser.add_argument("--address", default=defaults.get("address"))
    parser.add_argument("--sender", default="smoke@example.net")
    args = parser.parse_args()
    if not (args.user and args.password and args.address):
        parser.error("--user, --password and --address are needed (no inventory to read them from)")

    ok = True
    token = uuid.uuid4().hex[:12]
    # Cyrus creates a mailbox at the user's first login; mail for a user who never logged in
    # is refused. So log in first.
    with imap_login(args.user, args.password, args.host):
        print(f"IMAPS  login as {args.user}: ok (mailbox exists or was just created)")

    clean = message(
        args.sender, args.address, f"mailglue smoke clean {token}", "Hello from make up.\n"
    )
    code, text = send(clean, args.host)
    print(f"SMTP   clean mail to {args.address}: {code} {text}")
    ok &= code == 250

    spam = message(args.sender, args.address, f"mailglue smoke gtube {token}", f"{GTUBE}\n")
    code, text = send(spam, args.host)
    print(f"SMTP   GTUBE mail to {args.address}: {code} {text}")
    if code == 250:
        print("       GTUBE was ACCEPTED: spam filtering is not working")
        ok = False
    elif code // 100 == 4:
        print("       GTUBE was deferred (4xx): a scanner is unreachable or slow")
        ok = False

    headers = find_subject(args.user, args.password, f"mailglue smoke clean {token}")
    if headers is None:
        print("IMAPS  clean mail NOT found in INBOX within 60 s")
        ok = False
    else:
        status = [
            line
            for line in headers.decode(errors="replace").splitlines()
            if line.lower().startswith(("x-spam-status", "x-spam-flag", "x-spam-level"))
        ]
        print("IMAPS  clean mail found in INBOX: " + ("; ".join(status) or "(no X-Spam headers)"))
    print("smoke: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
