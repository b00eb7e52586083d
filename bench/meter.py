"""CPU and memory of the processes a configuration runs, measured from outside.

CPU comes from a cpuacct cgroup per daemon (cgroup v1, as on these machines): the kernel then
counts every process the daemon ever forks, including short-lived ones such as the `spamc`
that spamass-milter starts per message, which sampling /proc would miss. Peak RSS and PSS
are sampled (sums over the group's live processes, every SAMPLE_SECONDS). Without a writable
cpuacct hierarchy, CPU falls back to summing /proc utime+stime of the processes seen.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CPUACCT = Path("/sys/fs/cgroup/cpuacct")
BENCH_CGROUP = CPUACCT / "mailglue-bench"
SAMPLE_SECONDS = 0.2
_TICKS = os.sysconf("SC_CLK_TCK")


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # fields: state ppid pgrp ...
            pids.append(int(entry.name))
    return pids


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB. PSS splits shared pages between the processes sharing them, so the
    sum over a preforking daemon (amavisd, spamd) is not inflated by its shared rules."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


class ProcessGroup:
    """The processes of one daemon: a cgroup we moved its process group into."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cgroup = BENCH_CGROUP / name
        self.use_cgroup = False
        self.pgids: list[int] = []
        self._seen_ticks: dict[int, int] = {}

    def adopt(self, pgid: int) -> None:
        """Move every process of a process group in; what they fork later follows."""
        self.pgids.append(pgid)
        try:
            self.cgroup.mkdir(parents=True, exist_ok=True)
            for pid in _group_pids(pgid):
                (self.cgroup / "cgroup.procs").write_text(f"{pid}\n")
            self.use_cgroup = True
        except OSError:
            self.use_cgroup = False

    def sweep(self) -> None:
        """Move in what the process groups forked since `adopt` outside the cgroup.

        A child forked while `adopt` was moving its parent stays in the parent's old cgroup
        (a preforking spamd starts its children just then), and its CPU would go uncounted.
        """
        if not self.use_cgroup:
            return
        inside = set(self.pids())
        with contextlib.suppress(OSError):
            for pgid in self.pgids:
                for pid in _group_pids(pgid):
                    if pid not in inside:
                        (self.cgroup / "cgroup.procs").write_text(f"{pid}\n")

    def pids(self) -> list[int]:
        if self.use_cgroup:
            with contextlib.suppress(OSError):
                text = (self.cgroup / "cgroup.procs").read_text()
                return [int(p) for p in text.split()]
        return [pid for pgid in self.pgids for pid in _group_pids(pgid)]

    def cpu_seconds(self) -> float:
        if self.use_cgroup:
            return int((self.cgroup / "cpuacct.usage").read_text()) / 1e9
        for pid in self.pids():
            self._seen_ticks[pid] = max(self._seen_ticks.get(pid, 0), _cpu_ticks(pid))
        return sum(self._seen_ticks.values()) / _TICKS

    def memory_mb(self) -> tuple[float, float]:
        """(sum of RSS, sum of PSS) over the group's live processes, in MB."""
        pairs = [_memory_kb(pid) for pid in self.pids()]
        return sum(r for r, _ in pairs) / 1024, sum(p for _, p in pairs) / 1024

    def release(self) -> None:
        """Hand surviving processes back to the root cgroup and remove ours."""
        if not self.cgroup.exists():
            return
        with contextlib.suppress(OSError):
            for pid in (self.cgroup / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (CPUACCT / "cgroup.procs").write_text(f"{pid}\n")
        with contextlib.suppress(OSError):
            self.cgroup.rmdir()


@dataclass
class Reading:
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    peak_pss_mb: dict[str, float] = field(default_factory=dict)


class Meter:
    """Measures a set of process groups over one run (start() ... stop())."""

    def __init__(self, groups: list[ProcessGroup]) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}
        self._peak: dict[str, float] = {}
        self._peak_pss: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for g in self.groups:
            g.sweep()
        self._start = {g.name: g.cpu_seconds() for g in self.groups}
        self._peak = dict.fromkeys((g.name for g in self.groups), 0.0)
        self._peak_pss = dict.fromkeys((g.name for g in self.groups), 0.0)
        self._measure()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="meter", daemon=True)
        self._thread.start()

    def _measure(self) -> None:
        for g in self.groups:
            rss, pss = g.memory_mb()
            self._peak[g.name] = max(self._peak[g.name], rss)
            self._peak_pss[g.name] = max(self._peak_pss[g.name], pss)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._measure()

    def stop(self) -> Reading:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        cpu = {g.name: round(g.cpu_seconds() - self._start[g.name], 3) for g in self.groups}
        return Reading(
            cpu,
            {k: round(v, 1) for k, v in self._peak.items()},
            {k: round(v, 1) for k, v in self._peak_pss.items()},
        )


def release_all() -> None:
    """Remove the bench's cgroups (after every daemon was stopped)."""
    if not BENCH_CGROUP.exists():
        return
    for child in BENCH_CGROUP.iterdir():
        if child.is_dir():
            ProcessGroup(child.name).release()
    with contextlib.suppress(OSError):
        BENCH_CGROUP.rmdir()


def wall() -> float:
    return time.monotonic()
