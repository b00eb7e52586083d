"""`mailglue trace`: everything the logs know about one message, put back together.

The milter logs one `transaction` event per message, the policy service one
`policy_decision` per RCPT; an admin asking "why did this mail bounce?" needs both, joined.
This module is the pure core: events in, traces out, and a text rendering; `command` at the
end has logread read the files.

Joining a policy decision to its transaction:
1. by queue id: Postfix passes `queue_id` to the policy service once the queue file exists
   (usually from the second RCPT on), and the milter logs the same id;
2. by `instance`: Postfix gives every request of one SMTP transaction the same instance, so
   one decision with the queue id brings its siblings (the first RCPT, rejected ones);
3. otherwise by sender + recipient, the decision up to `RCPT_WINDOW` before the transaction.
Decisions that join no transaction (every recipient refused at RCPT, so no DATA) form traces of
their own: they answer "why did mail to the new user bounce?".

A list post (a recipient with `"list": true` that Mailman took) goes on as new messages the
milter never sees: Mailman sends the members' copies back to Postfix through the lists smtpd
(master.cf: `-o syslog_name=postfix/lists`), with the post's Message-ID. Postfix's own log
(maillog.py) has their deliveries; they join the post by Message-ID (the post's own queue id,
discarded after Mailman took it, is not one of them). A sender who sends the same message
again (same Message-ID) makes two posts: each copy goes with the latest post before it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lmtp_bridge.fold import RecipientOutcome
from milters.ops.logread import (
    event_time,
    in_window,
    log_sources,
    parse_events,
    parse_time,
    read_lines,
    read_maillog,
)
from milters.ops.maillog import Delivery, QueueRecord, is_queue_id, stamp_time
from milters.scan.event import TransactionEvent

POLICY_EVENTS = ("policy_decision", "policy")
RCPT_WINDOW = timedelta(minutes=15)
LISTS_SMTPD = "postfix/lists/smtpd"  # where Mailman's copies come in (master.cf syslog_name)
COPY_SLACK = timedelta(seconds=2)  # maillog_file stamps have whole seconds

Event = dict[str, Any]


@dataclass
class Trace:
    """One message (or one refused attempt): its transaction, if any, and its RCPT decisions."""

    transaction: Event | None
    policy: list[Event] = field(default_factory=list)
    members: list[QueueRecord] | None = None  # a list post's copies from Mailman, once looked up
    members_note: str = ""  # why the copies are unknown (no Postfix log readable)

    @property
    def when(self) -> str:
        if self.transaction is not None:
            return str(self.transaction.get("ts", ""))
        return str(self.policy[0].get("ts", "")) if self.policy else ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"transaction": self.transaction, "policy": self.policy}
        if self.members is not None or self.members_note:
            out["members"] = None if self.members is None else [m.as_dict() for m in self.members]
            out["members_note"] = self.members_note or None
        return out


def _lower(value: object) -> str:
    return str(value or "").strip().removeprefix("<").removesuffix(">").lower()


def recipients_of(transaction: Mapping[str, Any]) -> list[str]:
    """Bare recipient addresses, from either recipient shape the milter logs."""
    return [r.address for r in TransactionEvent.from_json(transaction).recipients]


def _policy_groups(decisions: Sequence[Event]) -> list[list[Event]]:
    """Decisions of one SMTP transaction together (same instance), in log order."""
    groups: dict[str, list[Event]] = {}
    singles: list[list[Event]] = []
    for d in decisions:
        key = d.get("instance")
        if key:
            groups.setdefault(str(key), []).append(d)
        else:
            singles.append([d])
    return [*groups.values(), *singles]


def _joins_by_address(group: Sequence[Event], tx: Mapping[str, Any]) -> bool:
    when = event_time(dict(tx))
    rcpts = {_lower(r) for r in recipients_of(tx)}
    for d in group:
        at = event_time(d)
        if (
            _lower(d.get("sender")) == _lower(tx.get("sender"))
            and _lower(d.get("recipient")) in rcpts
            and when is not None
            and at is not None
            and timedelta(0) <= when - at <= RCPT_WINDOW
        ):
            return True
    return False


def assemble(events: Iterable[Event]) -> list[Trace]:
    """Join every transaction with its policy decisions; leftover decisions stand alone."""
    transactions: list[Event] = []
    decisions: list[Event] = []
    for e in events:
        if e.get("event") == "transaction":
            transactions.append(e)
        elif e.get("event") in POLICY_EVENTS:
            decisions.append(e)
    groups = _policy_groups(decisions)
    by_queue: dict[str, int] = {}
    # (sender, recipient) -> the groups that decided it: a transaction looks only at these,
    # not at every group of the log (days of logs hold tens of thousands)
    by_address: dict[tuple[str, str], set[int]] = {}
    for position, group in enumerate(groups):
        for d in group:
            if d.get("queue_id"):
                by_queue[str(d["queue_id"])] = position
            key = (_lower(d.get("sender")), _lower(d.get("recipient")))
            by_address.setdefault(key, set()).add(position)
    used: set[int] = set()
    traces = []
    for tx in transactions:
        trace = Trace(tx)
        index: int | None = by_queue.get(str(tx.get("queue_id") or ""))
        if index is None or index in used:
            # the latest unused group before the transaction with this sender and recipient
            sender = _lower(tx.get("sender"))
            nearby = set().union(
                *(by_address.get((sender, _lower(r)), set()) for r in recipients_of(tx))
            )
            candidates = [
                i for i in sorted(nearby) if i not in used and _joins_by_address(groups[i], tx)
            ]
            index = candidates[-1] if candidates else None
        if index is not None:
            used.add(index)
            trace.policy = groups[index]
        traces.append(trace)
    traces += [Trace(None, g) for i, g in enumerate(groups) if i not in used]
    return sorted(traces, key=lambda t: t.when)


def matches(trace: Trace, query: str) -> bool:
    """QUERY is a queue id, a Message-ID (with or without <>), or a sender/recipient address."""
    wanted = _lower(query)
    values: list[object] = []
    if trace.transaction is not None:
        tx = trace.transaction
        values += [tx.get("queue_id"), tx.get("message_id"), tx.get("sender")]
        values += recipients_of(tx)
    for d in trace.policy:
        values += [d.get("queue_id"), d.get("sender"), d.get("recipient")]
    return any(_lower(v) == wanted for v in values if v)


def find(events: Iterable[Event], query: str) -> list[Trace]:
    return [t for t in assemble(events) if matches(t, query)]


# --- a list post's member deliveries (Postfix's log) ------------------------------------------


def is_list_post(transaction: Mapping[str, Any]) -> bool:
    """Mailman took the message for a list: its copies to the members follow in Postfix's log."""
    return any(
        r.mailing_list and r.outcome == RecipientOutcome.DELIVERED
        for r in TransactionEvent.from_json(transaction).recipients
    )


def _post_id(trace: Trace) -> str:
    """The normalized Message-ID of a list post's trace, or "" (not a post, or no id)."""
    tx = trace.transaction
    return _lower(tx.get("message_id")) if tx is not None and is_list_post(tx) else ""


def is_mailman_copy(record: QueueRecord) -> bool:
    return record.received_by == LISTS_SMTPD


def attach_members(posts: Sequence[Trace], records: Iterable[QueueRecord], now: datetime) -> None:
    """Give each list post in `posts` the copies Mailman sent of it.

    `posts` should hold every post with the Message-IDs concerned (not only the ones asked
    for), so that a copy of a second send does not land on the first. `now` (local, aware)
    dates Postfix's zone-less stamps.
    """
    by_id: dict[str, list[Trace]] = {}
    for trace in posts:
        if mid := _post_id(trace):
            trace.members = []
            by_id.setdefault(mid, []).append(trace)
    own = {str(t.transaction.get("queue_id")) for t in posts if t.transaction is not None}
    for record in records:
        group = by_id.get(_lower(record.message_id))
        if group and is_mailman_copy(record) and record.queue_id not in own:
            owner = _owner(group, record, now)
            assert owner.members is not None  # set above for every trace of a group
            owner.members.append(record)


def _owner(group: Sequence[Trace], record: QueueRecord, now: datetime) -> Trace:
    """The latest post before the copy arrived (the first post if times do not tell)."""
    if len(group) == 1:
        return group[0]
    arrived = stamp_time(record.first_seen, now)
    dated = [(event_time(t.transaction or {}), t) for t in group]
    before = [(when, t) for when, t in dated if when and arrived and when <= arrived + COPY_SLACK]
    return max(before, key=lambda item: item[0])[1] if before else group[0]


# --- rendering ---------------------------------------------------------------------------------


def sorted_tests(tests: Mapping[str, Any]) -> list[tuple[str, float]]:
    """Heaviest first, whatever the sign: what moved the score most comes first."""
    numeric = [(name, float(score)) for name, score in tests.items()]
    return sorted(numeric, key=lambda item: (-abs(item[1]), item[0]))


def _score(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"


def _spam_lines(spam: Mapping[str, Any]) -> list[str]:
    if not spam:
        return ["  spam      -"]
    if "unscanned" in spam:
        return [f"  spam      not scored ({spam['unscanned']}): {spam.get('reason', '')}"]
    precise = "" if spam.get("precise", True) else ", one decimal only"
    lines = [f"  spam      score {_score(float(spam['score']))} ({spam.get('backend')}{precise})"]
    for name, score in sorted_tests(spam.get("tests") or {}):
        lines.append(f"            {score:>9.3f}  {name}")
    return lines


def _virus_line(virus: Mapping[str, Any]) -> str:
    if not virus:
        return "  virus     -"
    if "unscanned" in virus:
        return f"  virus     not scanned ({virus['unscanned']}): {virus.get('reason', '')}"
    found = virus.get("found")
    return f"  virus     {'FOUND ' + str(found) if found else 'clean'} ({virus.get('backend')})"


def _policy_line(d: Mapping[str, Any]) -> str:
    ts = str(d.get("ts", ""))[11:23]
    detail = f" [{d['detail']}]" if d.get("detail") else ""
    return (
        f"  policy    {ts} RCPT {d.get('recipient') or '-'}: {d.get('decision')} "
        f"({d.get('action')}) {d.get('reason') or ''}{detail}"
    ).rstrip()


def render(trace: Trace) -> str:
    """Readable, one fact per line, in the order things happened."""
    tx = trace.transaction
    lines: list[str] = []
    if tx is None:
        first = trace.policy[0]
        lines.append(
            f"{trace.when}  refused at RCPT (no DATA)  "
            f"queue id {first.get('queue_id') or '-'}  instance {first.get('instance') or '-'}"
        )
        lines.append(f"  client    {first.get('client_name')} [{first.get('client_address')}]")
        lines.append(f"  from      {first.get('sender') or '<>'}")
        lines += [_policy_line(d) for d in trace.policy]
        return "\n".join(lines)
    client = tx.get("client") or {}
    mid = tx.get("message_id") or ""
    lines.append(f"{trace.when}  queue id {tx.get('queue_id') or '-'}  {mid}")
    lines.append(
        f"  client    {client.get('name')} [{client.get('addr')}] helo={client.get('helo')}"
        f" tls={client.get('tls') or '-'} sasl={client.get('sasl_user') or '-'}"
    )
    lines.append(f"  from      {tx.get('sender') or '<>'}  ({tx.get('size', '?')} bytes)")
    lines += [_policy_line(d) for d in trace.policy]
    lines += _auth_lines(tx.get("auth"))
    lines += _spam_lines(tx.get("spam") or {})
    lines.append(_virus_line(tx.get("virus") or {}))
    action = f"  action    {tx.get('action')} ({tx.get('reason')})"
    if tx.get("would_action"):
        action += f"; shadow mode, would {tx['would_action']}: {tx.get('would_reply')}"
    lines.append(action)
    if tx.get("error"):
        lines.append(f"  error     {tx['error']}")
    delivery = tx.get("delivery")
    if delivery:
        lines.append(f"  delivery  {delivery.get('rule')}: {delivery.get('explanation')}")
    for r in tx.get("recipients") or []:
        if "outcome" in r:
            where = "LMTP" if r.get("local") else "queue"
            reply = r.get("reply") or "-"
            lines.append(f"  rcpt      {r.get('recipient')}  {r['outcome']} ({where}) {reply}")
        else:
            lines.append(f"  rcpt      {r.get('address')}")
    lines.append(f"  reply     {tx.get('reply')}")
    timings = tx.get("timings_ms") or {}
    order = ["auth", "clamd", "spamd", "scan", "lmtp", "total"]
    spent = [f"{k} {timings[k]} ms" for k in order if k in timings]
    lines.append(f"  timings   {', '.join(spent) or '-'}")
    lines += _member_lines(trace)
    return "\n".join(lines)


def _auth_lines(auth: object) -> list[str]:
    """SPF, each DKIM signature and DMARC on one line, as the milter judged the sender."""
    if not isinstance(auth, dict):
        return []
    spf = auth.get("spf") or {}
    parts = [f"spf={spf.get('result')} ({spf.get('domain') or '-'})"]
    signatures = auth.get("dkim") or []
    parts += [f"dkim={d.get('result')} ({d.get('domain') or '-'})" for d in signatures] or [
        "dkim=none"
    ]
    dmarc = auth.get("dmarc") or {}
    policy = f" p={dmarc['policy']}" if dmarc.get("policy") else ""
    parts.append(f"dmarc={dmarc.get('result')} ({dmarc.get('header_from') or '-'}{policy})")
    return [f"  auth      {' '.join(parts)} -> {auth.get('action')}"]


def _member_lines(trace: Trace) -> list[str]:
    """Each copy Mailman sent back, then one line per delivery attempt, by recipient."""
    if trace.members_note:
        return [f"  members   {trace.members_note}"]
    if trace.members is None:
        return []
    if not trace.members:
        return [
            "  members   no copy from Mailman in Postfix's log (yet): held for moderation, "
            "still in Mailman's queues, or logged elsewhere (--maillog)"
        ]
    lines = []
    for copy in trace.members:
        count = f"{copy.nrcpt} recipients" if copy.nrcpt is not None else "recipients unknown"
        queued = "" if copy.removed else ", still queued"
        lines.append(
            f"  members   {copy.queue_id} from Mailman "
            f"(<{copy.sender or ''}>, {count}{queued}) {copy.first_seen}"
        )
        attempts = sorted(copy.deliveries, key=lambda d: d.recipient.lower())
        lines += [_delivery_line(copy.queue_id, d) for d in attempts]
        lines += [f"  member    {copy.queue_id} {note}" for note in copy.notes]
    return lines


def _delivery_line(queue_id: str, d: Delivery) -> str:
    status = d.status if d.status == "sent" else d.status.upper()
    to = f"{d.recipient} (for {d.orig_to})" if d.orig_to else d.recipient
    return (
        f"  member    {queue_id} {_clock(d.stamp)} {to}: {status} via {d.agent} "
        f"{d.relay} ({d.reply})"
    )


def _clock(stamp: str) -> str:
    """The time of day in Postfix's stamp, as logged (RFC 3339 or `Dec 01 08:19:49`)."""
    return stamp[11:19] if stamp[:1].isdigit() else stamp.split()[-1]


def command(
    query: str,
    files: Sequence[str],
    since: str | None,
    until: str | None,
    as_json: bool,
    maillogs: Sequence[str] = (),
) -> int:
    """`mailglue trace`: print every transaction (and RCPT decision) matching `query`.

    A list post also gets its members' deliveries from Postfix's log (`maillogs`).
    """
    now = datetime.now(UTC)
    try:
        start = parse_time(since, now) if since else None
        end = parse_time(until, now) if until else None
    except ValueError as exc:
        print(f"mailglue trace: {exc}", file=sys.stderr)
        return 2
    everything = assemble(parse_events(read_lines(log_sources(files))))
    found = [t for t in everything if matches(t, query)]
    if not found and is_queue_id(query):
        found = _by_copy_queue_id(everything, query, maillogs)
    traces = [trace for trace in found if in_window({"ts": trace.when}, start, end)]
    _add_members(everything, traces, maillogs)
    for trace in traces:
        if as_json:
            print(json.dumps(trace.as_dict(), ensure_ascii=False))
        else:
            print(render(trace), end="\n\n")
    if not traces:
        print(f"mailglue trace: nothing found for {query!r}", file=sys.stderr)
        return 1
    return 0


def _add_members(
    everything: Sequence[Trace], traces: Sequence[Trace], maillogs: Sequence[str]
) -> None:
    """Look the list posts among `traces` up in Postfix's log (read only if there is one)."""
    ids = {mid for t in traces if (mid := _post_id(t))}
    if not ids:
        return
    records, problems = read_maillog(maillogs, lambda r: _lower(r.message_id) in ids)
    posts = [t for t in everything if _post_id(t) in ids]
    if records is None:
        note = f"member deliveries unknown: no Postfix log was readable ({'; '.join(problems)})"
        for trace in posts:
            trace.members_note = note
        return
    for problem in problems:
        print(f"mailglue trace: cannot read {problem}", file=sys.stderr)
    attach_members(posts, records, datetime.now().astimezone())


def _by_copy_queue_id(
    everything: Sequence[Trace], queue_id: str, maillogs: Sequence[str]
) -> list[Trace]:
    """The list post a member's copy (queue id from Postfix's log) was made from."""
    records, _ = read_maillog(maillogs, lambda r: r.queue_id == queue_id)
    ids = {_lower(r.message_id) for r in records or [] if is_mailman_copy(r) and r.message_id}
    return [t for t in everything if _post_id(t) in ids]
