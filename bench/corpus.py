"""The message set: the same bytes for every configuration, one unique Message-ID per send.

Deterministic (seeded) so runs are comparable. The 5 KB message is plain English-like text,
the case SpamAssassin works hardest on per byte; the 100 KB and 10 MB ones are a short text
plus a base64 attachment, as large mail usually is. Message-IDs are unique per send because
Cyrus drops a second delivery with the same Message-ID and Date (it would look like a
missing message and skew nothing but the mailbox count, yet it is cleaner to avoid).
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass

SIZES = {"5KB": 5 * 1024, "100KB": 100 * 1024, "10MB": 10 * 1024 * 1024}
SENDER = "bob@relay.test"
RECIPIENT = "alice@example.org"
_WORDS = [
    "the",
    "quarterly",
    "report",
    "meeting",
    "budget",
    "team",
    "project",
    "schedule",
    "review",
    "draft",
    "attached",
    "please",
    "find",
    "below",
    "thanks",
    "regards",
    "update",
    "server",
    "migration",
    "weekend",
    "office",
    "customer",
    "invoice",
    "contract",
    "deadline",
    "friday",
    "monday",
    "colleague",
    "department",
    "summary",
    "figures",
    "wiki",
    "release",
    "notes",
    "question",
    "answer",
    "coffee",
    "agenda",
    "minutes",
    "travel",
    "plan",
    "approval",
]
_MID_SLOT = b"@@MESSAGE-ID@@"


def _text(rng: random.Random, size: int) -> str:
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
        lines.append(line)
        total += len(line) + 2
    return "\n".join(lines)


@dataclass(frozen=True)
class Template:
    """A message with a Message-ID slot; `render()` fills it, `wire()` is ready for DATA."""

    name: str
    raw: bytes

    def render(self, message_id: str) -> bytes:
        return self.raw.replace(_MID_SLOT, message_id.encode())

    def wire(self, message_id: str) -> bytes:
        """Dot-stuffed, CRLF, with the terminating dot: what goes after a 354."""
        data = self.render(message_id)
        if data.startswith(b"."):
            data = b"." + data
        return data.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n"


def template(name: str, to: str = f"Alice Example <{RECIPIENT}>") -> Template:
    """The `name` message (SIZES), with `to` as its To: header."""
    size = SIZES[name]
    rng = random.Random(f"mailglue-bench-{name}")
    head = (
        "Received: from client.relay.test (client.relay.test [127.0.0.1])\n"
        "\tby mx.example.org (Postfix) with ESMTP; Mon, 6 May 2024 07:08:09 +0000\n"
        f"From: Bob Example <{SENDER}>\nTo: {to}\n"
        f"Subject: Benchmark message {name}\nDate: Mon, 6 May 2024 07:08:09 +0000\n"
        "Message-ID: @@MESSAGE-ID@@\nMIME-Version: 1.0\n"
    )
    if size <= 8 * 1024:
        body = "Content-Type: text/plain; charset=us-ascii\n\n" + _text(rng, size - len(head) - 60)
    else:
        boundary = "=_mailglue_bench"
        payload = rng.randbytes(int((size - 4096) * 3 / 4))
        encoded = base64.encodebytes(payload).decode("ascii")
        body = (
            f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
            f"--{boundary}\nContent-Type: text/plain; charset=us-ascii\n\n"
            f"{_text(rng, 2048)}\n--{boundary}\n"
            'Content-Type: application/octet-stream; name="data.bin"\n'
            "Content-Transfer-Encoding: base64\n"
            'Content-Disposition: attachment; filename="data.bin"\n\n'
            f"{encoded}--{boundary}--\n"
        )
    text = head + body + "\n"
    return Template(name, text.replace("\n", "\r\n").encode("ascii"))
