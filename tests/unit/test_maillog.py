"""Postfix's log read back per queue id (milters/ops/maillog.py), from lines as the deployed
stack writes them: a post to `all` (which has `staff` as a member) and Mailman's copies."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from milters.ops.logread import read_lines
from milters.ops.maillog import QueueRecord, collect, is_queue_id, split_line, stamp_time

# /var/log/postfix.log (maillog_file) during one list post; interleaved as Postfix wrote it,
# with lines of other processes and of no queue file in between.
POST = """\
Dec 01 08:19:48 mail postfix/submission/smtpd[21390]: connect from localhost[127.0.0.1]
Dec 01 08:19:48 mail postfix/submission/smtpd[21390]: 1A4DD1626C4: client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=bob
Dec 01 08:19:48 mail postfix/cleanup[21480]: 1A4DD1626C4: message-id=<p1@journey.test>
Dec 01 08:19:48 mail postfix/cleanup[21480]: 1A4DD1626C4: milter-discard: END-OF-MESSAGE from localhost[127.0.0.1]: milter triggers DISCARD action; from=<bob@example.org> to=<all@example.org> proto=ESMTP helo=<laptop.journey.test>
Dec 01 08:19:48 mail postfix/submission/smtpd[21390]: disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8
Dec 01 08:19:49 mail postfix/lists/smtpd[21505]: 6B2B81626E5: client=localhost[127.0.0.1]
Dec 01 08:19:49 mail postfix/cleanup[21383]: 6B2B81626E5: message-id=<p1@journey.test>
Dec 01 08:19:49 mail postfix/qmgr[32539]: 6B2B81626E5: from=<all-bounces@example.org>, size=1858, nrcpt=2 (queue active)
Dec 01 08:19:49 mail postfix/lmtp[21506]: 6B2B81626E5: to=<staff@example.org>, relay=127.0.0.1[127.0.0.1]:8024, delay=0.11, delays=0.09/0/0/0.01, dsn=2.0.0, status=sent (250 Ok)
2026-12-01T08:19:49.600000+00:00 vm cyrus/lmtpunix[26028]: Delivered: <p1@journey.test> to mailbox: example.org!user.bob
Dec 01 08:19:49 mail postfix/lmtp[21508]: 6B2B81626E5: to=<bob@example.org>, relay=mail.example.org[/run/cyrus/socket/lmtp], delay=0.11, delays=0.09/0.02/0/0.01, dsn=2.1.5, status=sent (250 2.1.5 Success SESSIONID=<cyrus-1796113189-32530-1-6290618209849269612>)
Dec 01 08:19:50 mail postfix/lists/smtpd[21505]: 8827D16270E: client=localhost[127.0.0.1]
Dec 01 08:19:49 mail postfix/qmgr[32539]: 6B2B81626E5: removed
Dec 01 08:19:50 mail postfix/cleanup[21480]: 8827D16270E: message-id=<p1@journey.test>
Dec 01 08:19:50 mail postfix/anvil[1022]: statistics: max connection rate 1/60s for (submission:127.0.0.1) at Dec 01 08:19:48
Dec 01 08:19:50 mail postfix/qmgr[32539]: 8827D16270E: from=<staff-bounces@example.org>, size=3093, nrcpt=3 (queue active)
Dec 01 08:19:50 mail postfix/smtp[21401]: 8827D16270E: to=<friend@example.net>, relay=none, delay=0.13, delays=0.1/0.04/0/0, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:2526: Connection refused)
Dec 01 08:19:50 mail postfix/lmtp[21506]: 8827D16270E: to=<alice@example.org>, relay=mail.example.org[/run/cyrus/socket/lmtp], delay=0.1, delays=0.09/0/0/0.01, dsn=2.1.5, status=sent (250 2.1.5 Success SESSIONID=<cyrus-1796113190-21507-2-4255982572777993085>)
Dec 01 08:19:50 mail postfix/lmtp[21506]: 8827D16270E: to=<bob@example.org>, relay=mail.example.org[/run/cyrus/socket/lmtp], delay=0.1, delays=0.09/0/0/0.01, dsn=2.1.5, status=sent (250 2.1.5 Success SESSIONID=<cyrus-1796113190-21507-2-4255982572777993085>)
Dec 01 08:20:25 mail postfix/qmgr[32539]: 8827D16270E: from=<staff-bounces@example.org>, size=3093, nrcpt=3 (queue active)
Dec 01 08:20:25 mail postfix/smtp[21401]: 8827D16270E: to=<friend@example.net>, relay=127.0.0.1[127.0.0.1]:2526, delay=35, delays=35/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)
Dec 01 08:20:25 mail postfix/qmgr[32539]: 8827D16270E: removed
"""  # noqa: E501


def test_lines_of_one_queue_file_are_gathered_whatever_came_in_between() -> None:
    records = {r.queue_id: r for r in collect(POST.splitlines())}
    assert list(records) == ["6B2B81626E5", "8827D16270E", "1A4DD1626C4"]  # removed first
    copy = records["8827D16270E"]
    assert (copy.received_by, copy.client) == ("postfix/lists/smtpd", "localhost[127.0.0.1]")
    assert (copy.message_id, copy.sender, copy.nrcpt) == (
        "<p1@journey.test>",
        "staff-bounces@example.org",
        3,
    )
    attempts = [(d.recipient, d.status, d.agent, d.dsn) for d in copy.deliveries]
    assert attempts == [
        ("friend@example.net", "deferred", "smtp", "4.4.1"),
        ("alice@example.org", "sent", "lmtp", "2.1.5"),
        ("bob@example.org", "sent", "lmtp", "2.1.5"),
        ("friend@example.net", "sent", "smtp", "2.0.0"),
    ]
    assert copy.deliveries[0].reply == "connect to 127.0.0.1[127.0.0.1]:2526: Connection refused"
    assert copy.deliveries[0].relay == "none" and copy.deliveries[3].stamp == "Dec 01 08:20:25"
    assert copy.removed and copy.first_seen == "Dec 01 08:19:50"
    post = records["1A4DD1626C4"]  # discarded by the milter: never removed by qmgr, no delivery
    assert post.received_by == "postfix/submission/smtpd" and not post.removed
    assert post.deliveries == []
    assert post.notes[0].startswith("Dec 01 08:19:48 milter-discard: END-OF-MESSAGE")


def test_keep_drops_unwanted_files_once_they_are_removed() -> None:
    kept = collect(POST.splitlines(), lambda r: r.sender == "all-bounces@example.org")
    assert [r.queue_id for r in kept] == ["6B2B81626E5"]


def test_a_queue_id_reused_after_removed_is_a_new_message() -> None:
    lines = [
        "Dec 01 08:00:00 mail postfix/pickup[9]: 6B2B81626E5: uid=0 from=<root>",
        "Dec 01 08:00:00 mail postfix/cleanup[9]: 6B2B81626E5: message-id=<old@x>",
        "Dec 01 08:00:01 mail postfix/qmgr[9]: 6B2B81626E5: removed",
        *POST.splitlines(),
    ]
    first, second = [r for r in collect(lines) if r.queue_id == "6B2B81626E5"]
    assert (first.received_by, first.message_id) == ("postfix/pickup", "<old@x>")
    assert (second.received_by, second.message_id) == ("postfix/lists/smtpd", "<p1@journey.test>")


def test_syslog_formats_read_like_the_maillog_file() -> None:
    """rsyslog's RFC 3339 stamps (Debian 12) and classic RFC 3164 ones with a padded day."""
    lines = """\
2026-12-01T08:19:50.118202+00:00 vm postfix/lists/smtpd[21505]: 8827D16270E: client=localhost[127.0.0.1]
2026-12-01T08:19:50.120011+00:00 vm postfix/cleanup[21480]: 8827D16270E: message-id=<p1@journey.test>
Dec  1 08:19:50 vm postfix/lmtp[21506]: 8827D16270E: to=<a@example.org>, orig_to=<staff@example.org>, relay=mail.example.org[/run/cyrus/socket/lmtp], delay=0.1, delays=0.09/0/0/0.01, dsn=5.1.1, status=bounced (host mail.example.org[/run/cyrus/socket/lmtp] said: 550-Mailbox unknown (in reply to RCPT TO command))
Dec  1 08:19:50 vm postfix/bounce[21510]: 8827D16270E: sender non-delivery notification: 1C0F91626F0
""".splitlines()  # noqa: E501
    (record,) = collect(lines)
    assert record.received_by == "postfix/lists/smtpd" and record.message_id == "<p1@journey.test>"
    (bounced,) = record.deliveries
    assert (bounced.recipient, bounced.orig_to) == ("a@example.org", "staff@example.org")
    assert bounced.status == "bounced" and bounced.dsn == "5.1.1"
    assert bounced.reply.endswith("550-Mailbox unknown (in reply to RCPT TO command)")
    assert record.notes == ["Dec  1 08:19:50 sender non-delivery notification: 1C0F91626F0"]


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage \x00\xff",
        "Dec 01 08:19:48 mail postfix/submission/smtpd[21390]: connect from localhost[127.0.0.1]",
        "Dec 01 08:19:50 mail postfix/anvil[1022]: statistics: max cache size 1 at Dec 01 08:19:48",
        "Dec 01 08:19:50 mail postfix/smtpd[1]: warning: hostname x does not resolve to address",
        "Dec 01 08:19:50 mail postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.1]: 550 5.1.1",
        "2026-12-01T08:19:49+00:00 vm cyrus/lmtpunix[26028]: 6B2B81626E5: not postfix",
        "Dec 01 08:19:49 mail postfix/lmtp[21506]: 6B2B81626E5",  # cut off
    ],
)
def test_lines_about_no_queue_file_are_skipped(line: str) -> None:
    assert split_line(line) is None


def test_a_long_queue_id_is_one() -> None:
    line = split_line("Dec 01 08:19:49 mail postfix/qmgr[9]: 4Xb2Zk1Qz7z9t: removed")
    assert line is not None and (line.queue_id, line.service, line.text) == (
        "4Xb2Zk1Qz7z9t",
        "postfix/qmgr",
        "removed",
    )
    assert is_queue_id("4Xb2Zk1Qz7z9t") and is_queue_id("8827D16270E")
    assert not is_queue_id("statistics") and not is_queue_id("bob@example.org")


def test_stamps_get_their_year_and_zone_from_the_reading_host() -> None:
    cet = timezone(timedelta(hours=1))
    january = datetime(2027, 1, 2, 10, 0, tzinfo=cet)
    assert stamp_time("Dec 31 23:59:58", january) == datetime(2026, 12, 31, 23, 59, 58, tzinfo=cet)
    assert stamp_time("Jan  2 09:59:00", january) == datetime(2027, 1, 2, 9, 59, tzinfo=cet)
    assert stamp_time("2026-12-01T08:19:50.118202+00:00", january) == datetime(
        2026, 12, 1, 8, 19, 50, 118202, tzinfo=UTC
    )
    assert stamp_time("Foo 31 25:00:00", january) is None


def test_rotated_postfix_logs_are_read_oldest_first(tmp_path: Path) -> None:
    """A copy deferred before logrotate ran and delivered after: one record from both files."""
    lines = POST.splitlines(keepends=True)
    live = tmp_path / "postfix.log"
    split = lines.index(next(x for x in lines if "08:20:25" in x))
    with gzip.open(tmp_path / "postfix.log.2.gz", "wt") as f:
        f.write("Dec 01 07:00:00 mail postfix/qmgr[9]: 39FB01625CA: removed\n")
    (tmp_path / "postfix.log.1").write_text("".join(lines[:split]))
    live.write_text("".join(lines[split:]))
    records: dict[str, QueueRecord] = {r.queue_id: r for r in collect(read_lines([str(live)]))}
    assert records["39FB01625CA"].removed
    copy = records["8827D16270E"]
    assert copy.removed and [d.status for d in copy.deliveries][-1] == "sent"
    assert copy.received_by == "postfix/lists/smtpd"  # from the older file
