"""Pure cores of the admin tools: shadow verdicts, trace joining and rendering, tail lines,
LearnSpam classification, TELL replies, metrics from events, log file families."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from milters.common.configkit import ConfigError
from milters.learn.config import parse_learn_config
from milters.learn.learner import classify, learnable_copy
from milters.ops.logread import parse_time, read_events, rotated_family
from milters.ops.tail import tail_line, wanted
from milters.ops.trace import assemble, find, render, sorted_tests
from milters.policy.metrics import PolicyMetrics
from milters.scan.config import parse_config
from milters.scan.event import TransactionEvent
from milters.scan.metrics import MilterMetrics
from milters.scan.shadow import SHADOW_HEADER, shadow_decide
from milters.scan.verdict import (
    Action,
    Clean,
    Infected,
    SkipCause,
    SpamScore,
    Unscanned,
    VerdictPolicy,
)
from milters.scanners.spamtell import MessageClass, confirmed, tell_request

POLICY = VerdictPolicy()
GTUBE = SpamScore(Decimal(1000), (("GTUBE", Decimal(1000)),))
SPAMD_DOWN = Unscanned("spamd", SkipCause.FAILED, "connection refused")

# --- shadow ------------------------------------------------------------------------------------


def test_shadow_off_is_plain_decide() -> None:
    v = shadow_decide(Clean(), GTUBE, POLICY, shadow=False)
    assert v.applied.action is Action.REJECT and v.would is None


def test_shadow_turns_a_spam_reject_into_a_tagged_accept() -> None:
    v = shadow_decide(Clean(), GTUBE, POLICY, shadow=True)
    assert v.applied.action is Action.ACCEPT
    assert v.would is not None and v.would.action is Action.REJECT
    headers = dict(v.applied.headers)
    assert headers["X-Spam-Status"].startswith("Yes, score=1000.0")
    assert headers["X-Spam-Flag"] == "YES"
    assert (
        headers[SHADOW_HEADER] == "would reject: 550 5.7.1 Message rejected as spam (score 1000.0)"
    )


def test_shadow_turns_a_backend_tempfail_into_a_marked_accept() -> None:
    v = shadow_decide(Clean(), SPAMD_DOWN, POLICY, shadow=True)
    assert v.applied.action is Action.ACCEPT and v.would is not None
    assert v.would.action is Action.TEMPFAIL
    assert dict(v.applied.headers)["X-Mailglue-Unscanned"] == "spamd: connection refused"


@pytest.mark.parametrize("spam", [GTUBE, SpamScore(Decimal(0), ())])
def test_shadow_still_rejects_a_virus(spam: SpamScore) -> None:
    v = shadow_decide(Infected("Eicar"), spam, POLICY, shadow=True)
    assert v.applied.action is Action.REJECT and v.would is None


def test_shadow_leaves_an_accept_alone() -> None:
    v = shadow_decide(Clean(), SpamScore(Decimal("3.1"), ()), POLICY, shadow=True)
    assert v.would is None and "X-Mailglue-Shadow" not in dict(v.applied.headers)


# --- config ------------------------------------------------------------------------------------


def test_new_milter_keys_and_defaults() -> None:
    c = parse_config("m.yaml", {})
    assert (c.shadow, c.metrics_listen, c.grace) == (False, None, c.time_budget)
    c = parse_config(
        "m.yaml",
        {"milter": {"shadow": True, "metrics_listen": "127.0.0.1:9898", "shutdown_grace": 5}},
    )
    assert c.shadow and str(c.metrics_listen) == "inet:127.0.0.1:9898" and c.grace == 5


@pytest.mark.parametrize("value", ["unix:/run/x.sock", "nonsense", 9898])
def test_bad_metrics_listen_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"key 'milter\.metrics_listen'"):
        parse_config("m.yaml", {"milter": {"metrics_listen": value}})


def test_learn_config_needs_a_password_and_a_move_target() -> None:
    with pytest.raises(ConfigError) as err:
        parse_learn_config("l.yaml", {"learn": {"after": "move"}})
    text = str(err.value)
    assert "key 'imap.password_file'" in text and "key 'learn.move_to'" in text
    c = parse_learn_config("l.yaml", {"imap": {"password": "x", "security": "none"}})
    assert c.imap.port == 143 and c.after == "delete"


# --- trace -------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def tx(qid: str, sender: str, rcpt: str, at: float, **extra: Any) -> dict[str, Any]:
    return {
        "ts": ts(at), "event": "transaction", "queue_id": qid, "message_id": f"<{qid}@x>",
        "sender": sender, "recipients": [{"address": rcpt}], "action": "reject",
        "spam": {"score": 1000.0, "tests": {"A": 0.5, "GTUBE": 1000.0, "B": -2.0}},
        "virus": {"found": None, "backend": "c"}, "reply": "550 5.7.1 spam",
        "timings_ms": {"spamd": 40, "total": 45}, **extra,
    }  # fmt: skip


def pol(rcpt: str, at: float, instance: str, qid: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "ts": ts(at), "event": "policy_decision", "queue_id": qid or None, "instance": instance,
        "sender": "bob@x.test", "recipient": rcpt, "decision": "pass", "action": "DUNNO",
        "reason": "ok", **extra,
    }  # fmt: skip


def test_policy_joins_by_queue_id_and_brings_its_instance_siblings() -> None:
    events = [
        pol("alice@ex.org", 0, "i1"),  # first RCPT: no queue id yet
        pol("nobody@ex.org", 0.1, "i1", "Q1", decision="reject", action="550 5.1.1 no"),
        pol("alice@ex.org", 0.2, "i1", "Q1"),
        tx("Q1", "bob@x.test", "alice@ex.org", 1),
    ]
    [trace] = assemble(events)
    assert trace.transaction is not None and len(trace.policy) == 3


def test_policy_joins_by_address_within_the_window_and_leftovers_stand_alone() -> None:
    events = [
        pol("alice@ex.org", 0, "i1"),
        tx("Q1", "bob@x.test", "alice@ex.org", 5),
        pol("alice@ex.org", 2000, "i2"),  # too long before the next transaction
        tx("Q2", "bob@x.test", "alice@ex.org", 4000),
        pol("new@ex.org", 4100, "i3", decision="reject"),  # refused at RCPT, no DATA
    ]
    traces = assemble(events)
    assert [len(t.policy) for t in traces if t.transaction] == [1, 0]
    alone = [t for t in traces if t.transaction is None]
    assert [t.policy[0]["instance"] for t in alone] == ["i2", "i3"]
    assert [t.policy[0]["recipient"] for t in find(events, "NEW@ex.org")] == ["new@ex.org"]


@pytest.mark.parametrize("query", ["Q1", "<Q1@x>", "Q1@x", "bob@x.test", "<alice@ex.org>"])
def test_query_matches_queue_id_message_id_or_address(query: str) -> None:
    assert len(find([tx("Q1", "bob@x.test", "alice@ex.org", 0)], query)) == 1


def test_render_sorts_tests_by_weight_and_shows_the_reply() -> None:
    text = render(assemble([tx("Q1", "bob@x.test", "a@ex.org", 0, would_action="reject")])[0])
    lines = text.splitlines()
    tests = [line.split()[-1] for line in lines if line.startswith("            ")]
    assert tests == ["GTUBE", "B", "A"]
    assert "  reply     550 5.7.1 spam" in lines
    assert "shadow mode, would reject" in text
    assert sorted_tests({"X": -3, "Y": 2}) == [("X", -3.0), ("Y", 2.0)]


def test_render_shows_the_sender_checks_on_one_line() -> None:
    auth = {
        "spf": {"result": "fail", "domain": "bank.test", "identity": "mailfrom"},
        "dkim": [{"result": "pass", "domain": "mailer.test", "selector": "s1"}],
        "dmarc": {"result": "fail", "header_from": "bank.test", "policy": "reject"},
        "action": "reject",
    }
    text = render(assemble([tx("Q1", "ceo@bank.test", "a@ex.org", 0, auth=auth)])[0])
    assert (
        "  auth      spf=fail (bank.test) dkim=pass (mailer.test) "
        "dmarc=fail (bank.test p=reject) -> reject"
    ) in text.splitlines()
    unchecked = render(assemble([tx("Q2", "bob@x.test", "a@ex.org", 0)])[0])
    assert "  auth " not in unchecked  # a trusted client: nothing was checked


# --- log files ---------------------------------------------------------------------------------


def test_rotated_family_is_read_oldest_first(tmp_path: Path) -> None:
    live = tmp_path / "milter.json"
    live.write_text(json.dumps({"n": 3}) + "\nnot json\n")
    (tmp_path / "milter.json.1").write_text(json.dumps({"n": 2}) + "\n")
    with gzip.open(tmp_path / "milter.json.2.gz", "wt") as f:
        f.write(json.dumps({"n": 1}) + "\n")
    (tmp_path / "milter.json.bak").write_text("{}\n")
    assert [p.name for p in rotated_family(live)] == [
        "milter.json.2.gz",
        "milter.json.1",
        "milter.json",
    ]
    assert [e["n"] for e in read_events([str(live)])] == [1, 2, 3]


def test_parse_time() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert parse_time("2h", now) == now - timedelta(hours=2)
    assert parse_time("2026-11-26", now) == datetime(2026, 11, 26, tzinfo=UTC)
    assert parse_time("2026-11-26T10:00+01:00", now).hour == 10
    with pytest.raises(ValueError):
        parse_time("yesterday-ish", now)


# --- tail --------------------------------------------------------------------------------------


def test_tail_line_plain_and_colored() -> None:
    event = tx("Q1", "bob@x.test", "alice@ex.org", 0)
    assert tail_line(event) == "09:00:00 reject     1000.0  bob@x.test → alice@ex.org"
    assert tail_line(event, color=True).startswith("\033[31m")
    assert wanted(event, "reject") and not wanted(event, "delivered")
    assert not wanted({"event": "startup"}, None)


# --- learn -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("X-Spam-Flag", "YES"), ("X-Spam-Status", "Yes, score=4.0")], MessageClass.HAM),
        ([("X-Spam-Status", "Yes, score=3.1")], MessageClass.HAM),
        ([("X-Spam-Status", "No, score=0.0 required=3.0")], MessageClass.SPAM),
        ([("Subject", "hi")], None),
        ([("X-Spam-Status", "garbage")], None),
    ],
)
def test_classify_from_our_headers(
    headers: list[tuple[str, str]], expected: MessageClass | None
) -> None:
    assert classify(headers) is expected


def test_learnable_copy_drops_our_headers_with_continuations() -> None:
    raw = b"Subject: a\r\nX-Spam-Status: Yes,\r\n\ttests=A\r\nTo: b\r\n\r\nbody\r\n"
    assert learnable_copy(raw) == b"Subject: a\r\nTo: b\r\n\r\nbody\r\n"


def test_tell_request_and_replies() -> None:
    request = tell_request(MessageClass.SPAM, 10, remove=False, user=None)
    assert request == (
        b"TELL SPAMC/1.5\r\nContent-length: 10\r\nMessage-class: spam\r\nSet: local\r\n\r\n"
    )
    assert confirmed(b"SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n", remove=False)
    assert not confirmed(b"SPAMD/1.1 0 EX_OK\r\n\r\n\r\n", remove=False)
    assert confirmed(b"SPAMD/1.1 0 EX_OK\r\nDidRemove: local\r\n\r\n", remove=True)


# --- metrics -----------------------------------------------------------------------------------


def value(metrics: MilterMetrics | PolicyMetrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_milter_metrics_follow_the_events() -> None:
    m = MilterMetrics()
    m.observe(TransactionEvent.from_json({"action": "delivered", "spam": {"score": Decimal("2.5")},
               "timings_ms": {"spamd": 40, "clamd": 2, "lmtp": 10, "total": 52}}))  # fmt: skip
    m.observe(TransactionEvent.from_json({"action": "tempfail", "reason": "spamd failed",
               "spam": {"unscanned": "failed", "reason": "time budget exhausted"},
               "recipients": [{"reply": "not attempted: backend unreachable (x)"}]}))  # fmt: skip
    m.observe(TransactionEvent.from_json(
        {"action": "delivered", "would_action": "reject", "spam": {"score": 1000.0}}))  # fmt: skip
    assert value(m, "mailglue_milter_transactions_total", action="delivered") == 2
    assert value(m, "mailglue_milter_shadow_would_total", would_action="reject") == 1
    assert value(m, "mailglue_milter_spam_score_count") == 2
    assert value(m, "mailglue_milter_spam_score_bucket", le="3.0") == 1
    assert value(m, "mailglue_milter_backend_errors_total", backend="spamd") == 1
    assert value(m, "mailglue_milter_backend_errors_total", backend="lmtp") == 1
    assert value(m, "mailglue_milter_budget_exhausted_total") == 1
    assert value(m, "mailglue_milter_backend_duration_seconds_sum", backend="spamd") == 0.04


def test_policy_metrics_follow_the_events() -> None:
    p = PolicyMetrics()
    p.observe({"decision": "reject", "reason": "no such user", "latency_ms": 3.0})
    assert (
        value(p, "mailglue_policy_decisions_total", decision="reject", reason="no such user") == 1
    )
    assert value(p, "mailglue_policy_decision_duration_seconds_count") == 1
