"""Well-formed test messages, so that only the rules a test asks for fire in spamd.

A message lacking Date, Message-ID or a Received header picks up small incidental scores
(MISSING_MID, NO_RECEIVED at -0.001, ...) that would blur the exact score bands the tests check.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

_FIXED_DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def unique_message_id() -> str:
    """A fresh Message-ID: Cyrus and Bayes would treat a repeated one as a duplicate."""
    return f"<{uuid.uuid4().hex}@relay.test>"


def build_message(
    token: str = "",
    *,
    body: str = "Hello Alice,\n\nthe quarterly figures are attached to the wiki page.\n\nBob\n",
    sender: str = "bob@relay.test",
    recipient: str = "alice@example.org",
    subject: str = "Quarterly figures",
    message_id: str | None = None,
    date: datetime = _FIXED_DATE,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    """An RFC 5322 message (CRLF) with a Postfix-like Received header; `token` goes in the body.

    The Message-ID is derived from the content unless given, so equal inputs give equal bytes.
    """
    text = f"{body}\n{token}\n" if token else body
    if message_id is None:
        digest = hashlib.sha256(f"{sender}{recipient}{subject}{text}".encode()).hexdigest()
        message_id = f"<{digest[:24]}@relay.test>"
    stamp = format_datetime(date)
    headers = [
        "Received: from client.relay.test (client.relay.test [127.0.0.1])\n"
        "\tby mx.example.org (Postfix) with ESMTP id 4VZ0B21XYZz9sKL\n"
        f"\tfor <{recipient}>; {stamp}",
        f"From: Bob Example <{sender}>",
        f"To: Alice Example <{recipient}>",
        f"Subject: {subject}",
        f"Date: {stamp}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
    ]
    headers += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
    return _crlf("\n".join(headers) + "\n\n" + text)


def build_attachment_message(
    filename: str,
    payload: bytes,
    *,
    sender: str = "bob@relay.test",
    recipient: str = "alice@example.org",
    subject: str = "The file you asked for",
) -> bytes:
    """A multipart/mixed message with one base64 attachment (e.g. clam.zip for clamd tests)."""
    boundary = "=_mailglue_test_boundary"
    encoded = base64.encodebytes(payload).decode("ascii")
    digest = hashlib.sha256(payload).hexdigest()[:24]
    stamp = format_datetime(_FIXED_DATE)
    text = (
        f"From: Bob Example <{sender}>\n"
        f"To: Alice Example <{recipient}>\n"
        f"Subject: {subject}\n"
        f"Date: {stamp}\n"
        f"Message-ID: <{digest}@relay.test>\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "See attachment.\n"
        f"--{boundary}\n"
        f'Content-Type: application/octet-stream; name="{filename}"\n'
        "Content-Transfer-Encoding: base64\n"
        f'Content-Disposition: attachment; filename="{filename}"\n'
        "\n"
        f"{encoded}"
        f"--{boundary}--\n"
    )
    return _crlf(text)


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
