"""Postfix's own log, read back per queue id: how a message came in, its Message-ID, and
every delivery attempt.

A list post's member copies are new Postfix messages (Mailman hands them back on the lists
smtpd); the milter never sees them, so only Postfix's log can say whether a member got one.
Postfix interleaves the lines of many messages and spreads one message over several daemons
(smtpd, cleanup, qmgr, lmtp/smtp), so the lines are gathered by queue id.

Both formats the stack writes: `maillog_file` (`Dec 01 08:19:49 mail postfix/lmtp[21506]: …`,
supervisor mode) and syslog (the same in RFC 3164, or rsyslog's RFC 3339
`2026-12-01T08:19:49.123456+00:00 mail postfix/lmtp[21506]: …`, systemd mode).
Lines of other programs, without a queue id, or damaged are skipped: a log must still answer
for the rest. Pure: lines in, records out; logread opens the files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

_STAMP = r"\d{4}-\d\d-\d\dT\S+|[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?"
# Short ids are hex; long ids (enable_long_queue_ids) use 0-9 B-Z b-z without vowels, so a
# word like `statistics:` or `warning:` is never taken for one.
_QUEUE_ID = r"[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}"
_LINE = re.compile(
    rf"^(?P<stamp>{_STAMP}) \S+ (?P<service>postfix[\w.-]*(?:/[\w.-]+)+)\[\d+\]: "
    rf"(?P<qid>{_QUEUE_ID}): (?P<text>.*)$"
)
_DELIVERY = re.compile(
    r"^to=<(?P<to>[^>]*)>, (?:orig_to=<(?P<orig>[^>]*)>, )?relay=(?P<relay>[^,]*), "
    r".*?dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+)(?: \((?P<reply>.*)\))?$"
)
_QUEUED = re.compile(r"^from=<(?P<sender>[^>]*)>, size=\d+, nrcpt=(?P<nrcpt>\d+)")
_EXPIRED = re.compile(r"^from=<[^>]*>, status=expired, (?P<what>.*)$")
_CLIENT = re.compile(r"^client=(?P<client>[^,\s]+)")
_MESSAGE_ID = re.compile(r"^message-id=(?P<mid>.*)$")
_NOTES = ("milter-", "reject:", "sender non-delivery notification:", "sender delivery status")
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


@dataclass(frozen=True)
class LogLine:
    """One Postfix line about one queue file."""

    stamp: str
    service: str  # syslog name and daemon: postfix/lists/smtpd, postfix/lmtp
    queue_id: str
    text: str  # what follows `QID: `


@dataclass(frozen=True)
class Delivery:
    """One attempt at one recipient, as a `to=<…>, relay=…, status=…` line reports it."""

    recipient: str
    status: str  # sent, deferred, bounced (and whatever else Postfix says)
    reply: str  # the text in parentheses: the server's reply or Postfix's reason
    relay: str
    dsn: str
    agent: str  # the delivering daemon: lmtp, smtp, local, error…
    stamp: str
    orig_to: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {
            "recipient": self.recipient,
            "status": self.status,
            "reply": self.reply,
            "relay": self.relay,
            "dsn": self.dsn,
            "agent": self.agent,
            "ts": self.stamp,
        }
        if self.orig_to:
            out["orig_to"] = self.orig_to
        return out


@dataclass
class QueueRecord:
    """Everything the log says about one queue file, from arrival to `removed`."""

    queue_id: str
    first_seen: str = ""
    received_by: str = ""  # the service that made it: postfix/lists/smtpd, postfix/pickup…
    client: str = ""
    message_id: str = ""
    sender: str | None = None  # None until qmgr logged it; "" is the null sender <>
    nrcpt: int | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    removed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_id": self.queue_id,
            "received_by": self.received_by,
            "client": self.client,
            "message_id": self.message_id,
            "sender": self.sender,
            "nrcpt": self.nrcpt,
            "deliveries": [d.as_dict() for d in self.deliveries],
            "notes": self.notes,
            "removed": self.removed,
        }


def split_line(line: str) -> LogLine | None:
    """The Postfix line about a queue file in `line`, or None for anything else."""
    match = _LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    return LogLine(match["stamp"], match["service"], match["qid"], match["text"])


def parse_delivery(line: LogLine) -> Delivery | None:
    """A delivery attempt, if the line is one (the agent is the daemon that logged it)."""
    match = _DELIVERY.match(line.text)
    if match is None:
        return None
    return Delivery(
        recipient=match["to"],
        status=match["status"],
        reply=match["reply"] or "",
        relay=match["relay"],
        dsn=match["dsn"],
        agent=line.service.rsplit("/", 1)[-1],
        stamp=line.stamp,
        orig_to=match["orig"] or "",
    )


def apply(record: QueueRecord, line: LogLine) -> None:
    """Fold one line into its queue file's record; lines that say nothing we use are ignored."""
    text = line.text
    record.first_seen = record.first_seen or line.stamp
    if delivery := parse_delivery(line):
        record.deliveries.append(delivery)
    elif text == "removed":
        record.removed = True
    elif (client := _CLIENT.match(text)) and line.service.endswith("/smtpd"):
        record.received_by, record.client = line.service, client["client"]
    elif text.startswith("uid=") and line.service.endswith("/pickup"):
        record.received_by = line.service
    elif mid := _MESSAGE_ID.match(text):
        record.message_id = mid["mid"].strip()
    elif queued := _QUEUED.match(text):
        record.sender, record.nrcpt = queued["sender"], int(queued["nrcpt"])
    elif expired := _EXPIRED.match(text):
        record.notes.append(f"{line.stamp} expired, {expired['what']}")
    elif text.startswith(_NOTES):
        record.notes.append(f"{line.stamp} {text}")


def collect(
    lines: Iterable[str], keep: Callable[[QueueRecord], bool] = lambda _: True
) -> list[QueueRecord]:
    """The records of the queue files in `lines` that `keep` wants, in order of arrival.

    `keep` is asked once a file is removed (and at the end for those still queued), so only
    messages in flight are held in memory however long the log. A queue id Postfix reuses
    after `removed` starts a new record.
    """
    live: dict[str, QueueRecord] = {}
    done: list[QueueRecord] = []
    for raw in lines:
        line = split_line(raw)
        if line is None:
            continue
        record = live.setdefault(line.queue_id, QueueRecord(line.queue_id))
        apply(record, line)
        if record.removed:
            del live[line.queue_id]
            if keep(record):
                done.append(record)
    return done + [r for r in live.values() if keep(r)]


def stamp_time(stamp: str, reference: datetime) -> datetime | None:
    """When a line was logged, zone-aware, for comparing with the milter's UTC times.

    RFC 3339 stamps say everything. `Dec 01 08:19:49` has no year and no zone: it is in the
    zone of `reference` (the host's local time, now), in the latest year that does not put it
    more than a day after `reference` (a log read in January still has December's lines).
    """
    try:
        if stamp[:1].isdigit():
            when = datetime.fromisoformat(stamp)
            return when if when.tzinfo else when.replace(tzinfo=reference.tzinfo)
        month, day, clock = stamp.split()
        hour, minute, second = clock.split(":")
        seconds = float(second)
        when = reference.replace(
            month=_MONTHS[month],
            day=int(day),
            hour=int(hour),
            minute=int(minute),
            second=int(seconds),
            microsecond=round((seconds % 1) * 1_000_000),
        )
    except (ValueError, KeyError):
        return None
    return when if when <= reference + timedelta(days=1) else _year_before(when)


def _year_before(when: datetime) -> datetime | None:
    try:
        return when.replace(year=when.year - 1)
    except ValueError:  # 29 February
        return None


def is_queue_id(text: str) -> bool:
    """Whether `text` looks like a Postfix queue id (short or long form)."""
    return re.fullmatch(_QUEUE_ID, text) is not None
