"""The admin's tools against the real stack: trace, replay, shadow mode, metrics, reload,
graceful shutdown and learning from LearnSpam.

The milter runs as the real subprocess; mail goes in through the session's Postfix.
"""

from __future__ import annotations

import email
import imaplib
import json
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.cyrus import ADMIN_PASSWORD, ADMIN_USER, Cyrus
from tests.harness.learning_spamd import LearningSpamd
from tests.harness.logs import DaemonLogs
from tests.harness.messages import GTUBE, build_message, unique_message_id
from tests.harness.milter import MAILGLUE, ScanMilter, wait_for
from tests.harness.postfix import Postfix
from tests.harness.process import LOOPBACK, accepts, free_port, wait_until
from tests.harness.slowproxy import SlowProxy
from tests.harness.smtp import Transaction, send
from tests.harness.spamd import Spamd

SENDER = "bob@relay.test"


def submit(postfix: Postfix, mid: str, token: str = "") -> Transaction:
    message = build_message(token, message_id=mid, date=datetime.now(UTC))
    return send(postfix.address, SENDER, ["alice@example.org"], message)


def mailglue(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAILGLUE, *args],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- trace and replay --------------------------------------------------------------------------


def test_trace_of_a_rejected_gtube_shows_score_test_and_reply(
    scan_milter: ScanMilter, postfix: Postfix
) -> None:
    mid = unique_message_id()
    tx = submit(postfix, mid, GTUBE)
    assert tx.data is not None and tx.data.code == 550, tx
    queue_id = scan_milter.transaction(mid)["queue_id"]

    out = mailglue("trace", queue_id, str(scan_milter.events_path))
    assert out.returncode == 0, out.stderr
    assert f"queue id {queue_id}" in out.stdout
    assert "score 1000.0" in out.stdout
    assert "1000.000  GTUBE" in out.stdout
    assert "reply     550 5.7.1 Message rejected as spam (score 1000.0)" in out.stdout

    by_address = mailglue("trace", SENDER, "--since", "10m", "--json", str(scan_milter.events_path))
    traces = [json.loads(line) for line in by_address.stdout.splitlines()]
    assert mid in [t["transaction"]["message_id"] for t in traces]
    assert all(t["transaction"]["sender"] == SENDER for t in traces)
    assert mailglue("trace", SENDER, "--until", "1d", str(scan_milter.events_path)).returncode == 1


def test_replay_of_gtube_prints_reject_with_score_1000(
    scan_milter: ScanMilter, tmp_path: Path
) -> None:
    eml = tmp_path / "gtube.eml"
    eml.write_bytes(build_message(GTUBE, date=datetime.now(UTC)))
    out = mailglue(
        "replay", str(eml), "--config", str(scan_milter.config_path), "--json",
        "--from", SENDER, "--to", "alice@example.org",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["action"] == "reject"
    assert result["spam"]["score"] == 1000.0
    assert result["reply"].startswith("550 5.7.1")
    text = mailglue("replay", str(eml), "--config", str(scan_milter.config_path))
    assert "action   reject (spam)" in text.stdout and "GTUBE" in text.stdout


# --- shadow mode -------------------------------------------------------------------------------


def test_shadow_mode_delivers_gtube_tagged_and_logs_would_reject(
    scan_milter_process: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    scan_milter_process.ensure({"milter": {"shadow": True}})
    mid = unique_message_id()
    tx = submit(postfix, mid, GTUBE)
    assert tx.data is not None and tx.data.code == 250, tx
    copy = next(
        email.message_from_bytes(raw)
        for raw in cyrus.messages("alice")
        if email.message_from_bytes(raw)["Message-ID"] == mid
    )
    assert copy["X-Spam-Status"].startswith("Yes, score=1000.0 required=3.0 tests=GTUBE=1000.0")
    assert copy["X-Spam-Flag"] == "YES"
    assert copy["X-Mailglue-Shadow"].startswith("would reject: 550 5.7.1")
    event = scan_milter_process.transaction(mid)
    assert event["action"] == "delivered" and event["shadow"] is True
    assert event["would_action"] == "reject"
    assert event["would_reply"] == "550 5.7.1 Message rejected as spam (score 1000.0)"


# --- metrics -----------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_a_run_exactly(scan_milter_process: ScanMilter, postfix: Postfix) -> None:
    port = free_port()
    scan_milter_process.ensure({"milter": {"metrics_listen": f"{LOOPBACK}:{port}"}})
    mids = [unique_message_id() for _ in range(4)]
    for mid in mids[:3]:
        assert submit(postfix, mid).data.code == 250  # type: ignore[union-attr]
    assert submit(postfix, mids[3], GTUBE).data.code == 550  # type: ignore[union-attr]
    scan_milter_process.transaction(mids[3])

    m = scrape(port)
    assert m[("mailglue_milter_transactions_total", (("action", "delivered"),))] == 3
    assert m[("mailglue_milter_transactions_total", (("action", "reject"),))] == 1
    assert m[("mailglue_milter_spam_score_count", ())] == 4
    assert m[("mailglue_milter_spam_score_bucket", (("le", "5.0"),))] == 3
    assert m[("mailglue_milter_backend_duration_seconds_count", (("backend", "spamd"),))] == 4
    assert m[("mailglue_milter_backend_duration_seconds_count", (("backend", "lmtp"),))] == 3
    assert m[("mailglue_milter_backend_errors_total", (("backend", "spamd"),))] == 0
    assert m[("mailglue_milter_in_flight", ())] == 0


# --- reload and shutdown -----------------------------------------------------------------------


def events_named(milter: ScanMilter, name: str) -> list[dict[str, object]]:
    return [e for e in milter.events() if e.get("event") == name]


def test_sighup_refuses_a_broken_config_and_applies_a_good_one(
    scan_milter_process: ScanMilter, postfix: Postfix
) -> None:
    milter = scan_milter_process
    milter.ensure()
    assert milter.process is not None and milter.process.proc is not None
    good = milter.config_path.read_text()
    try:
        milter.config_path.write_text(good + "spam:\n  tag_above: 9\n  reject_at: 5\n")
        before = len(events_named(milter, "config_reload_failed"))
        milter.process.proc.send_signal(signal.SIGHUP)
        failed = wait_for(lambda: events_named(milter, "config_reload_failed")[before:], 10)
        assert failed and "spam.tag_above" in " ".join(failed[0]["problems"])
        assert milter.process.running()
        mid = unique_message_id()
        assert submit(postfix, mid, GTUBE).data.code == 550  # type: ignore[union-attr]

        config = yaml.safe_load(good)
        config["milter"]["shadow"] = True
        milter.config_path.write_text(yaml.safe_dump(config))
        reloaded = len(events_named(milter, "config_reloaded"))
        milter.process.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: events_named(milter, "config_reloaded")[reloaded:], 10)
        assert submit(postfix, unique_message_id(), GTUBE).data.code == 250  # type: ignore[union-attr]
    finally:
        milter.stop()  # the running config no longer matches the harness's record


def test_sigterm_lets_the_transaction_in_flight_finish(
    scan_milter_process: ScanMilter, postfix: Postfix, spamd: Spamd, cyrus: Cyrus
) -> None:
    milter = scan_milter_process
    proxy = SlowProxy(spamd.address, delay=3.0)
    try:
        milter.ensure({"spam": {"backends": [proxy.address]}})
        assert milter.process is not None and milter.process.proc is not None
        mid = unique_message_id()
        result: list[Transaction] = []
        client = threading.Thread(target=lambda: result.append(submit(postfix, mid)))
        client.start()
        wait_until(lambda: proxy.connections > 0, 20, "the scan to reach spamd")
        milter.process.proc.send_signal(signal.SIGTERM)
        # the listener closes at once, while the transaction is still waiting for spamd
        wait_until(lambda: not accepts((LOOPBACK, milter.port)), 2, "the listener to close")
        assert not result, "replied before the slow scan could have finished"
        client.join(30)
        assert result and result[0].data is not None and result[0].data.code == 250, result
        assert milter.process.proc.wait(10) == 0
        stopping = events_named(milter, "stopping")[-1]
        assert stopping["in_flight"] == 1 and stopping["signal"] == "SIGTERM"
        assert events_named(milter, "shutdown")[-1]["drained"] is True
        assert milter.transaction(mid)["action"] == "delivered"
    finally:
        milter.stop()
        proxy.close()


def test_a_second_sigterm_during_the_drain_exits_at_once(
    scan_milter_process: ScanMilter, postfix: Postfix, spamd: Spamd, cyrus: Cyrus
) -> None:
    milter = scan_milter_process
    proxy = SlowProxy(spamd.address, delay=30.0)  # the drain would last as long
    try:
        milter.ensure({"spam": {"backends": [proxy.address]}})
        assert milter.process is not None and milter.process.proc is not None
        client = threading.Thread(target=lambda: submit(postfix, unique_message_id()), daemon=True)
        client.start()
        wait_until(lambda: proxy.connections > 0, 20, "the scan to reach spamd")
        earlier = len(events_named(milter, "stopping"))  # the log outlives restarts
        milter.process.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: len(events_named(milter, "stopping")) > earlier, 5, "the drain to start")
        milter.process.proc.send_signal(signal.SIGTERM)
        try:
            status = milter.process.proc.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 5 s after the second SIGTERM; its log: {milter.events()}")
        assert status == 128 + signal.SIGTERM
        shutdown = events_named(milter, "shutdown")[-1]
        assert shutdown["forced"] == "SIGTERM" and shutdown["drained"] is False
        assert shutdown["abandoned"] == 1
    finally:
        milter.stop()
        proxy.close()


# --- learning from LearnSpam -------------------------------------------------------------------

LEARN_FOLDER = "LearnSpam"


@pytest.fixture(scope="module")
def learning_spamd(stack_root: Path, daemon_logs: DaemonLogs) -> Iterator[LearningSpamd]:
    d = LearningSpamd(stack_root / "learning-spamd")
    daemon_logs.register("learning-spamd", d.log_path)
    try:
        d.start()
        yield d
    finally:
        d.stop()


def append(cyrus: Cyrus, message: bytes) -> None:
    with cyrus.imap() as imap:
        typ, data = imap.append(LEARN_FOLDER, "", imaplib.Time2Internaldate(time.time()), message)
        assert typ == "OK", data


def learn_config(path: Path, cyrus: Cyrus, spamds: list[LearningSpamd], log: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "imap": {
                    "host": cyrus.host,
                    "port": cyrus.imap_port,
                    "security": "none",
                    "user": ADMIN_USER,
                    "password": ADMIN_PASSWORD,
                    "folder": LEARN_FOLDER,
                },
                "spamd": {"backends": [f"inet:{d.host}:{d.port}" for d in spamds]},
                "log": {"file": str(log)},
            }
        )
    )
    return path


def test_learn_teaches_spamd_and_empties_the_folder_once(
    cyrus: Cyrus, learning_spamd: LearningSpamd, tmp_path: Path
) -> None:
    with cyrus.imap() as imap:
        typ, data = imap.create(LEARN_FOLDER)  # a shared top-level mailbox, as the admin
        assert typ == "OK", data
        # anyone may see the folder and put mail in; only the admin reads and removes
        assert imap.setacl(LEARN_FOLDER, "anyone", "lip")[0] == "OK"
        assert imap.setacl(LEARN_FOLDER, ADMIN_USER, "lrswitex")[0] == "OK"
    body = "Dear colleague,\n\nplease find the seminar schedule for next week below.\n"
    tagged = build_message(
        body=body, message_id=unique_message_id(),
        extra_headers={"X-Spam-Status": "Yes, score=4.0 required=3.0 tests=MG_TEST_4_0=4.0",
                       "X-Spam-Flag": "YES", "X-Spam-Level": "****"},
    )  # fmt: skip
    missed = build_message(
        body="Cheap watches, best prices, click here now!\n", message_id=unique_message_id(),
        extra_headers={"X-Spam-Status": "No, score=0.5 required=3.0 tests=MG=0.5"},
    )  # fmt: skip
    foreign = build_message(body="Not scanned by us.\n", message_id=unique_message_id())
    for message in (tagged, missed, foreign):
        append(cyrus, message)
    config = learn_config(tmp_path / "learn.yaml", cyrus, [learning_spamd], tmp_path / "learn.json")
    assert learning_spamd.learned() == (0, 0)

    first = mailglue("learn", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "learn: 1 ham, 1 spam, 1 unknown"
    assert learning_spamd.learned() == (1, 1)  # (spam, ham)
    with cyrus.imap() as imap:
        assert imap.select(LEARN_FOLDER)[1] == [b"1"]  # only the one not ours is left
    events = [json.loads(x) for x in (tmp_path / "learn.json").read_text().splitlines()]
    assert sorted(e["outcome"] for e in events if e["event"] == "learn") == [
        "ham",
        "spam",
        "unknown",
    ]

    second = mailglue("learn", "--config", str(config))
    assert second.stdout.strip() == "learn: 1 unknown"
    assert learning_spamd.learned() == (1, 1)


def in_learn_folder(cyrus: Cyrus, message_id: str) -> bool:
    with cyrus.imap() as imap:
        imap.select(LEARN_FOLDER, readonly=True)
        typ, data = imap.search(None, "HEADER", "Message-ID", message_id)
        return typ == "OK" and bool(data and data[0])


def test_learn_teaches_every_spamd_and_keeps_the_message_while_one_is_down(
    cyrus: Cyrus, learning_spamd: LearningSpamd, stack_root: Path, tmp_path: Path
) -> None:
    """Each scanner has its own Bayes, and the milter may score with either: both must learn
    what a member reported. With the second spamd down the message stays in the folder (the
    first has learned it); once it is up, the next run teaches it and removes the message."""
    second = LearningSpamd(stack_root / "learning-spamd-second")
    message_id = unique_message_id()
    tagged = build_message(
        body="The committee meets on Thursday; agenda attached.\n", message_id=message_id,
        extra_headers={"X-Spam-Status": "Yes, score=3.5 required=3.0 tests=MG_TEST=3.5",
                       "X-Spam-Flag": "YES"},
    )  # fmt: skip
    with cyrus.imap() as imap:
        imap.create(LEARN_FOLDER)  # a NO when the test above made it already
        assert imap.setacl(LEARN_FOLDER, ADMIN_USER, "lrswitex")[0] == "OK"
    append(cyrus, tagged)
    config = learn_config(tmp_path / "learn.yaml", cyrus, [learning_spamd, second], tmp_path / "l")
    first_before = learning_spamd.learned()

    while_down = mailglue("learn", "--config", str(config))
    assert while_down.returncode == 1, while_down.stdout + while_down.stderr
    assert "1 error" in while_down.stdout, while_down.stdout
    assert learning_spamd.learned()[1] == first_before[1] + 1  # the first learned it
    assert in_learn_folder(cyrus, message_id)  # and it waits for the second
    event = next(
        e
        for e in map(json.loads, (tmp_path / "l").read_text().splitlines())
        if e.get("message_id") == message_id
    )
    assert event["outcome"] == "error" and f":{second.port}" in event["reason"], event

    second.start()
    try:
        once_up = mailglue("learn", "--config", str(config))
        assert once_up.returncode == 0, once_up.stdout + once_up.stderr
        assert "1 ham" in once_up.stdout, once_up.stdout
        assert second.learned() == (0, 1)
        assert learning_spamd.learned()[1] == first_before[1] + 1  # not counted twice
        assert not in_learn_folder(cyrus, message_id)
    finally:
        second.stop()
