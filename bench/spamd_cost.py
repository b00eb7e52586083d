"""`python -m bench.spamd_cost`: where spamd's CPU per message goes, untuned against tuned.

Every variant is a real spamd on loopback with the deployed local.cf (tests/harness/spamd.py,
`deployed_local_cf`), all running at once; one client sends each message to every variant in
turn (the order alternating), so the machine's drift and other load fall on all of them alike.
CPU per message is what the variant's whole process tree (parent and children) spent during
that one request, from its own cpuacct cgroup (bench/meter.py). The phase breakdown comes from
spamd's own `--timing` log line per message (wall-clock milliseconds inside the child that
scanned it; with one client, close to its CPU).

    python -m bench.spamd_cost      # untuned, each tuning alone, both: the verdict corpus
    python -m bench.spamd_cost --rounds 10 --variant tuned:tuned --variant rr:tuned:--round-robin
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.spam_corpus import verdict_corpus
from tests.harness.spamd import Spamd, deployed_local_cf

from . import meter
from .load import spamd_headers
from .meter import ProcessGroup

IDLE_SECONDS = 2.0  # after a block: every child has finished restoring its configuration
_TIMING = re.compile(r"timing: total (\d+(?:\.\d+)?) ms - (.*)$")
_TESTS = re.compile(rb"X-Spam-Mailglue-Tests: (.*?)\r?\n(?![ \t])", re.S)


KINDS = {  # (compiled body rules, configuration kept between messages)
    "untuned": (False, False),
    "compiled": (True, False),
    "keep-config": (False, True),
    "tuned": (True, True),
}


@dataclass
class Variant:
    name: str
    kind: str
    args: tuple[str, ...] = ()
    spamd: Spamd | None = None
    group: ProcessGroup | None = None
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    answers: dict[str, bytes] = field(default_factory=dict)
    log_offset: int = 0  # phases count from here (after the warm-up)


def parse_variant(text: str) -> Variant:
    """NAME:KIND[:spamd-arg,...], KIND one of untuned, compiled, keep-config, tuned."""
    name, _, rest = text.partition(":")
    kind, _, args = rest.partition(":")
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:{'|'.join(KINDS)}[:ARG,...]")
    return Variant(name, kind, tuple(a for a in args.split(",") if a))


def phases(log: Path, offset: int = 0) -> tuple[int, dict[str, float]]:
    """(messages, mean ms per phase) from spamd's --timing lines (parse, tests_pri_*, ...)."""
    sums: dict[str, float] = defaultdict(float)
    n = 0
    for line in log.read_bytes()[offset:].decode(errors="replace").splitlines():
        m = _TIMING.search(line)
        if not m:
            continue
        n += 1
        sums["total"] += float(m[1])
        for part in m[2].split(", "):
            key, _, value = part.rpartition(": ")
            sums[key] += float(value.split()[0])
    return n, {k: v / n for k, v in sums.items()} if n else {}


def group_of(name: str) -> str:
    """bench-5KB and bench-100KB each alone; spamassassin and cpython as a group each."""
    return name if name.startswith("bench-") else name.split("-", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spamd_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="passes over the corpus")
    parser.add_argument("--children", type=int, default=3, help="spamd --max-children")
    parser.add_argument(
        "--only", default="", help="comma-separated message name prefixes, e.g. bench-"
    )
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        help="NAME:KIND[:spamd-arg,...], KIND: " + ", ".join(KINDS) + " (default: all four)",
    )
    args = parser.parse_args(argv)
    variants = args.variant or [Variant(kind, kind) for kind in KINDS]
    prefixes = tuple(p for p in args.only.split(",") if p)
    corpus = [m for m in verdict_corpus() if not prefixes or m[0].startswith(prefixes)]
    root = Path(tempfile.mkdtemp(prefix="mailglue-spamd-cost-"))
    root.chmod(0o755)
    try:
        for v in variants:
            v.spamd = Spamd(
                root / v.name,
                max_children=args.children,
                extra_args=("--timing", *v.args),
                local_cf_text=deployed_local_cf(),
                compiled_rules=KINDS[v.kind][0],
                keep_config=KINDS[v.kind][1],
            )
            v.spamd.start()
            for _, data in verdict_corpus()[:4]:  # warm every child a little
                spamd_headers(v.spamd.address, data)
            time.sleep(1)
            assert v.spamd.process is not None and v.spamd.process.proc is not None
            v.group = ProcessGroup(f"cost-{v.name}")
            v.group.adopt(v.spamd.process.proc.pid)
        _measure(variants, corpus, args.rounds)
        _report(variants, corpus, args)
    finally:
        for v in variants:
            if v.spamd is not None:
                v.spamd.stop()
        meter.release_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _measure(variants: list[Variant], corpus: list[tuple[str, bytes]], rounds: int) -> None:
    """Corpus group by corpus group (bench, spamassassin, cpython): each message to every
    variant in turn; a group's CPU is the cgroup's total from its first message until every
    variant is idle again, so what spamd does after answering (it restores its configuration,
    copy_config) is counted too."""
    for v in variants:
        if v.spamd is not None:
            v.log_offset = v.spamd.log_path.stat().st_size
    for group in sorted({group_of(n) for n, _ in corpus}):
        items = [item for item in corpus if group_of(item[0]) == group]
        before = {}
        for v in variants:
            assert v.group is not None
            v.group.sweep()
            before[v.name] = v.group.cpu_seconds()
        for turn, (name, data) in enumerate(item for _ in range(rounds) for item in items):
            for v in variants if turn % 2 == 0 else variants[::-1]:
                assert v.spamd is not None
                answer = spamd_headers(v.spamd.address, data)
                m = _TESTS.search(answer)
                v.answers[name] = re.sub(rb"\s+", b"", m[1]) if m else answer[:80]
        time.sleep(IDLE_SECONDS)
        for v in variants:
            assert v.group is not None
            v.cpu[group] += v.group.cpu_seconds() - before[v.name]
            v.count[group] += rounds * len(items)


def _report(
    variants: list[Variant], corpus: list[tuple[str, bytes]], args: argparse.Namespace
) -> None:
    groups = sorted({group_of(n) for n, _ in corpus})
    print(
        f"spamd CPU ms per message ({args.rounds} rounds x {len(corpus)} messages, "
        f"one client, --max-children {args.children}):"
    )
    print("| variant | " + " | ".join(groups) + " | all | vs first |")
    print("|---|" + "---:|" * (len(groups) + 2))
    first = None
    for v in variants:
        total = sum(v.cpu.values()) / max(1, sum(v.count.values())) * 1000
        first = first or total
        cells = [f"{1000 * v.cpu[g] / max(1, v.count[g]):.1f}" for g in groups]
        print(
            f"| {v.name} | "
            + " | ".join(cells)
            + f" | {total:.1f} | {100 * (total - first) / first:+.1f} % |"
        )
    print()
    print("spamd's own --timing, mean ms per message (wall-clock inside a child):")
    table = {v.name: phases(v.spamd.log_path, v.log_offset)[1] for v in variants if v.spamd}
    keys = sorted(
        {k for t in table.values() for k in t},
        key=lambda k: -statistics.mean(t.get(k, 0.0) for t in table.values()),
    )
    print("| phase | " + " | ".join(table) + " |")
    print("|---|" + "---:|" * len(table))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{t.get(k, 0.0):.1f}" for t in table.values()) + " |")
    print()
    base = variants[0]
    for v in variants[1:]:
        diff = [n for n in base.answers if base.answers[n] != v.answers.get(n)]
        print(f"{v.name} vs {base.name}: {len(diff)} of {len(base.answers)} differ {diff[:5]}")


if __name__ == "__main__":
    raise SystemExit(main())
