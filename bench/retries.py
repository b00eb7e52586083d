"""`python -m bench.retries`: what the scan memo saves on a mix of mail with retries.

One mailglue milter (LMTP mode) on the usual daemons. Three kinds of message, all 5 KB:

- fresh: sent once, delivered;
- retried: first sent while Cyrus is stopped, so the client gets our 451; sent again, byte
  for byte, once Cyrus is back (a sending MTA's retry);
- re-sent: a copy of a delivered fresh message sent again (a sender's retry after a lost 250,
  a list re-send).

Counted from the milter's own transaction events: how often spamd was asked, how often the
memo answered (`spam.cached`), and spamd calls per accepted message. Without the memo every
retry and re-send would pay spamd again: the calls would be one per transaction.

    python -m bench.retries                       # 100 fresh, 50 retried, 50 re-sent
    python -m bench.retries --fresh 20 --retried 10 --resent 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from . import meter, report
from .corpus import RECIPIENT, template
from .load import Result, run_parallel, smtp_one
from .stack import Stack, Target

RESULTS = Path(__file__).parent / "results"
KINDS = ("fresh", "retried", "resent")


def send(target: Target, wires: list[bytes], concurrency: int) -> Result:
    assert target.postfix is not None
    address = target.postfix.address
    return run_parallel(
        len(wires), concurrency, lambda i: smtp_one(address, wires[i], 300, RECIPIENT)
    )


def count_events(events: Path, tag: str) -> dict[str, int]:
    """This run's transactions by outcome, and how spamd's answer was had."""
    counts = {"transactions": 0, "accepted": 0, "tempfailed": 0, "spamd_asked": 0, "cached": 0}
    for text in events.read_text().splitlines():
        event = json.loads(text)
        if event.get("event") != "transaction" or tag not in (event.get("message_id") or ""):
            continue
        counts["transactions"] += 1
        if event.get("action") in ("delivered", "accept"):
            counts["accepted"] += 1
        elif event.get("action") == "tempfail":
            counts["tempfailed"] += 1
        spam = event.get("spam") or {}
        if spam.get("cached"):
            counts["cached"] += 1
        elif "score" in spam:
            counts["spamd_asked"] += 1
    return counts


def measure(
    stack: Stack, fresh: int, retried: int, resent: int, concurrency: int
) -> dict[str, Any]:
    target = stack.targets["mailglue"]
    assert target.events is not None
    tag = f"retries-{uuid.uuid4().hex[:10]}"
    tpl = template("5KB")
    fresh_wires = [tpl.wire(f"<{tag}.fresh.{i}@bench.relay.test>") for i in range(fresh)]
    retry_wires = [tpl.wire(f"<{tag}.retry.{i}@bench.relay.test>") for i in range(retried)]
    codes: dict[str, list[int]] = {}
    codes["fresh"] = send(target, fresh_wires, concurrency).codes
    stack.cyrus.stop()
    try:
        codes["refused while Cyrus is down"] = send(target, retry_wires, concurrency).codes
    finally:
        stack.cyrus.start()
    codes["retried"] = send(target, retry_wires, concurrency).codes
    codes["resent"] = send(target, fresh_wires[:resent], concurrency).codes
    counts = count_events(target.events, tag)
    answered = counts["spamd_asked"] + counts["cached"]
    return {
        "sent": {kind: len(c) for kind, c in codes.items()},
        "replies": {kind: sorted(set(c)) for kind, c in codes.items()},
        **counts,
        "hit_rate": round(counts["cached"] / max(answered, 1), 3),
        "spamd_calls_per_accepted": round(counts["spamd_asked"] / max(counts["accepted"], 1), 3),
        "spamd_calls_without_memo_per_accepted": round(answered / max(counts["accepted"], 1), 3),
    }


def markdown(row: dict[str, Any], plan: str, info: dict[str, Any]) -> str:
    replies = "; ".join(
        f"{kind}: {row['sent'][kind]} sent, replies {row['replies'][kind]}" for kind in row["sent"]
    )
    return "\n".join(
        [
            "# The scan memo on a mix with retries",
            "",
            f"{plan}. Machine: {info['cpu']}, {info['cores']} cores; {info['os']}.",
            "",
            f"Replies: {replies}.",
            "",
            "| transactions | accepted | 451 | spamd asked | memo answered | hit rate "
            "| spamd calls per accepted message | the same without the memo |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {row['transactions']} | {row['accepted']} | {row['tempfailed']} "
            f"| {row['spamd_asked']} | {row['cached']} | {row['hit_rate']:.3f} "
            f"| {row['spamd_calls_per_accepted']:.3f} "
            f"| {row['spamd_calls_without_memo_per_accepted']:.3f} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retries", description=__doc__)
    parser.add_argument("--fresh", type=int, default=100)
    parser.add_argument("--retried", type=int, default=50)
    parser.add_argument("--resent", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.resent > args.fresh:
        parser.error("--resent copies fresh messages: it cannot be above --fresh")
    root = Path(tempfile.mkdtemp(prefix="mailglue-bench-retries-"))
    root.chmod(0o755)
    stack = Stack(root)
    try:
        stack.start_backends()
        stack.add("mailglue")
        row = measure(stack, args.fresh, args.retried, args.resent, args.concurrency)
    finally:
        stack.stop()
        meter.release_all()
        shutil.rmtree(root, ignore_errors=True)
    plan = (
        f"`python -m bench.retries`: {args.fresh} fresh 5 KB messages, {args.retried} sent "
        f"while Cyrus was stopped and again once it was back, {args.resent} fresh ones sent "
        f"a second time; {args.concurrency} concurrent senders; memo_ttl at its default"
    )
    text = markdown(row, plan, report.machine())
    report.save_latest(args.out, "retries", text, {"plan": plan, "row": row})
    expected_accepted = args.fresh + args.retried + args.resent
    if row["accepted"] != expected_accepted or row["spamd_calls_per_accepted"] > 1.0:
        print(f"expected {expected_accepted} accepted and at most one spamd call per message")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
