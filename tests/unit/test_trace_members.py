"""`mailglue trace` of a list post: Mailman's copies from Postfix's log joined to the post."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from milters.ops.maillog import collect
from milters.ops.trace import Trace, assemble, attach_members, is_list_post, render
from tests.unit.test_maillog import POST

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def post(qid: str = "1A4DD1626C4", ts: str = "2026-12-01T08:19:48.203Z", **extra: Any) -> Any:
    """bob's post to `all`, as the milter logged it (Mailman's LMTP took it)."""
    return {
        "ts": ts, "event": "transaction", "queue_id": qid, "message_id": "<p1@journey.test>",
        "client": {"addr": "127.0.0.1", "name": "localhost", "sasl_user": "bob"},
        "sender": "bob@example.org", "action": "delivered", "reason": "clean",
        "recipients": [{"recipient": "all@example.org", "local": True, "outcome": "delivered",
                        "reply": "250 Ok", "backend": "inet:127.0.0.1:8024", "list": True}],
        "reply": f"250 2.0.0 Ok: queued as {qid}", **extra,
    }  # fmt: skip


def traced(*events: dict[str, Any], log: str = POST) -> list[Trace]:
    traces = assemble(events)
    attach_members(traces, collect(log.splitlines()), NOW)
    return traces


def member_lines(trace: Trace) -> list[str]:
    return [line for line in render(trace).splitlines() if line.startswith("  member")]


def test_a_list_post_shows_each_copy_from_mailman_and_every_delivery() -> None:
    (trace,) = traced(post())
    assert trace.members is not None
    # the post's own queue file (discarded once Mailman had it) is not one of the copies
    assert [copy.queue_id for copy in trace.members] == ["6B2B81626E5", "8827D16270E"]
    lines = member_lines(trace)
    assert lines[0] == (
        "  members   6B2B81626E5 from Mailman (<all-bounces@example.org>, 2 recipients) "
        "Dec 01 08:19:49"
    )
    staff = [line for line in lines if line.startswith("  member    8827D16270E")]
    assert [line.split()[3] for line in staff] == [  # by recipient; attempts in time order
        "alice@example.org:",
        "bob@example.org:",
        "friend@example.net:",
        "friend@example.net:",
    ]
    assert staff[2] == (
        "  member    8827D16270E 08:19:50 friend@example.net: DEFERRED via smtp none "
        "(connect to 127.0.0.1[127.0.0.1]:2526: Connection refused)"
    )
    assert staff[3].endswith(
        "friend@example.net: sent via smtp 127.0.0.1[127.0.0.1]:2526 (250 2.0.0 Ok)"
    )
    cyrus = "mail.example.org[/run/cyrus/socket/lmtp] (250 2.1.5 Success SESSIONID="
    assert f" 08:19:50 bob@example.org: sent via lmtp {cyrus}" in staff[1]


def test_json_carries_the_copies() -> None:
    (trace,) = traced(post())
    out = trace.as_dict()
    assert [c["queue_id"] for c in out["members"]] == ["6B2B81626E5", "8827D16270E"]
    (bounced,) = [d for d in out["members"][1]["deliveries"] if d["status"] == "deferred"]
    assert bounced["recipient"] == "friend@example.net" and bounced["dsn"] == "4.4.1"
    assert out["members_note"] is None


def test_a_copy_still_queued_or_missing_says_so() -> None:
    queued = POST.replace("Dec 01 08:20:25 mail postfix/qmgr[32539]: 8827D16270E: removed\n", "")
    (trace,) = traced(post(), log=queued)
    assert "(<staff-bounces@example.org>, 3 recipients, still queued)" in render(trace)
    (held,) = traced(post(), log="")  # held for moderation: Mailman sent nothing yet
    assert held.members == []
    assert member_lines(held) == [
        "  members   no copy from Mailman in Postfix's log (yet): held for moderation, "
        "still in Mailman's queues, or logged elsewhere (--maillog)"
    ]


def test_mail_that_is_not_a_list_post_gets_no_members_part() -> None:
    to_bob = post(recipients=[{**post()["recipients"][0], "recipient": "bob@example.org"}])
    del to_bob["recipients"][0]["list"]
    mailman_down = post(recipients=[{**post()["recipients"][0], "outcome": "deferred"}])
    assert not is_list_post(to_bob) and not is_list_post(mailman_down)
    for trace in traced(to_bob) + traced(mailman_down):
        assert trace.members is None and member_lines(trace) == []
        assert "members" not in trace.as_dict()


def test_the_same_message_sent_twice_splits_the_copies_by_time() -> None:
    """A sender's client sends the post again (same Message-ID) an hour later."""
    again = POST.replace("08:19:", "09:19:").replace("08:20:", "09:20:")
    again = again.replace("6B2B81626E5", "7C3C91626F1").replace("8827D16270E", "9938E16271F")
    first, second = traced(
        post(), post("2A5EE1626D5", "2026-12-01T09:19:48.100Z"), log=POST + again
    )
    assert first.members is not None and second.members is not None
    assert [c.queue_id for c in first.members] == ["6B2B81626E5", "8827D16270E"]
    assert [c.queue_id for c in second.members] == ["7C3C91626F1", "9938E16271F"]


def test_a_post_whose_queue_id_is_in_the_log_as_a_lists_copy_is_not_its_own_copy() -> None:
    """Defensive: only Mailman's copies count, never the queue file the post itself had."""
    (trace,) = traced(post("6B2B81626E5"))
    assert trace.members is not None
    assert [c.queue_id for c in trace.members] == ["8827D16270E"]


def test_without_a_postfix_log_the_trace_still_prints_and_says_why() -> None:
    (trace,) = assemble([post()])
    trace.members_note = "member deliveries unknown: no Postfix log was readable (x: not found)"
    text = render(trace)
    assert text.startswith("2026-12-01T08:19:48.203Z  queue id 1A4DD1626C4")
    assert text.splitlines()[-1] == f"  members   {trace.members_note}"
    assert trace.as_dict()["members"] is None
