"""`python -m bench`: every configuration, same messages, same backends, in one run.

Repetitions are interleaved (rep 1 of every configuration, then rep 2, ...) with the order
rotated each time, so the machine's drift over the run spreads over all configurations
instead of favouring whichever ran first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import meter, peers, report
from .corpus import Template, template
from .load import Result, limit_load, smtp_load
from .meter import Meter
from .stack import SPAM_MAX_SIZE, Stack, Target

CONFIGS = (
    "limit",
    "limit-untuned",
    "baseline",
    "mailglue",
    "mailglue-queue",
    "milter-peers",
    "amavis",
)
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Plan:
    sizes: tuple[str, ...]
    concurrency: tuple[int, ...]
    messages: dict[str, int]
    reps: int


FULL = Plan(("5KB", "100KB", "10MB"), (10, 20, 50), {"5KB": 200, "100KB": 60, "10MB": 10}, 3)
QUICK = Plan(("5KB", "100KB", "10MB"), (20,), {"5KB": 60, "100KB": 20, "10MB": 4}, 3)


def run_one(stack: Stack, target: Target, tpl: Template, count: int, concurrency: int) -> Any:
    tag = f"{target.name}-{uuid.uuid4().hex[:10]}"
    mta = [stack.groups["cyrus"], *([target.mta] if target.mta else [])]
    groups = [*target.filters, stack.groups[target.spamd], stack.groups["clamd"], *mta]
    m = Meter(groups)
    m.start()
    result: Result
    if target.postfix is None:
        result = limit_load(
            stack.spamds[target.spamd].address,
            stack.clamd.socket_path,
            tpl,
            tag,
            count,
            concurrency,
            SPAM_MAX_SIZE,
        )
        done = result.replied
    else:
        result = smtp_load(target.postfix.address, tpl, tag, count, concurrency)
        deadline = time.monotonic() + 900
        while target.postfix.queued() and time.monotonic() < deadline:
            time.sleep(0.05)
        done = time.monotonic()
    reading = m.stop()
    stuck = target.postfix.queued() if target.postfix is not None else 0
    filter_names = [g.name for g in target.filters]
    s = report.sample(
        target.name,
        tpl.name,
        concurrency,
        result,
        done,
        reading,
        filter_names,
        stuck,
        [g.name for g in mta],
        target.spamd,
    )
    if target.events is not None:
        s["milter_overhead_ms"] = milter_overhead(target.events, tag)
    return s


def milter_overhead(events: Path, tag: str) -> dict[str, float]:
    """p50/p99 of the time mailglue's end-of-message spent outside spamd, clamd and Cyrus.

    From its own transaction events (timings_ms: total, scan, lmtp) for this run's messages.
    """
    values = []
    for text in events.read_text().splitlines():
        event = json.loads(text)
        if event.get("event") != "transaction" or tag not in (event.get("message_id") or ""):
            continue
        t = event.get("timings_ms") or {}
        values.append(t.get("total", 0.0) - t.get("scan", 0.0) - t.get("lmtp", 0.0))
    return {
        "p50": round(report.percentile(values, 0.5), 2),
        "p99": round(report.percentile(values, 0.99), 2),
        "n": len(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: concurrency 20 only")
    parser.add_argument("--reps", type=int, help="repetitions per configuration (default 3)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    parser.add_argument("--sizes", help="comma-separated subset of 5KB,100KB,10MB")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the stack's temp dir")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    reps = args.reps or plan.reps
    sizes = tuple(args.sizes.split(",")) if args.sizes else plan.sizes
    names = [n for n in args.configs.split(",") if n]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations: {', '.join(sorted(unknown))}")

    if {"milter-peers", "amavis"} & set(names):
        peers.ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="mailglue-bench-"))
    root.chmod(0o755)
    stack = Stack(root)
    samples: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    started = time.time()
    try:
        stack.start_backends()
        for name in list(names):
            print(f"starting {name}", flush=True)
            try:
                stack.add(name)
            except Exception as exc:  # a peer that will not start must not sink the others
                print(f"SKIPPED {name}: could not start it: {exc}", flush=True)
                skipped[name] = str(exc).splitlines()[0]
                names.remove(name)
        if not names:
            print("nothing to measure: no configuration started (see SKIPPED above)")
            return 1
        warm = template("5KB")
        for target in stack.targets.values():  # load rules, fill caches, fork children
            run_one(stack, target, warm, 10, 5)
        for size in sizes:
            tpl = template(size)
            for concurrency in plan.concurrency:
                for rep in range(reps):
                    order = names[rep % len(names) :] + names[: rep % len(names)]
                    for name in order:
                        s = run_one(
                            stack, stack.targets[name], tpl, plan.messages[size], concurrency
                        )
                        s["rep"] = rep
                        samples.append(s)
                        print(report.line(s), flush=True)
    finally:
        stack.stop()
        meter.release_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    summary = report.write(
        args.out, samples, plan_text(plan, reps, sizes, names, args.quick), started
    )
    print(summary)
    return 0


def plan_text(plan: Plan, reps: int, sizes: tuple[str, ...], names: list[str], quick: bool) -> str:
    counts = ", ".join(f"{s}: {plan.messages[s]} msgs" for s in sizes)
    conc = "/".join(str(c) for c in plan.concurrency)
    mode = "python -m bench --quick" if quick else "python -m bench"
    return (
        f"`{mode}`: configurations {', '.join(names)}; sizes {counts}; "
        f"concurrency {conc}; {reps} repetitions each, interleaved"
    )
