"""`mailglue trace`: everything the logs know about one message, put back together.

The milter logs one `transaction` event per message, the policy service one
`policy_decision` per RCPT; an admin asking "why did this mail bounce?" needs both, joined.
This module is the pure core: events in, traces out, and a text rendering. No files here.

Joining a policy decision to its transaction:
1. by queue id: Postfix passes `queue_id` to the policy service once the queue file exists
   (usually from the second RCPT on), and the milter logs the same id;
2. by `instance`: Postfix gives every request of one SMTP transaction the same instance, so
   one decision with the queue id brings its siblings (the first RCPT, rejected ones);
3. otherwise by sender + recipient, the decision up to `RCPT_WINDOW` before the transaction.
Decisions that join no transaction (every recipient refused at RCPT, so no DATA) form traces of
their own: they answer "why did mail to the new user bounce?".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from milters.ops.logread import event_time, in_window, log_sources, parse_time, read_events
from milters.scan.event import TransactionEvent

POLICY_EVENTS = ("policy_decision", "policy")
RCPT_WINDOW = timedelta(minutes=15)

Event = dict[str, Any]


@dataclass
class Trace:
    """One message (or one refused attempt): its transaction, if any, and its RCPT decisions."""

    transaction: Event | None
    policy: list[Event] = field(default_factory=list)

    @property
    def when(self) -> str:
        if self.transaction is not None:
            return str(self.transaction.get("ts", ""))
        return str(self.policy[0].get("ts", "")) if self.policy else ""

    def as_dict(self) -> dict[str, Any]:
        return {"transaction": self.transaction, "policy": self.policy}


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
    for position, group in enumerate(groups):
        for d in group:
            if d.get("queue_id"):
                by_queue[str(d["queue_id"])] = position
    used: set[int] = set()
    traces = []
    for tx in transactions:
        trace = Trace(tx)
        index: int | None = by_queue.get(str(tx.get("queue_id") or ""))
        if index is None or index in used:
            # the latest unused group before the transaction with this sender and recipient
            candidates = [
                i for i, g in enumerate(groups) if i not in used and _joins_by_address(g, tx)
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
    order = ["clamd", "spamd", "scan", "lmtp", "total"]
    spent = [f"{k} {timings[k]} ms" for k in order if k in timings]
    lines.append(f"  timings   {', '.join(spent) or '-'}")
    return "\n".join(lines)


def command(
    query: str, files: Sequence[str], since: str | None, until: str | None, as_json: bool
) -> int:
    """`mailglue trace`: print every transaction (and RCPT decision) matching `query`."""
    now = datetime.now(UTC)
    try:
        start = parse_time(since, now) if since else None
        end = parse_time(until, now) if until else None
    except ValueError as exc:
        print(f"mailglue trace: {exc}", file=sys.stderr)
        return 2
    traces = [
        trace
        for trace in find(read_events(log_sources(files)), query)
        if in_window({"ts": trace.when}, start, end)
    ]
    for trace in traces:
        if as_json:
            print(json.dumps(trace.as_dict(), ensure_ascii=False))
        else:
            print(render(trace), end="\n\n")
    if not traces:
        print(f"mailglue trace: nothing found for {query!r}", file=sys.stderr)
        return 1
    return 0
