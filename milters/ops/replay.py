"""`mailglue replay`: one message through the milter's own scan and verdict, nothing delivered.

"Would this have been rejected with the new thresholds?" and "why did this message score
4.8?" are answered by running the stored copy again against the configured spamd and clamd.
The message goes through the same steps as at end-of-DATA: the headers mailglue owns are
removed first (a stored copy carries our X-Spam-* from the first pass), the scanner runs both
backends within the time budget, and `shadow_decide` gives the verdict (and, in shadow mode,
the one it would have applied).

A Received line is added only if the message has none (a draft, not a stored copy): the
milter adds one because Postfix hides its own, and without any spamd scores NO_RECEIVED.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from milters.common.jsonlog import json_default
from milters.ops.trace import sorted_tests
from milters.scan.config import MilterConfig
from milters.scan.event import scan_fields, shadow_json, shadow_of
from milters.scan.headers import (
    ClientInfo,
    is_owned,
    received_header,
    render,
    render_as_received,
)
from milters.scan.scanner import Scanner, ScanReport
from milters.scan.service import verdict_policy
from milters.scan.shadow import ShadowVerdict, shadow_decide
from milters.scan.spool import Spool
from milters.scan.verdict import format_score


@dataclass(frozen=True)
class ParsedMessage:
    headers: list[tuple[str, str]]
    body: bytes


def split_message(raw: bytes) -> ParsedMessage:
    """Header fields (continuation lines kept, as the milter receives them) and the body."""
    text = raw.replace(b"\r\n", b"\n")
    head, sep, body = text.partition(b"\n\n")
    if not sep and b":" not in head.split(b"\n", 1)[0]:
        head, body = b"", text  # no header block at all
    headers: list[tuple[str, str]] = []
    for line in head.decode("utf-8", "surrogateescape").split("\n"):
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line)
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.rstrip(), value))  # as the milter gets it (P_HDR_LEADSPC)
    return ParsedMessage(headers, body.replace(b"\n", b"\r\n"))


def scan_prefix(headers: list[tuple[str, str]], hostname: str, recipients: list[str]) -> bytes:
    """The header block sent to the scanners: ours removed, a Received line if none."""
    kept = render_as_received((n, v) for n, v in headers if not is_owned(n))
    if not any(n.lower() == "received" for n, _ in headers):
        client = ClientInfo(addr="127.0.0.1", name="localhost", helo="replay")
        kept = render([received_header(client, hostname, "", recipients, datetime.now(UTC))]) + kept
    return kept + b"\r\n"


def replay(
    config: MilterConfig, raw: bytes, sender: str, recipients: list[str]
) -> tuple[ShadowVerdict, ScanReport]:
    """Scan `raw` with the configured backends and decide, as the milter would."""
    message = split_message(raw)
    prefix = scan_prefix(message.headers, config.hostname, recipients)
    scanner = Scanner(config, workers=2)
    spool = Spool(config.spool_memory_limit, config.spool_dir)
    try:
        spool.write(message.body)
        deadline = time.monotonic() + config.time_budget
        report = scanner.scan(prefix, spool, deadline, lambda: None)
    finally:
        spool.close()
        scanner.shutdown()
    verdict = shadow_decide(report.virus, report.spam, verdict_policy(config), config.shadow)
    return verdict, report


def describe(
    verdict: ShadowVerdict, report: ScanReport, sender: str, recipients: list[str]
) -> dict[str, Any]:
    """The decision as a JSON-ready dict, shaped like the milter's transaction event."""
    applied = verdict.applied
    spam, virus = scan_fields(report)
    result: dict[str, Any] = {
        "sender": sender,
        "recipients": recipients,
        "spam": spam.to_json(),
        "virus": virus.to_json(),
        "action": applied.action.value,
        "reason": applied.reason,
        "reply": str(applied.reply) if applied.reply else "250 (accepted)",
        "headers_added": dict(applied.headers),
        "timings_ms": report.timings_ms,
    }
    would = shadow_of(verdict)
    if would is not None:
        result.update(shadow_json(would))
    return result


def render_decision(result: dict[str, Any], *, as_json: bool = False) -> str:
    """`mailglue replay`'s output: the decision as JSON, or one fact per line."""
    if as_json:
        # Decimal scores as JSON numbers, like the milter's log (jq can compare them)
        return json.dumps(result, default=json_default, ensure_ascii=False)
    spam = result["spam"]
    lines = [f"action   {result['action']} ({result['reason']})", f"reply    {result['reply']}"]
    if "would_action" in result:
        lines.append(f"shadow   would {result['would_action']}: {result['would_reply']}")
    if "score" in spam:
        lines.append(f"score    {format_score(spam['score'])}")
        lines += [f"         {score:>9.3f}  {name}" for name, score in sorted_tests(spam["tests"])]
    else:
        lines.append(f"spam     not scored: {spam.get('reason')}")
    virus = result["virus"]
    lines.append(f"virus    {virus.get('found') or virus.get('reason') or 'clean'}")
    lines += [f"header   {name}: {value}" for name, value in result["headers_added"].items()]
    return "\n".join(lines)
