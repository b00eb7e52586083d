"""The benchmark stack: one spamd, one clamd, one Cyrus shared by every configuration, and one
Postfix per configuration, all started once so every configuration runs in the same conditions
and repetitions can be interleaved (the machine's speed drifts by up to ~10 % over minutes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.harness.clamd import Clamd
from tests.harness.cyrus import Cyrus
from tests.harness.milter import ScanMilter
from tests.harness.postfix import Postfix
from tests.harness.process import LOOPBACK, ManagedProcess, free_port
from tests.harness.spamd import Spamd

from .meter import ProcessGroup
from .peers import Amavis, ClamavMilter, SpamassMilter, amavis_master_cf

SPAMD_CHILDREN = 5  # the role deploys 3; on 2 cores the CPU per message is the same (README)
SPAM_MAX_SIZE = 512 * 1024  # the milter's spam.max_size default; spamc's is 500 KB
QUEUE_DIRS = ("maildrop", "incoming", "active", "deferred", "hold")


class BenchPostfix(Postfix):
    """A harness Postfix that counts its queue cheaply."""

    def queued(self) -> int:
        """Messages still in the queue (cheaper than postqueue when polled)."""
        total = 0
        for d in QUEUE_DIRS:
            for _, _, files in os.walk(self.queue_dir / d):
                total += len(files)
        return total


V = TypeVar("V")


def milter_config(spamd: Spamd, clamd: Clamd, cyrus: Cyrus, mode: str = "lmtp") -> dict[str, Any]:
    """The benchmarks' mailglue milter: the shared spamd, clamd and Cyrus (merge extras in)."""
    return {
        "milter": {"hostname": "mx.example.org"},
        "spam": {"backends": [f"inet:{spamd.host}:{spamd.port}"]},
        "virus": {"backends": [f"unix:{clamd.socket_path}"]},
        "delivery": {
            "mode": mode,
            "local_domains": ["example.org"],
            "lmtp_backend": f"unix:{cyrus.lmtp_socket}",
        },
    }


def interleaved(
    variants: Sequence[V],
    reps: int,
    measure: Callable[[V], dict[str, Any]],
    warm_up: Callable[[V], object],
) -> list[dict[str, Any]]:
    """Warm every variant up once, then `reps` rounds of one measurement each, the order
    reversed every other round, so a drift of the machine's speed hits all variants alike.
    Each sample is printed as it comes (a long run shows progress) and tagged with its round."""
    for variant in variants:
        warm_up(variant)
    samples = []
    for rep in range(reps):
        for variant in variants if rep % 2 == 0 else list(variants)[::-1]:
            sample = measure(variant)
            sample["rep"] = rep
            samples.append(sample)
            print(json.dumps(sample), flush=True)
    return samples


def process_group(process: ManagedProcess | None) -> int:
    """The process group a harness daemon leads (it is started as a group leader)."""
    assert process is not None and process.proc is not None
    return process.proc.pid


@dataclass
class Target:
    """One configuration under test: where to send mail, and which processes are its filter."""

    name: str
    postfix: BenchPostfix | None  # None: the limit, driven without an MTA
    filters: list[ProcessGroup] = field(default_factory=list)
    stop: list[Callable[[], None]] = field(default_factory=list)
    mta: ProcessGroup | None = None  # this configuration's Postfix (Cyrus is shared)
    events: Path | None = None  # mailglue's JSON event log
    spamd: str = "spamd"  # the process group of the spamd it asks (see Stack.spamds)


class Stack:
    """Every configuration asks `spamd`, tuned as the spamassassin role deploys it; the
    `limit-untuned` configuration asks a second spamd, `spamd-untuned`, as deployed before
    issue 17 (no compiled body rules), so the two are measured side by side in one run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spamd = Spamd(root / "spamd", max_children=SPAMD_CHILDREN)
        self.spamds = {"spamd": self.spamd}
        self.clamd = Clamd(root / "clamd")
        self.cyrus = Cyrus(root / "cyrus")
        self.groups = {
            "spamd": ProcessGroup("spamd"),
            "clamd": ProcessGroup("clamd"),
            "cyrus": ProcessGroup("cyrus"),
        }
        self.targets: dict[str, Target] = {}
        self._stops: list[Callable[[], None]] = []

    def start_backends(self) -> None:
        for daemon in (self.spamd, self.clamd, self.cyrus):
            daemon.start()
            self._stops.append(daemon.stop)
        self.cyrus.create_mailbox("alice")
        self.groups["spamd"].adopt(process_group(self.spamd.process))
        self.groups["clamd"].adopt(process_group(self.clamd.process))
        self.groups["cyrus"].adopt(process_group(self.cyrus.process))

    def _postfix(self, name: str, milters: str | None, **main: str) -> BenchPostfix:
        extra = main.pop("master_extra", "")
        params: Mapping[str, str] = {
            "milter_content_timeout": "600s",
            "default_process_limit": "200",
            **main,
        }
        pf = BenchPostfix(
            self.root / f"postfix-{name}",
            self.cyrus.lmtp_socket,
            (LOOPBACK, free_port()),
            milters,
            params,
            master_extra=extra,
        )
        pf.start()
        self._stops.append(pf.stop)
        return pf

    def _mailglue_milter(self, name: str, mode: str) -> ScanMilter:
        milter = ScanMilter(
            self.root / name,
            free_port(),
            milter_config(self.spamd, self.clamd, self.cyrus, mode),
        )
        milter.ensure()
        self._stops.append(milter.stop)
        return milter

    def add(self, name: str) -> Target:
        """Start configuration `name` (see CONFIGS) and remember it."""
        make: Callable[[], Target] = getattr(self, f"_make_{name.replace('-', '_')}")
        target = make()
        if target.postfix is not None:
            master = target.postfix.master_pid()
            if master is not None and os.getpgid(master) != os.getpgrp():
                target.mta = ProcessGroup(f"postfix-{name}")
                target.mta.adopt(os.getpgid(master))
        self.targets[name] = target
        return target

    def _make_limit(self) -> Target:
        return Target("limit", None)

    def _make_limit_untuned(self) -> Target:
        untuned = Spamd(self.root / "spamd-untuned", max_children=SPAMD_CHILDREN, tuned=False)
        untuned.start()
        self._stops.append(untuned.stop)
        self.spamds["spamd-untuned"] = untuned
        self.groups["spamd-untuned"] = ProcessGroup("spamd-untuned")
        self.groups["spamd-untuned"].adopt(process_group(untuned.process))
        return Target("limit-untuned", None, spamd="spamd-untuned")

    def _make_baseline(self) -> Target:
        return Target("baseline", self._postfix("baseline", None))

    def _mailglue(self, name: str, mode: str) -> Target:
        milter = self._mailglue_milter(name, mode)
        group = ProcessGroup(name)
        group.adopt(process_group(milter.process))
        pf = self._postfix(name, f"inet:{LOOPBACK}:{milter.port}")
        return Target(name, pf, [group], events=milter.events_path)

    def _make_mailglue(self) -> Target:
        return self._mailglue("mailglue", "lmtp")

    def _make_mailglue_queue(self) -> Target:
        return self._mailglue("mailglue-queue", "queue")

    def _make_milter_peers(self) -> Target:
        spamass = SpamassMilter(self.root / "spamass-milter", self.spamd)
        clamav = ClamavMilter(self.root / "clamav-milter", self.clamd)
        spamass.start()
        self._stops.append(spamass.stop)
        clamav.start()
        self._stops.append(clamav.stop)
        groups = [ProcessGroup("spamass-milter"), ProcessGroup("clamav-milter")]
        groups[0].adopt(process_group(spamass.process))
        groups[1].adopt(process_group(clamav.process))
        pf = self._postfix("milter-peers", f"{spamass.socket}, {clamav.socket}")
        return Target("milter-peers", pf, groups)

    def _make_amavis(self) -> Target:
        reinject = free_port()
        amavis = Amavis(self.root / "amavis", self.spamd, self.clamd, reinject)
        amavis.start()
        self._stops.append(amavis.stop)
        group = ProcessGroup("amavisd")
        group.adopt(process_group(amavis.process))
        pf = self._postfix(
            "amavis",
            None,
            content_filter=f"amavisfeed:[{LOOPBACK}]:{amavis.port}",
            master_extra=amavis_master_cf(amavis.port, reinject, amavis.children),
        )
        return Target("amavis", pf, [group])

    def stop(self) -> None:
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"stop failed: {exc}")
        self._stops.clear()
