"""`python -m bench.auth`: what the SPF, DKIM and DMARC checks add per message.

Two milters side by side on the same daemons (spamd, clamd, Cyrus), each behind its own
Postfix: one checks every message (its DNS is NSD serving the test sender domains of
tests/harness/senders.py), the other has `auth.enabled: false`. Every message is a 5 KB
message from `good.sender.test`, DKIM-signed, whose SPF allows the sender: the full path
(SPF record, DKIM key, DMARC policy, one RSA verification, alignment, the header). The two
are driven in interleaved repetitions; reported: the milter's CPU per message, the p50 and
p90 latency from DATA to the 250, and the ratio of each (checked / unchecked).

    python -m bench.auth                      # 200 messages per variant, 3 repetitions
    python -m bench.auth --messages 50 --reps 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.harness.clamd import Clamd
from tests.harness.cyrus import Cyrus
from tests.harness.milter import ScanMilter
from tests.harness.postfix import SmtpSink
from tests.harness.process import LOOPBACK, free_port
from tests.harness.senders import SenderDomains, domain
from tests.harness.spamd import Spamd

from . import meter, report
from .corpus import RECIPIENT, template
from .load import Result, run_parallel, smtp_one
from .meter import Meter, ProcessGroup
from .stack import SPAMD_CHILDREN, BenchPostfix, interleaved, milter_config, process_group

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("checked", "unchecked")
AUTHOR = f"bob@{domain('good')}"


class AuthStack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.senders = SenderDomains()
        self.spamd = Spamd(root / "spamd", max_children=SPAMD_CHILDREN)
        self.clamd = Clamd(root / "clamd")
        self.cyrus = Cyrus(root / "cyrus")
        self.sink = SmtpSink(root / "sink")
        self.milters: dict[str, ScanMilter] = {}
        self.postfixes: dict[str, BenchPostfix] = {}
        self.groups: dict[str, ProcessGroup] = {}
        self._stops: list[Any] = []

    def start(self) -> None:
        for daemon in (self.spamd, self.clamd, self.cyrus, self.sink):
            daemon.start()
            self._stops.append(daemon.stop)
        self.cyrus.create_mailbox("alice")
        nsd = self.senders.serve(self.root / "nsd")
        self._stops.append(nsd.stop)
        auth = {
            "checked": {"nameservers": [nsd.server], "trusted_networks": []},
            "unchecked": {"enabled": False},
        }
        for name in VARIANTS:
            port = free_port()
            milter = ScanMilter(
                self.root / f"milter-{name}",
                port,
                {**milter_config(self.spamd, self.clamd, self.cyrus), "auth": auth[name]},
            )
            milter.ensure()
            self._stops.append(milter.stop)
            postfix = BenchPostfix(
                self.root / f"postfix-{name}",
                self.cyrus.lmtp_socket,
                self.sink.address,
                f"inet:{LOOPBACK}:{port}",
                {"milter_content_timeout": "600s", "default_process_limit": "200"},
            )
            postfix.start()
            self._stops.append(postfix.stop)
            self.milters[name], self.postfixes[name] = milter, postfix
            group = ProcessGroup(f"milter-{name}")
            group.adopt(process_group(milter.process))
            self.groups[name] = group

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()


def run_one(stack: AuthStack, variant: str, count: int, concurrency: int) -> dict[str, Any]:
    tag = f"{variant}-{uuid.uuid4().hex[:10]}"
    tpl = template("5KB", to=f"<{RECIPIENT}>")
    wires = []
    for i in range(count):
        raw = tpl.render(f"<{tag}.{i}@bench.relay.test>").replace(
            b"From: Bob Example <bob@relay.test>", f"From: Bob Example <{AUTHOR}>".encode()
        )
        signed = stack.senders.sign(raw)
        wires.append(signed.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
    address = stack.postfixes[variant].address
    m = Meter([stack.groups[variant]])
    m.start()
    result: Result = run_parallel(
        count, concurrency, lambda i: smtp_one(address, wires[i], 300, RECIPIENT, AUTHOR)
    )
    reading = m.stop()
    accepted = max(result.accepted, 1)
    passes = sum(
        1
        for line in stack.milters[variant].events_path.read_text().splitlines()
        if tag in line and '"dmarc":{"result":"pass"' in line
    )
    return {
        "variant": variant,
        "messages": count,
        "accepted": result.accepted,
        "errors": result.errors[:3],
        "dmarc_pass": passes,
        "milter_cpu_ms_per_message": round(
            reading.cpu_seconds[f"milter-{variant}"] * 1000 / accepted, 2
        ),
        "p50_ms": round(report.percentile(result.latencies_ms, 0.5), 1),
        "p90_ms": round(report.percentile(result.latencies_ms, 0.9), 1),
    }


def summarize(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant in VARIANTS:
        group = [s for s in samples if s["variant"] == variant]
        rows.append(
            {
                "variant": variant,
                "reps": len(group),
                "messages": sum(s["messages"] for s in group),
                "accepted": sum(s["accepted"] for s in group),
                "dmarc_pass": sum(s["dmarc_pass"] for s in group),
                **{
                    key: round(statistics.median(s[key] for s in group), 2)
                    for key in ("milter_cpu_ms_per_message", "p50_ms", "p90_ms")
                },
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], plan: str, info: dict[str, Any]) -> str:
    checked, unchecked = rows
    lines = [
        f"# SPF/DKIM/DMARC cost ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{plan}. Machine: {info['cpu']}, {info['cores']} cores; {info['os']}.",
        "",
        "| milter | accepted | DMARC pass in the event | milter CPU ms per message | "
        "p50 DATA→250 ms | p90 ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['accepted']}/{r['messages']} | {r['dmarc_pass']} | "
            f"{r['milter_cpu_ms_per_message']:.2f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} |"
        )
    cpu_on, cpu_off = checked["milter_cpu_ms_per_message"], unchecked["milter_cpu_ms_per_message"]
    p50_on, p50_off = checked["p50_ms"], unchecked["p50_ms"]
    lines += [
        "",
        f"Added by the checks: {cpu_on - cpu_off:+.2f} ms of milter CPU per message "
        f"(ratio {cpu_on / max(cpu_off, 1e-9):.2f}), {p50_on - p50_off:+.1f} ms at p50 "
        f"(ratio {p50_on / max(p50_off, 1e-9):.2f}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__)
    parser.add_argument("--messages", type=int, default=200, help="per variant and repetition")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="mailglue-bench-auth-"))
    root.chmod(0o755)
    stack = AuthStack(root)
    try:
        stack.start()
        samples = interleaved(
            VARIANTS,
            args.reps,
            lambda v: run_one(stack, v, args.messages, args.concurrency),
            lambda v: run_one(stack, v, 10, 5),  # rules loaded, children forked, DNS cached
        )
    finally:
        stack.stop()
        meter.release_all()
        if not os.environ.get("MAILGLUE_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)
    rows = summarize(samples)
    plan = (
        f"`python -m bench.auth`: {args.messages} DKIM-signed 5 KB messages per variant and "
        f"repetition from a domain whose SPF, DKIM and DMARC pass, {args.concurrency} "
        f"concurrent senders, {args.reps} repetitions interleaved"
    )
    text = markdown(rows, plan, report.machine())
    report.save_latest(args.out, "auth", text, {"plan": plan, "rows": rows, "samples": samples})
    checked = rows[0]
    if checked["dmarc_pass"] != checked["accepted"] or any(r["accepted"] == 0 for r in rows):
        print("the checked milter did not pass DMARC for every message it accepted")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
