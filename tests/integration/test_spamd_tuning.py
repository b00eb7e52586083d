"""Tuning spamd changes no verdict (issue 17).

Two real spamds on loopback, both with the local.cf the spamassassin role deploys (stock
scores, Bayes off): one untuned (as deployed before issue 17), one tuned as the role deploys it
now (body rules compiled by sa-compile, matched by Rule2XSBody; the configuration kept between
messages instead of restored after each, Mailglue::SpamdKeepConfig). Every message of the verdict
corpus (tests/harness/spam_corpus.py: the benchmark's messages, SpamAssassin's sample spam and
ham, CPython's email test messages) must get the same score, threshold and list of tests with
their scores, at full precision (the Mailglue-Tests header the milter reads), from both; and
the tuned spamd must give them again on a second pass, when each of its children has already
scanned many messages without restoring its configuration in between.

Runtime: three spamd starts and 51 messages scanned three times, under a minute on 2 cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from milters.common.sockets import InetAddress
from milters.scanners import spamc
from milters.scanners.spamc import SpamdResult
from tests.harness.logs import DaemonLogs
from tests.harness.spam_corpus import verdict_corpus
from tests.harness.spamd import Spamd, deployed_local_cf

Verdict = tuple[str, str, tuple[tuple[str, str], ...], bool]


def verdict(result: SpamdResult) -> Verdict:
    """What must not change: score, threshold, every test with its score, precision."""
    tests = tuple((name, str(score)) for name, score in result.tests)
    return (str(result.score), str(result.threshold), tests, result.precise)


def scan_all(spamd: Spamd, messages: list[tuple[str, bytes]]) -> dict[str, Verdict]:
    backends = [InetAddress(spamd.host, spamd.port)]

    def one(item: tuple[str, bytes]) -> tuple[str, Verdict]:
        name, data = item
        return name, verdict(spamc.check(backends, data, len(data), timeout=120))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, messages))


def differences(a: dict[str, Verdict], b: dict[str, Verdict]) -> list[str]:
    return [
        f"{name}: {a.get(name)} != {b.get(name)}"
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name)
    ]


@pytest.fixture(scope="module")
def pair(stack_root: Path, daemon_logs: DaemonLogs) -> Iterator[tuple[Spamd, Spamd]]:
    untuned = Spamd(
        stack_root / "spamd-untuned", max_children=2, tuned=False, local_cf_text=deployed_local_cf()
    )
    tuned = Spamd(stack_root / "spamd-tuned", max_children=2, local_cf_text=deployed_local_cf())
    daemon_logs.register("spamd-untuned", untuned.log_path)
    daemon_logs.register("spamd-tuned", tuned.log_path)
    try:
        untuned.start()
        tuned.start()
        yield untuned, tuned
    finally:
        tuned.stop()
        untuned.stop()


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, bytes]]:
    return verdict_corpus()


def test_the_tuned_spamd_is_tuned_and_the_untuned_is_not(pair: tuple[Spamd, Spamd]) -> None:
    untuned, tuned = pair
    assert untuned.compiled_rules_in_use() == {}
    assert not untuned.keeps_config()
    used = tuned.compiled_rules_in_use()
    assert used.get("body_0", (0, 0))[0] > 100, used
    assert tuned.keeps_config()


def test_every_verdict_of_the_corpus_is_identical(
    pair: tuple[Spamd, Spamd], corpus: list[tuple[str, bytes]]
) -> None:
    untuned, tuned = pair
    assert len(corpus) >= 50, [name for name, _ in corpus]
    before, after = scan_all(untuned, corpus), scan_all(tuned, corpus)
    assert len(before) == len(corpus)
    assert all(v[3] for v in before.values()), "scores must come at full precision"
    # The corpus is not all ham: the sample spam is spam, and rules fire on most messages.
    assert float(before["spamassassin-sample-spam.txt"][0]) >= 5.0
    assert sum(1 for v in before.values() if v[2]) > len(corpus) // 2
    assert differences(before, after) == []
    assert differences(before, scan_all(tuned, corpus)) == [], "second pass"


def test_the_comparison_sees_a_changed_score(
    pair: tuple[Spamd, Spamd], stack_root: Path, corpus: list[tuple[str, bytes]]
) -> None:
    """The check can fail: one stock score moved by 0.001 shows up as a difference."""
    untuned, _ = pair
    sample = [item for item in corpus if item[0] == "bench-5KB"]
    moved = Spamd(
        stack_root / "spamd-moved",
        max_children=1,
        local_cf_text=deployed_local_cf() + "score LONGWORDS 2.001\n",
    )
    moved.start()
    try:
        diff = differences(scan_all(untuned, sample), scan_all(moved, sample))
    finally:
        moved.stop()
    assert len(diff) == 1 and "LONGWORDS" in diff[0], diff
