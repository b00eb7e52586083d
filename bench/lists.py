"""`python -m bench.lists`: what a post to a 50-member list costs, beside a one-recipient message.

The stack is the deployment's list path on loopback: Postfix → mailglue's milter (spamd, clamd,
then LMTP before the 250: Cyrus for a user, Mailman for a list) → Mailman → Postfix's
re-injection smtpd (no scan milter) → Cyrus for the local members and an smtp-sink standing in
for the outside members' MX. Each repetition sends the same number of messages both ways,
interleaved, and waits until every member's copy is delivered.

What it reports, per kind of message:
- spamd scans per message, counted twice: from spamd's own log (each `checking message <id>`)
  and from the milter's events; one per post whatever the member count is the promise;
- SMTP throughput (messages answered 250 per second, while the senders were sending) and the
  p50 latency from DATA to the reply;
- fan-out: every copy delivered (Cyrus and the sink counted afterwards), and posts per second
  until the last copy was delivered;
- CPU per message of every daemon (cpuacct cgroups, bench/meter.py).

    python -m bench.lists                      # 50 members (40 local, 10 outside), 3 reps
    python -m bench.lists --posts 20 --reps 1  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.harness.clamd import Clamd
from tests.harness.cyrus import Cyrus
from tests.harness.mailman import Mailman
from tests.harness.milter import ScanMilter, merge
from tests.harness.postfix import SmtpSink, reinject_service
from tests.harness.process import LOOPBACK, free_port
from tests.harness.spamd import Spamd

from . import meter, report
from .corpus import RECIPIENT, template
from .load import Result, smtp_load
from .meter import Meter, ProcessGroup
from .stack import SPAMD_CHILDREN, BenchPostfix, interleaved, milter_config, process_group

LIST = "staff@example.org"
RESULTS = Path(__file__).parent / "results"
GROUPS = ("postfix", "milter", "spamd", "clamd", "cyrus", "mailman", "sink")


@dataclass(frozen=True)
class Kind:
    """One kind of message: where it is sent, and how many copies each one makes."""

    name: str
    recipient: str
    copies: int


class ListStack:
    """Every daemon of the list path, started once; `members` local and `outside` members."""

    def __init__(self, root: Path, local: int, outside: int) -> None:
        self.root = root
        self.local = [f"member{i:02d}" for i in range(1, local + 1)]
        self.outside = [f"member{i:02d}@relay.test" for i in range(1, outside + 1)]
        self.spamd = Spamd(root / "spamd", max_children=SPAMD_CHILDREN)
        self.clamd = Clamd(root / "clamd")
        self.cyrus = Cyrus(root / "cyrus")
        self.sink = SmtpSink(root / "sink")
        reinject_port, milter_port = free_port(), free_port()
        self.mailman = Mailman(root / "mailman", (LOOPBACK, reinject_port))
        self.postfix = BenchPostfix(
            root / "postfix",
            self.cyrus.lmtp_socket,
            self.sink.address,
            f"inet:{LOOPBACK}:{milter_port}",
            {"milter_content_timeout": "600s", "default_process_limit": "200"},
            master_extra=reinject_service(reinject_port),
        )
        self.milter = ScanMilter(
            root / "milter",
            milter_port,
            merge(
                milter_config(self.spamd, self.clamd, self.cyrus),
                {"delivery": {"lists_map": str(self.mailman.transport_map)}},
            ),
        )
        self.groups = {name: ProcessGroup(name) for name in GROUPS}
        self._stops: list[Any] = []

    def start(self) -> None:
        for daemon in (self.spamd, self.clamd, self.cyrus, self.sink, self.mailman):
            daemon.start()
            self._stops.append(daemon.stop)
        for user in ["alice", *self.local]:
            self.cyrus.create_mailbox(user)
        members = [f"{u}@example.org" for u in self.local] + self.outside
        # The posts come from a non-member, as a department's announcements often do.
        self.mailman.create_list(LIST, members, {"default_nonmember_action": "accept"})
        self.milter.ensure()
        self._stops.append(self.milter.stop)
        self.postfix.start()
        self._stops.append(self.postfix.stop)
        for name, process in (
            ("spamd", self.spamd.process),
            ("clamd", self.clamd.process),
            ("cyrus", self.cyrus.process),
            ("mailman", self.mailman.process),
            ("milter", self.milter.process),
            ("sink", self.sink.process),
        ):
            self.groups[name].adopt(process_group(process))
        master = self.postfix.master_pid()
        assert master is not None, "postfix master not running"
        self.groups["postfix"].adopt(os.getpgid(master))

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()

    def delivered(self) -> int:
        """Copies in the local members' INBOXes and alice's, plus recipients the sink took."""
        stored = sum(self.cyrus.count(user) for user in ["alice", *self.local])
        sunk = sum(m.count(b"X-Rcpt-Args: ") for m in self.sink.messages())
        return stored + sunk

    def settle(self, timeout: float = 600) -> float:
        """Until Postfix's and Mailman's queues are empty (twice, for the copies Mailman sent
        last); returns when that was."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            busy = self.postfix.queued() or self.mailman.busy()
            quiet = 0 if busy else quiet + 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"still busy after {timeout}s: {self.mailman.queued()}")
            time.sleep(0.05)
        return time.monotonic()


def spamd_checks(log: Path, tag: str) -> int:
    """Messages of this run that spamd itself says it checked."""
    pattern = re.compile(rf"checking message <{re.escape(tag)}\.")
    return sum(1 for line in log.read_text(errors="replace").splitlines() if pattern.search(line))


def milter_scans(events: Path, tag: str) -> int:
    """Messages of this run the milter had spamd score (memo reuses not counted)."""
    count = 0
    for text in events.read_text().splitlines():
        event = json.loads(text)
        spam = event.get("spam")
        if (
            event.get("event") == "transaction"
            and tag in str(event.get("message_id") or "")
            and isinstance(spam, dict)
            and "score" in spam
            and not spam.get("cached")
        ):
            count += 1
    return count


def run_one(stack: ListStack, kind: Kind, count: int, concurrency: int) -> dict[str, Any]:
    tag = f"{kind.name}-{uuid.uuid4().hex[:10]}"
    to = f"<{kind.recipient}>"
    tpl = template("5KB", to=to)
    before = stack.delivered()
    m = Meter(list(stack.groups.values()))
    m.start()
    result: Result = smtp_load(stack.postfix.address, tpl, tag, count, concurrency, kind.recipient)
    done = stack.settle()
    reading = m.stop()
    copies = stack.delivered() - before
    sending = max(result.replied - result.started, 1e-9)
    whole = max(done - result.started, 1e-9)
    accepted = max(result.accepted, 1)
    return {
        "kind": kind.name,
        "messages": count,
        "accepted": result.accepted,
        "tempfails": result.tempfails,
        "errors": result.errors[:3],
        "copies_expected": result.accepted * kind.copies,
        "copies_delivered": copies,
        "spamd_checks_per_message": round(spamd_checks(stack.spamd.log_path, tag) / accepted, 3),
        "milter_scans_per_message": round(
            milter_scans(stack.milter.events_path, tag) / accepted, 3
        ),
        "accepted_per_s": round(result.accepted / sending, 2),
        "delivered_messages_per_s": round(result.accepted / whole, 2),
        "copies_per_s": round(copies / whole, 1),
        "p50_ms": round(report.percentile(result.latencies_ms, 0.5), 1),
        "cpu_ms_per_message": {
            name: round(cpu * 1000 / accepted, 1) for name, cpu in reading.cpu_seconds.items()
        },
    }


def summarize(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over the repetitions, per kind; the copy counts summed (all must match)."""
    rows = []
    for kind in dict.fromkeys(s["kind"] for s in samples):
        group = [s for s in samples if s["kind"] == kind]

        def med(key: str, group: list[dict[str, Any]] = group) -> float:
            return round(statistics.median(float(s[key]) for s in group), 3)

        cpu = {
            name: round(statistics.median(s["cpu_ms_per_message"][name] for s in group), 1)
            for name in GROUPS
        }
        rows.append(
            {
                "kind": kind,
                "reps": len(group),
                "messages": sum(s["messages"] for s in group),
                "accepted": sum(s["accepted"] for s in group),
                "copies_expected": sum(s["copies_expected"] for s in group),
                "copies_delivered": sum(s["copies_delivered"] for s in group),
                "spamd_checks_per_message": med("spamd_checks_per_message"),
                "milter_scans_per_message": med("milter_scans_per_message"),
                "accepted_per_s": med("accepted_per_s"),
                "delivered_messages_per_s": med("delivered_messages_per_s"),
                "copies_per_s": med("copies_per_s"),
                "p50_ms": med("p50_ms"),
                "cpu_ms_per_message": cpu,
                "cpu_ms_total": round(sum(cpu.values()), 1),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], plan: str, info: dict[str, Any]) -> str:
    lines = [
        f"# List fan-out benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{plan}. Machine: {info['cpu']}, {info['cores']} cores; {info['os']}; "
        f"Postfix {info['postfix']}; {info['spamassassin'].split(chr(10))[0]}.",
        "",
        "| message | accepted | copies delivered / expected | spamd scans per message "
        "(spamd log / milter events) | accepted msg/s | msg/s until every copy is delivered | "
        "copies/s | p50 DATA→250 ms | CPU ms per message: total (spamd, Mailman, Postfix, "
        "Cyrus, milter, clamd) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["cpu_ms_per_message"]
        lines.append(
            f"| {r['kind']} | {r['accepted']}/{r['messages']} | "
            f"{r['copies_delivered']}/{r['copies_expected']} | "
            f"{r['spamd_checks_per_message']:.3f} / {r['milter_scans_per_message']:.3f} | "
            f"{r['accepted_per_s']:.1f} | {r['delivered_messages_per_s']:.1f} | "
            f"{r['copies_per_s']:.0f} | {r['p50_ms']:.0f} | {r['cpu_ms_total']:.0f} ("
            f"{c['spamd']:.0f}, {c['mailman']:.0f}, {c['postfix']:.0f}, {c['cyrus']:.0f}, "
            f"{c['milter']:.0f}, {c['clamd']:.0f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lists", description=__doc__)
    parser.add_argument("--local", type=int, default=40, help="members with a mailbox here")
    parser.add_argument("--outside", type=int, default=10, help="members at the remote MX")
    parser.add_argument("--posts", type=int, default=40, help="messages per kind and rep")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the stack's temp dir")
    args = parser.parse_args(argv)
    members = args.local + args.outside
    kinds = [Kind("single", RECIPIENT, 1), Kind(f"list-{members}", LIST, members)]
    root = Path(tempfile.mkdtemp(prefix="mailglue-bench-lists-"))
    root.chmod(0o755)
    stack = ListStack(root, args.local, args.outside)
    try:
        stack.start()
        samples = interleaved(
            kinds,
            args.reps,
            lambda k: run_one(stack, k, args.posts, args.concurrency),
            lambda k: run_one(stack, k, 5, 5),  # load rules, fork children, open connections
        )
    finally:
        stack.stop()
        meter.release_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows = summarize(samples)
    plan = (
        f"`python -m bench.lists`: {args.posts} messages of 5 KB per kind and repetition, "
        f"{args.concurrency} concurrent senders, {args.reps} repetitions interleaved; the list "
        f"has {members} members ({args.local} local, {args.outside} at the remote MX)"
    )
    text = markdown(rows, plan, report.machine())
    report.save_latest(args.out, "lists", text, {"plan": plan, "rows": rows, "samples": samples})
    wrong = [r["kind"] for r in rows if r["copies_delivered"] != r["copies_expected"]]
    if wrong:
        print(f"copies missing or extra for: {', '.join(wrong)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
