"""Reconciliation: what senders were told, against what the mailboxes hold.

The promise under test is the design's "we never accept responsibility for a message until it
is delivered". So: a message that got 250 must be in its mailbox (else it is *lost*), exactly
once (else a *duplicate*); a message refused with 5xx must not be there; a message deferred
with 4xx may or may not be there (its 250 may have been cut short after Cyrus stored it), which
is harmless because the sender's retry carries the same Message-ID and Date and Cyrus drops it.
Cyrus can only drop it if it recorded it: killed between storing a message and recording it
(a window of one write), Cyrus stores the retry again. The milter cannot tell that apart from
a copy Cyrus never got, only that the connection died after the whole message was sent, and
then it says "delivery is uncertain" in its 451. A duplicate is a failure unless that 451
announced it.
Every stored copy must carry the scan milter's headers, which proves nothing got past a dead
milter unscanned (Postfix must tempfail, not pass).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.harness.cyrus import Cyrus
from tests.harness.smtp import NO_REPLY, Reply

from .load import Message

_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_QUEUE_ID = re.compile(r"queued as \w+")
UNCERTAIN = "delivery is uncertain"  # the milter's 451 when the LMTP connection died after DATA


@dataclass(frozen=True)
class Census:
    """Stored copies per Message-ID, and the Message-IDs of copies the milter never saw."""

    copies: Counter[str]
    unscanned: frozenset[str]

    @property
    def stored(self) -> int:
        return sum(self.copies.values())

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.copies.values() if n > 1)


def census(cyrus: Cyrus, users: list[str], tag: str) -> Census:
    """Every message of this run in the users' INBOXes, read over IMAP as each user."""
    copies: Counter[str] = Counter()
    unscanned: set[str] = set()
    marker = f"<{tag}."
    for user in users:
        with cyrus.imap(as_user=user) as imap:
            typ, _ = imap.select("INBOX", readonly=True)
            if typ != "OK":
                raise RuntimeError(f"SELECT INBOX as {user}: {typ}")
            typ, data = imap.fetch(
                "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-VIRUS-SCANNED X-SPAM-STATUS)])"
            )
            if typ != "OK":
                raise RuntimeError(f"FETCH as {user}: {typ} {data!r}")
            for item in data:
                if not isinstance(item, tuple):
                    continue
                headers = _PARSER.parsebytes(item[1])
                mid = (headers.get("Message-ID") or "").strip()
                if not mid.startswith(marker):
                    continue  # an earlier fault's run
                copies[mid] += 1
                if headers.get("X-Virus-Scanned") is None or headers.get("X-Spam-Status") is None:
                    unscanned.add(mid)
    return Census(copies, frozenset(unscanned))


TALLIES: list[Tally] = []
"""Every fault run's table row, printed in pytest's terminal summary (see conftest.py)."""


def _kind(reply: Reply) -> str:
    if reply.code == NO_REPLY:
        return "none"
    return {2: "ok", 4: "4xx", 5: "5xx"}.get(reply.code // 100, "other")


@dataclass(frozen=True)
class Tally:
    """One fault run: first attempts against the mailboxes as the fault left them, then the
    senders' retries against the mailboxes after them."""

    fault: str
    sent: int
    accepted: int
    deferred: int
    rejected: int
    no_reply: int
    stored: int
    duplicates: int
    lost: int
    deferred_but_stored: int
    retried: int
    accepted_final: int
    unresolved: int
    stored_final: int
    duplicates_final: int
    duplicates_unannounced: int  # of those, copies of messages not told "delivery is uncertain"
    lost_final: int
    refused_but_stored: int
    unscanned: int

    HEADER = (
        f"{'fault':<9} {'sent':>5} {'accepted':>8} {'deferred':>8} {'rejected':>8} "
        f"{'stored':>6} {'duplicates':>10} {'lost':>4} {'4xx-but-stored':>14} | "
        f"{'retried':>7} {'accepted':>8} {'stored':>6} {'duplicates':>10} {'lost':>4}"
    )

    def row(self) -> str:
        return (
            f"{self.fault:<9} {self.sent:>5} {self.accepted:>8} {self.deferred:>8} "
            f"{self.rejected:>8} {self.stored:>6} {self.duplicates:>10} {self.lost:>4} "
            f"{self.deferred_but_stored:>14} | {self.retried:>7} {self.accepted_final:>8} "
            f"{self.stored_final:>6} {self.duplicates_final:>10} {self.lost_final:>4}"
        )


def tally(
    fault: str, messages: list[Message], before: Census, retried: int, after: Census
) -> Tally:
    sent = [m for m in messages if m.attempts]
    first_ok = [m for m in sent if m.first.code // 100 == 2]
    final_ok = [m for m in sent if m.ever_accepted]
    kinds = Counter(_kind(m.first) for m in sent)
    return Tally(
        fault=fault,
        sent=len(sent),
        accepted=kinds["ok"],
        deferred=kinds["4xx"],
        rejected=kinds["5xx"],
        no_reply=kinds["none"] + kinds["other"],
        stored=before.stored,
        duplicates=before.duplicates,
        lost=sum(1 for m in first_ok if before.copies[m.message_id] == 0),
        deferred_but_stored=sum(
            1 for m in sent if _kind(m.first) == "4xx" and before.copies[m.message_id]
        ),
        retried=retried,
        accepted_final=len(final_ok),
        unresolved=sum(1 for m in sent if not m.ever_accepted and _kind(m.final) != "5xx"),
        stored_final=after.stored,
        duplicates_final=after.duplicates,
        duplicates_unannounced=sum(
            after.copies[m.message_id] - 1
            for m in sent
            if after.copies[m.message_id] > 1
            and not any(UNCERTAIN in a.reply.text for a in m.attempts)
        ),
        lost_final=sum(1 for m in final_ok if after.copies[m.message_id] == 0),
        refused_but_stored=sum(
            1 for m in sent if _kind(m.final) == "5xx" and after.copies[m.message_id]
        ),
        unscanned=len(after.unscanned),
    )


def reply_counts(messages: list[Message]) -> str:
    """First replies grouped by text (queue ids removed), for the report and failures."""
    counts = Counter(
        _QUEUE_ID.sub("queued as …", f"{m.first.code} {m.first.text}")[:70]
        for m in messages
        if m.attempts
    )
    return "; ".join(f"{n}x {text}" for text, n in counts.most_common())


def spamd_scans(events: list[dict[str, Any]], tag: str) -> int:
    """Messages of this run that spamd scored (the scan memo's reuses not counted)."""
    return sum(
        1
        for e in events
        if e.get("event") == "transaction"
        and f"<{tag}." in str(e.get("message_id") or "")
        and isinstance(e.get("spam"), dict)
        and "score" in e["spam"]
        and not e["spam"].get("cached")
    )
