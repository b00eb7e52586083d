"""Samples → summary: median and spread per configuration, ratios, JSON, markdown and a chart.

Throughput is end to end: messages / (first send → last reply, or → Postfix's queue empty
for configurations that queue before filtering or delivering), so an after-queue filter is
not credited for mail it has not processed yet.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from .load import Result
from .meter import Reading

MAILGLUE = "mailglue"
PEERS = ("milter-peers", "amavis")
NO_FILTER = ("limit", "limit-untuned", "baseline")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def sample(
    config: str,
    size: str,
    concurrency: int,
    result: Result,
    done: float,
    reading: Reading,
    filters: list[str],
    stuck: int,
    mta: list[str],
    spamd: str = "spamd",
) -> dict[str, Any]:
    elapsed = max(done, result.replied) - result.started
    n = len(result.codes)

    def per_msg(names: list[str]) -> float:
        return round(1000 * sum(reading.cpu_seconds.get(g, 0.0) for g in names) / max(n, 1), 2)

    accepted = result.accepted
    return {
        "config": config,
        "size": size,
        "concurrency": concurrency,
        "messages": n,
        "accepted": accepted,
        "tempfails": result.tempfails,
        "rejected": result.rejected,
        "errors": len(result.errors),
        "error_examples": result.errors[:3],
        "stuck_in_queue": stuck,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(accepted / elapsed, 3) if elapsed else 0.0,
        "p50_ms": round(percentile(result.latencies_ms, 0.5), 1),
        "p99_ms": round(percentile(result.latencies_ms, 0.99), 1),
        "cpu_s": reading.cpu_seconds,
        "filter_cpu_ms_per_msg": per_msg(filters),
        "spamd_cpu_ms_per_msg": per_msg([spamd]),
        "clamd_cpu_ms_per_msg": per_msg(["clamd"]),
        "mta_cpu_ms_per_msg": per_msg(mta),  # Postfix and Cyrus
        "peak_rss_mb": reading.peak_rss_mb,
        "filter_peak_rss_mb": round(sum(reading.peak_rss_mb.get(f, 0.0) for f in filters), 1),
        "peak_pss_mb": reading.peak_pss_mb,
        "filter_peak_pss_mb": round(sum(reading.peak_pss_mb.get(f, 0.0) for f in filters), 1),
    }


def line(s: dict[str, Any]) -> str:
    return (
        f"{s['size']:>5} c={s['concurrency']:<2} rep {s.get('rep', 0)} {s['config']:<15} "
        f"{s['msgs_per_s']:7.2f} msg/s  p50 {s['p50_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms  "
        f"tempf {s['tempfails']:3}  err {s['errors']}  filter {s['filter_cpu_ms_per_msg']:6.1f} "
        f"ms/msg  spamd {s['spamd_cpu_ms_per_msg']:6.1f} ms/msg  "
        f"rss/pss {s['filter_peak_rss_mb']}/{s['filter_peak_pss_mb']} MB"
    )


def summarize(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for s in samples:
        cells.setdefault((s["size"], s["concurrency"], s["config"]), []).append(s)
    rows = []
    for (size, conc, config), group in cells.items():
        rates = [s["msgs_per_s"] for s in group]
        med = statistics.median(rates)
        rows.append(
            {
                "size": size,
                "concurrency": conc,
                "config": config,
                "reps": len(group),
                "msgs_per_s": round(med, 2),
                "msgs_per_s_min": round(min(rates), 2),
                "msgs_per_s_max": round(max(rates), 2),
                "spread_pct": round(100 * (max(rates) - min(rates)) / med, 1) if med else 0.0,
                "p50_ms": round(statistics.median(s["p50_ms"] for s in group), 1),
                "p99_ms": round(statistics.median(s["p99_ms"] for s in group), 1),
                "tempfails": sum(s["tempfails"] for s in group),
                "errors": sum(s["errors"] + s["rejected"] + s["stuck_in_queue"] for s in group),
                "filter_peak_rss_mb": max(s["filter_peak_rss_mb"] for s in group),
                "filter_peak_pss_mb": max(s["filter_peak_pss_mb"] for s in group),
                "filter_cpu_ms_per_msg": round(
                    statistics.median(s["filter_cpu_ms_per_msg"] for s in group), 1
                ),
                "spamd_cpu_ms_per_msg": round(
                    statistics.median(s["spamd_cpu_ms_per_msg"] for s in group), 1
                ),
                "clamd_cpu_ms_per_msg": _median(group, "clamd_cpu_ms_per_msg"),
                "mta_cpu_ms_per_msg": _median(group, "mta_cpu_ms_per_msg"),
            }
        )
        overheads = [s["milter_overhead_ms"]["p50"] for s in group if "milter_overhead_ms" in s]
        if overheads:
            rows[-1]["milter_overhead_p50_ms"] = round(statistics.median(overheads), 2)
    _ratios(rows)
    return rows


def _median(group: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(s.get(key, 0.0) for s in group)), 1)


def cpu_ceiling(cell: dict[str, dict[str, Any]], cores: int) -> float | None:
    """msg/s if the machine's cores did nothing but the scanners' and the MTA's own work.

    The limit runs the scanners alone, the baseline the MTA alone; a filter in between needs
    both on the same cores, so when they saturate the CPU, that sum caps any filter.
    """
    limit, baseline = cell.get("limit"), cell.get("baseline")
    if limit is None or baseline is None:
        return None
    per_msg = (
        limit["spamd_cpu_ms_per_msg"]
        + limit["clamd_cpu_ms_per_msg"]
        + baseline["mta_cpu_ms_per_msg"]
    )
    return round(cores * 1000 / per_msg, 2) if per_msg else None


def _ratios(rows: list[dict[str, Any]]) -> None:
    """mailglue's throughput over each peer's and over the limit, per cell."""
    by_cell: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault((r["size"], r["concurrency"]), {})[r["config"]] = r
    for cell in by_cell.values():
        mg = cell.get(MAILGLUE)
        if mg is None:
            continue
        ratios = {}
        for other in ("limit", *PEERS, "mailglue-queue"):
            if other in cell and cell[other]["msgs_per_s"]:
                ratios[other] = round(mg["msgs_per_s"] / cell[other]["msgs_per_s"], 2)
        ceiling = cpu_ceiling(cell, os.cpu_count() or 1)
        if ceiling:
            mg["cpu_ceiling_msgs_per_s"] = ceiling
            ratios["cpu ceiling"] = round(mg["msgs_per_s"] / ceiling, 2)
        mg["ratios"] = ratios


def save_latest(out: Path, stem: str, text: str, data: dict[str, Any]) -> None:
    """A side benchmark's result: `<stem>-latest.md` (the table) and `.json`; the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}-latest.md").write_text(text)
    (out / f"{stem}-latest.json").write_text(json.dumps(data, indent=1) + "\n")
    print(text)


def machine() -> dict[str, Any]:
    cpu = ""
    for text in Path("/proc/cpuinfo").read_text().splitlines():
        if text.startswith("model name"):
            cpu = text.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except OSError:
            return "?"
        return (
            (out.stdout or out.stderr).strip().splitlines()[0]
            if (out.stdout or out.stderr)
            else "?"
        )

    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": _os_release(),
        # -d: the compiled-in value, which needs no main.cf (the bench runs on a bare host too)
        "postfix": version(["/usr/sbin/postconf", "-d", "-h", "mail_version"]),
        "spamassassin": version(["/usr/bin/spamassassin", "--version"]),
        "clamd": version(["/usr/sbin/clamd", "--version"]),
    }


def _os_release() -> str:
    try:
        for text in Path("/etc/os-release").read_text().splitlines():
            if text.startswith("PRETTY_NAME="):
                return text.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def markdown(summary: list[dict[str, Any]], info: dict[str, Any], plan: str, date: str) -> str:
    out = [
        f"Benchmark of {date} on {info['cpu']} ({info['cores']} cores, {info['memory_gb']} GB, "
        f"{info['os']}; Postfix {info['postfix']}, {info['spamassassin']}, {info['clamd']}).",
        "",
        f"Command: {plan}.",
        "",
        "| size | conc | configuration | msg/s (median) | min-max | p50 ms | p99 ms | tempfails "
        "| filter CPU ms/msg | spamd CPU ms/msg | filter peak RSS / PSS MB | mailglue / this |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {"5KB": 0, "100KB": 1, "10MB": 2}
    configs = ["limit", "limit-untuned", "baseline", "mailglue", "mailglue-queue", *PEERS]
    rows = sorted(
        summary,
        key=lambda r: (
            order.get(r["size"], 9),
            r["concurrency"],
            configs.index(r["config"]) if r["config"] in configs else 99,
        ),
    )
    for r in rows:
        ratio = ""
        mg = next(
            (
                x
                for x in summary
                if x["config"] == MAILGLUE
                and x["size"] == r["size"]
                and x["concurrency"] == r["concurrency"]
            ),
            None,
        )
        if mg and r["config"] != MAILGLUE and r["config"] in mg.get("ratios", {}):
            ratio = f"{mg['ratios'][r['config']]:.2f}"
        filt = "-" if r["config"] in NO_FILTER else f"{r['filter_cpu_ms_per_msg']}"
        rss = (
            "-"
            if r["config"] in NO_FILTER
            else f"{r['filter_peak_rss_mb']} / {r['filter_peak_pss_mb']}"
        )
        name = f"**{r['config']}**" if r["config"] == MAILGLUE else r["config"]
        tempf = str(r["tempfails"]) + (f" (+{r['errors']} err)" if r["errors"] else "")
        out.append(
            f"| {r['size']} | {r['concurrency']} | {name} | {r['msgs_per_s']} | "
            f"{r['msgs_per_s_min']}-{r['msgs_per_s_max']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{tempf} | {filt} | {r['spamd_cpu_ms_per_msg']} | {rss} | {ratio} |"
        )
    out += ["", *where_the_time_goes(rows), ""]
    tuning = spamd_tuning(rows)
    if tuning:
        out += [*tuning, ""]
    out += [
        "msg/s is end to end (until the message is in Cyrus, or Postfix's queue is empty); "
        "latency is DATA → final reply as the client sees it (for the limit: one clamd + "
        "spamd round trip). 'mailglue / this' is mailglue's (delivery-confirmed) msg/s over "
        "that configuration's. amavis runs SpamAssassin in-process, so its spam CPU is in its "
        "filter column, not spamd's. Messages above 512 KB skip spamd everywhere.",
    ]
    return "\n".join(out) + "\n"


def spamd_tuning(rows: list[dict[str, Any]]) -> list[str]:
    """spamd CPU per message, untuned against tuned (the limit runs), and amavisd-new's."""
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["size"], r["concurrency"]), {})[r["config"]] = r
    out = [
        "| size | conc | spamd untuned CPU ms/msg | spamd tuned CPU ms/msg | change "
        "| amavisd-new (SpamAssassin in-process, tuned) CPU ms/msg |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (size, conc), cell in cells.items():
        untuned, tuned = cell.get("limit-untuned"), cell.get("limit")
        if untuned is None or tuned is None or untuned["spamd_cpu_ms_per_msg"] < 1.0:
            continue  # 10 MB: above spam.max_size, spamd is not asked
        before, after = untuned["spamd_cpu_ms_per_msg"], tuned["spamd_cpu_ms_per_msg"]
        amavis = cell.get("amavis")
        out.append(
            f"| {size} | {conc} | {before} | {after} | {100 * (after - before) / before:+.1f} % | "
            f"{amavis['filter_cpu_ms_per_msg'] if amavis else '-'} |"
        )
    if len(out) == 2:
        return []
    return [
        *out,
        "",
        "Untuned: spamd as deployed before issue 17; tuned: as the spamassassin role deploys it "
        "now (body rules compiled by sa-compile, matched by Rule2XSBody; its configuration "
        "kept between messages instead of restored after each). Both score every message the "
        "same (tests/integration/test_spamd_tuning.py). 10 MB messages skip spamd. amavisd-new "
        "reads the tuned spamd's site configuration, so it uses the compiled rules too.",
    ]


def where_the_time_goes(rows: list[dict[str, Any]]) -> list[str]:
    """mailglue against the limit and the CPU ceiling, with CPU per message by component."""
    out = [
        "| size | conc | limit msg/s | CPU ceiling msg/s | mailglue msg/s | / limit "
        "| / ceiling | scanners CPU ms/msg | Postfix+Cyrus CPU ms/msg | mailglue CPU ms/msg "
        "| mailglue overhead p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mg in (r for r in rows if r["config"] == MAILGLUE):
        limit = next(
            (
                r
                for r in rows
                if r["config"] == "limit"
                and (r["size"], r["concurrency"]) == (mg["size"], mg["concurrency"])
            ),
            None,
        )
        ratios = mg.get("ratios", {})
        out.append(
            f"| {mg['size']} | {mg['concurrency']} | {limit['msgs_per_s'] if limit else '-'} | "
            f"{mg.get('cpu_ceiling_msgs_per_s', '-')} | {mg['msgs_per_s']} | "
            f"{ratios.get('limit', '-')} | {ratios.get('cpu ceiling', '-')} | "
            f"{round(mg['spamd_cpu_ms_per_msg'] + mg['clamd_cpu_ms_per_msg'], 1)} | "
            f"{mg['mta_cpu_ms_per_msg']} | {mg['filter_cpu_ms_per_msg']} | "
            f"{mg.get('milter_overhead_p50_ms', '-')} |"
        )
    out += [
        "",
        "CPU ceiling: the machine's cores divided by the CPU one message costs the scanners "
        "(measured in the limit run) plus Postfix and Cyrus (measured in the baseline run). "
        "The limit has no MTA; on a machine the MTA and the scanners share, the ceiling is "
        "what any filter could reach when the CPU is the bottleneck. Overhead p50: the time "
        "mailglue's end-of-message spends outside spamd, clamd and Cyrus, from its own "
        "transaction events.",
    ]
    return out


def chart(summary: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # the results are written already; only the picture is missing
        print("no chart: matplotlib is not installed (`make bench` installs the bench extra)")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted(
        {(r["size"], r["concurrency"]) for r in summary},
        key=lambda c: ({"5KB": 0, "100KB": 1, "10MB": 2}.get(c[0], 9), c[1]),
    )
    configs = [
        c
        for c in ("limit", "limit-untuned", "baseline", "mailglue", "mailglue-queue", *PEERS)
        if any(r["config"] == c for r in summary)
    ]
    fig, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells) + 1, 4), squeeze=False)
    for ax, (size, conc) in zip(axes[0], cells, strict=True):
        vals, lows, highs = [], [], []
        for c in configs:
            r = next(
                (
                    x
                    for x in summary
                    if (x["size"], x["concurrency"], x["config"]) == (size, conc, c)
                ),
                None,
            )
            v = r["msgs_per_s"] if r else 0.0
            vals.append(v)
            lows.append(v - (r["msgs_per_s_min"] if r else 0.0))
            highs.append((r["msgs_per_s_max"] if r else 0.0) - v)
        colors = ["#888888" if c in NO_FILTER else "#1f77b4" for c in configs]
        colors = [
            "#d62728" if c.startswith(MAILGLUE) else col
            for c, col in zip(configs, colors, strict=True)
        ]
        ax.bar(range(len(configs)), vals, yerr=[lows, highs], color=colors, capsize=3)
        ax.set_xticks(range(len(configs)), configs, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{size}, {conc} sessions", fontsize=9)
        ax.set_yscale("log")
    axes[0][0].set_ylabel("messages/s (median, min-max; log)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, samples: list[dict[str, Any]], plan: str, started: float) -> str:
    out.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(started))
    info = machine()
    summary = summarize(samples)
    doc = {
        "date": date,
        "duration_s": round(time.time() - started),
        "machine": info,
        "plan": plan,
        "summary": summary,
        "samples": samples,
    }
    (out / "latest.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = markdown(summary, info, plan, date)
    (out / "latest.md").write_text(md)
    chart(summary, out / "latest.png")
    return md
