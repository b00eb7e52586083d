"""`mailglue lists` against a real Mailman 3 (Debian's), and proof that the harness Mailman is
a working one: a post over LMTP reaches every member at the SMTP sink, an unknown list is 550,
and a post to a list reaches the members of a list that is one of its members.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmtp_bridge import LmtpClient
from milters.cli import main
from milters.common.mailman import MailmanRest
from milters.common.secrets import Secret
from tests.harness.mailman import Mailman
from tests.harness.messages import build_message, unique_message_id
from tests.harness.postfix import SmtpSink
from tests.harness.process import free_port, wait_until

pytestmark = pytest.mark.integration

STAFF = "staff.example.org"
TEAM = "team.example.org"
LISTS: list[dict[str, Any]] = [
    {
        "name": "staff@example.org",
        "description": "Everyone on the staff",
        "owners": ["alice@example.org"],
        "moderators": ["bob@example.org"],
        "members": ["Carol@Example.org", "dave@relay.test"],
    },
    {
        "name": "team@lists.example.org",
        "owners": ["bob@example.org"],
        "members": ["alice@example.org", "carol@example.org", "staff@example.org"],
        "nonmember_action": "reject",
        "members_only": True,
        "max_message_kb": 2048,
        "archive_policy": "public",
    },
]


@dataclass
class Inventory:
    """lists.yaml and its state file in a test's directory, and the command run on it."""

    mailman: Mailman
    root: Path

    @property
    def path(self) -> Path:
        return self.root / "lists.yaml"

    @property
    def state_file(self) -> Path:
        return self.root / "state" / "lists.json"

    @property
    def log_file(self) -> Path:
        return self.root / "lists.log"

    def write(self, lists: list[dict[str, Any]], **mailman: Any) -> None:
        secret = self.root / "rest.secret"
        secret.write_text(self.mailman.admin_pass + "\n")
        api = {
            "rest_url": self.mailman.rest_url,
            "user": self.mailman.admin_user,
            "password_file": str(secret),
            **mailman,
        }
        data = {
            "mailman": api,
            "domains": [{"mail_host": "lists.example.org", "web_host": "lists.example.org"}],
            "lists": lists,
            "state_file": str(self.state_file),
            "log": {"file": str(self.log_file)},
        }
        self.path.write_text(yaml.safe_dump(data))

    def run(self, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
        """`mailglue lists` through the command line parser; (exit status, stdout, stderr)."""
        capsys.readouterr()
        status = main(["lists", "--config", str(self.path), *extra])
        out, err = capsys.readouterr()
        return status, out, err

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = self.log_file.read_text().splitlines() if self.log_file.exists() else []
        return [e for e in map(json.loads, lines) if e["event"] == name]


def changed(out: str) -> int:
    match = re.search(r"; changed: (\d+)", out)
    assert match, out
    return int(match.group(1))


@pytest.fixture
def inventory(mailman: Mailman, tmp_path: Path) -> Iterator[Inventory]:
    mailman.reset()
    inv = Inventory(mailman, tmp_path)
    inv.write(LISTS)
    yield inv


def test_first_run_builds_everything_and_the_second_changes_nothing(
    inventory: Inventory, mailman: Mailman, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = inventory.run(capsys)
    assert status == 0, err
    # 2 domains + 2 lists + 2 owners + 1 moderator + 5 members + 2 settings changes + 1 alias
    assert out.splitlines() == [
        "lists: 2 lists; created 2 domains and 2 lists, added 2 owners, 1 moderators and "
        "5 members, changed 2 lists' settings and 1 lists' acceptable_aliases; changed: 15"
    ]
    _, domains = mailman.request("GET", "domains")
    assert {d["mail_host"] for d in domains["entries"]} == {"example.org", "lists.example.org"}
    assert mailman.emails(STAFF, "owner") == {"alice@example.org"}
    assert mailman.emails(STAFF, "moderator") == {"bob@example.org"}
    assert mailman.emails(STAFF) == {"carol@example.org", "dave@relay.test"}
    assert mailman.emails("team.lists.example.org", "owner") == {"bob@example.org"}
    # a list may be a member of another (the FAQ's case: staff@ receives team@'s posts)
    assert mailman.emails("team.lists.example.org") == {
        "alice@example.org",
        "carol@example.org",
        "staff@example.org",
    }
    _, staff = mailman.request("GET", f"lists/{STAFF}/config")
    assert staff["description"] == "Everyone on the staff"
    assert staff["default_nonmember_action"] == "hold"
    # not Mailman's 40 KB and public archive: no own size limit, the archive for members
    assert (staff["max_message_size"], staff["archive_policy"]) == (0, "private")
    # staff@ takes team@'s posts (To: team@lists.example.org) as addressed to itself
    assert staff["acceptable_aliases"] == ["team@lists.example.org"]
    _, team = mailman.request("GET", "lists/team.lists.example.org/config")
    assert team["default_nonmember_action"] == "reject"
    assert (team["max_message_size"], team["archive_policy"]) == (2048, "public")
    assert team["acceptable_aliases"] == []
    # Mailman's own map now routes the lists (what Postfix, the milter and policy read)
    assert "staff-request@example.org " in mailman.transport_map.read_text()
    # one event per change
    subscribed = {
        (e["list"], e["address"], e["role"]) for e in inventory.events("lists_subscribed")
    }
    assert ("staff@example.org", "Carol@Example.org", "member") in subscribed
    assert len(subscribed) == 8
    configured = {(e["list"], e["attribute"]) for e in inventory.events("lists_configured")}
    assert configured == {
        ("staff@example.org", "description"),  # hold is Mailman's default already
        ("staff@example.org", "max_message_size"),
        ("staff@example.org", "archive_policy"),
        ("team@lists.example.org", "default_nonmember_action"),
        ("team@lists.example.org", "max_message_size"),  # public is Mailman's default already
    }
    (aliased,) = inventory.events("lists_aliases_added")
    assert (aliased["list"], aliased["added"], aliased["aliases"]) == (
        "staff@example.org",
        ["team@lists.example.org"],
        ["team@lists.example.org"],
    )

    status, out, err = inventory.run(capsys)
    assert (status, changed(out)) == (0, 0), out + err
    assert mailman.emails(STAFF) == {"carol@example.org", "dave@relay.test"}


def test_someone_added_in_postorius_stays_and_someone_who_left_is_not_added_back(
    inventory: Inventory, mailman: Mailman, capsys: pytest.CaptureFixture[str]
) -> None:
    assert inventory.run(capsys)[0] == 0
    mailman.subscribe(STAFF, "frank@relay.test")  # joined by themselves
    mailman.subscribe(STAFF, "erin@example.org", role="owner")  # alice delegated
    status, body = mailman.request("DELETE", f"lists/{STAFF}/member/carol@example.org")
    assert status == 204, body  # carol left

    status, out, err = inventory.run(capsys)
    assert status == 0, err
    assert changed(out) == 0
    assert "1 not added again (left since the inventory added them)" in out
    assert mailman.emails(STAFF) == {"dave@relay.test", "frank@relay.test"}
    assert mailman.emails(STAFF, "owner") == {"alice@example.org", "erin@example.org"}
    (left,) = inventory.events("lists_left")
    assert (left["list"], left["address"], left["role"]) == (
        "staff@example.org",
        "Carol@Example.org",
        "member",
    )
    # a list Mailman lost (deleted here) is built again with everyone the inventory names
    status, body = mailman.request("DELETE", f"lists/{STAFF}")
    assert status == 204, body
    status, out, _ = inventory.run(capsys)
    assert status == 0
    assert mailman.emails(STAFF) == {"carol@example.org", "dave@relay.test"}


def test_dry_run_changes_nothing_and_says_what_it_would_do(
    inventory: Inventory, mailman: Mailman, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = inventory.run(capsys, "--dry-run")
    assert status == 0, err
    lines = out.splitlines()
    assert "would: create domain lists.example.org" in lines
    assert "would: create list staff@example.org" in lines
    assert "would: add member Carol@Example.org to staff@example.org" in lines
    assert (
        "would: set default_nonmember_action 'hold' -> 'reject', max_message_size '40' -> '2048' "
        "on team@lists.example.org" in lines
    )
    assert (
        "would: add team@lists.example.org to the acceptable_aliases of staff@example.org" in lines
    )
    assert lines[-1].endswith("; changed: 0, would change: 15")
    assert lines[-1].startswith("lists (dry run): 2 lists; would create 2 domains and 2 lists")
    _, lists = mailman.request("GET", "lists")
    assert lists["total_size"] == 0
    assert not inventory.state_file.exists()
    assert all(e["dry_run"] for e in inventory.events("lists_subscribed"))

    assert inventory.run(capsys)[0] == 0
    grown = [{**LISTS[0], "members": [*LISTS[0]["members"], "grace@example.org"]}, LISTS[1]]
    inventory.write(grown)
    state_before = inventory.state_file.read_text()
    status, out, _ = inventory.run(capsys, "--dry-run")
    assert out.splitlines() == [
        "would: add member grace@example.org to staff@example.org",
        "lists (dry run): 2 lists; would create 0 domains and 0 lists, add 0 owners, "
        "0 moderators and 1 members, change 0 lists' settings and 0 lists' acceptable_aliases; "
        "changed: 0, would change: 1",
    ]
    assert "grace@example.org" not in mailman.emails(STAFF)
    assert inventory.state_file.read_text() == state_before


def test_aliases_the_owners_set_stay_and_a_missing_parent_is_added_back(
    inventory: Inventory, mailman: Mailman, capsys: pytest.CaptureFixture[str]
) -> None:
    """Postorius sets the acceptable aliases as a whole: an owner who typed in their own (and
    dropped team@'s) keeps theirs, and team@'s comes back beside it; then nothing to do."""
    assert inventory.run(capsys)[0] == 0
    status, body = mailman.request(
        "PATCH", f"lists/{STAFF}/config", {"acceptable_aliases": "Staff@Lists.Example.org"}
    )
    assert status == 204, body

    status, out, err = inventory.run(capsys)
    assert (status, changed(out)) == (0, 1), out + err
    assert "changed 0 lists' settings and 1 lists' acceptable_aliases" in out
    _, config = mailman.request("GET", f"lists/{STAFF}/config")
    assert config["acceptable_aliases"] == ["staff@lists.example.org", "team@lists.example.org"]

    status, out, err = inventory.run(capsys)
    assert (status, changed(out)) == (0, 0), out + err
    _, config = mailman.request("GET", f"lists/{STAFF}/config")
    assert config["acceptable_aliases"] == ["staff@lists.example.org", "team@lists.example.org"]


def test_the_clients_acceptable_aliases_call_sets_the_whole_set(mailman: Mailman) -> None:
    """Mailman 3.3's REST facts set_acceptable_aliases relies on: the PATCH replaces the set,
    one field per alias, stored lower case; the empty set is one empty field (no field at
    all would change nothing)."""
    mailman.reset()
    mm = mailman
    assert mm.request("POST", "domains", {"mail_host": "example.org"})[0] == 201
    assert mm.request("POST", "lists", {"fqdn_listname": "staff@example.org"})[0] == 201
    client = MailmanRest(mm.rest_url, mm.admin_user, Secret(mm.admin_pass))

    def aliases() -> list[str]:
        return list(client.config(STAFF)["acceptable_aliases"])

    assert aliases() == []
    client.set_acceptable_aliases(STAFF, ["All@Example.org", "^.*@lists\\.example\\.org$"])
    assert aliases() == ["^.*@lists\\.example\\.org$", "all@example.org"]
    client.set_acceptable_aliases(STAFF, ["b@example.org", "B@example.org", "a@example.org"])
    assert aliases() == ["a@example.org", "b@example.org"]  # replaced; twins sent once
    client.set_acceptable_aliases(STAFF, [])
    assert aliases() == []


def test_mailman_unreachable_or_refusing_is_exit_1_with_a_clear_message(
    inventory: Inventory, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    inventory.write(LISTS, rest_url=down)
    status, out, err = inventory.run(capsys)
    assert status == 1
    assert out == ""
    assert err == (
        "mailglue lists: Mailman's REST API is unreachable (is Mailman running?): "
        f"GET {down}/3.1/domains: [Errno 111] Connection refused\n"
    )
    (failed,) = inventory.events("lists_failed")
    assert failed["status"] is None

    inventory.write(LISTS, user="intruder")
    status, out, err = inventory.run(capsys)
    assert status == 1
    assert err.startswith("mailglue lists: Mailman's REST API refused: GET ")
    assert "/3.1/domains: HTTP 401: " in err
    assert inventory.mailman.admin_pass not in err + out + inventory.log_file.read_text()


def test_a_config_error_is_exit_2_and_touches_nothing(
    inventory: Inventory, mailman: Mailman, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory.write([{**LISTS[0], "members": ["not an address"]}])
    status, _, err = inventory.run(capsys)
    assert status == 2
    assert "key 'lists[0].members': 'not an address' is not a mail address" in err
    _, lists = mailman.request("GET", "lists")
    assert lists["total_size"] == 0


def test_the_installed_command_line(inventory: Inventory) -> None:
    """What Ansible runs: the `mailglue` entry point, stdout only the summary."""
    mailglue = Path(sys.executable).with_name("mailglue")
    cmd = [str(mailglue), "lists", "--config", str(inventory.path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert (second.returncode, changed(second.stdout)) == (0, 0), second.stderr


# --- the harness Mailman is a working Mailman ------------------------------------------------


def recipients_of(message_id: str, sink: SmtpSink) -> set[str]:
    """Every envelope recipient smtp-sink took a copy of the message for."""
    found: set[str] = set()
    for dump in sink.messages():
        if message_id.encode() in dump:
            found |= {m.decode() for m in re.findall(rb"^X-Rcpt-Args: <([^>]*)>", dump, re.M)}
    return found


def test_a_post_over_lmtp_reaches_both_members_and_an_unknown_list_is_550(
    mailman: Mailman, smtp_sink: SmtpSink
) -> None:
    mailman.reset()
    assert mailman.request("POST", "domains", {"mail_host": "example.org"})[0] == 201
    assert mailman.request("POST", "lists", {"fqdn_listname": "post@example.org"})[0] == 201
    mailman.subscribe("post.example.org", "alice@example.org")
    mailman.subscribe("post.example.org", "bob@relay.test")
    mid = unique_message_id()
    post = build_message(
        sender="alice@example.org",
        recipient="post@example.org",
        subject="Minutes of Monday",
        message_id=mid,
    )
    with LmtpClient(f"inet:{mailman.host}:{mailman.lmtp_port}", lhlo_name="mx.test") as lmtp:
        result = lmtp.deliver("alice@example.org", ["post@example.org"], post)
        assert result.replies["post@example.org"].code == 250
        unknown = lmtp.deliver("alice@example.org", ["nosuchlist@example.org"], post)
        reply = unknown.replies["nosuchlist@example.org"]
        assert reply.code == 550, reply
    wait_until(
        lambda: recipients_of(mid, smtp_sink) == {"alice@example.org", "bob@relay.test"},
        timeout=60,
        what="the list's copies at the smtp-sink",
    )
    copy = next(m for m in smtp_sink.messages() if mid.encode() in m)
    assert b"X-Mail-Args: <post-bounces@example.org>" in copy
    assert b"List-Id: <post.example.org>" in copy


ALL_LIST: dict[str, Any] = {
    "name": "all@example.org",
    "owners": ["alice@example.org"],
    "members": ["carol@example.org", "staff@example.org"],
}


@dataclass(frozen=True)
class Copy:
    """One transaction smtp-sink took: the envelope and the message as it was sent."""

    sender: str
    recipients: frozenset[str]
    message: bytes  # CRLF, without smtp-sink's envelope lines (its Received: stays)

    @classmethod
    def parse(cls, dump: bytes) -> Copy:
        lines = dump.split(b"\n")
        envelope = 0
        while envelope < len(lines) and re.match(
            rb"X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args): ", lines[envelope]
        ):
            envelope += 1
        head = b"\n".join(lines[:envelope])
        sender = re.search(rb"^X-Mail-Args: <([^>]*)>", head, re.M)
        assert sender is not None, head
        recipients = re.findall(rb"^X-Rcpt-Args: <([^>]*)>", head, re.M)
        return cls(
            sender.group(1).decode(),
            frozenset(r.decode() for r in recipients),
            b"\r\n".join(line.rstrip(b"\r") for line in lines[envelope:]),
        )


def copies_from(sender: str, message_id: str, sink: SmtpSink) -> list[Copy]:
    """The complete copies of one message that `sender` (a list's bounces address) sent out:
    smtp-sink writes its file as the message arrives, and Mailman's footer ends the message."""
    footer = f"To unsubscribe send an email to {sender.replace('-bounces@', '-leave@')}"
    found = [Copy.parse(d) for d in sink.messages() if message_id.encode() in d]
    return [c for c in found if c.sender == sender and footer.encode() in c.message]


def post_through_all(mailman: Mailman, sink: SmtpSink, subject: str) -> str:
    """carol posts to all@ over LMTP; all@'s copy for staff@ is handed to staff@ over LMTP, as
    Postfix would (staff@ is Mailman's too). Returns the post's Message-ID."""
    mid = unique_message_id()
    post = build_message(
        sender="carol@example.org", recipient="all@example.org", subject=subject, message_id=mid
    )
    lmtp_at = f"inet:{mailman.host}:{mailman.lmtp_port}"
    with LmtpClient(lmtp_at, lhlo_name="mx.test") as lmtp:
        result = lmtp.deliver("carol@example.org", ["all@example.org"], post)
        assert result.replies["all@example.org"].code == 250
    wait_until(
        lambda: any(
            "staff@example.org" in c.recipients
            for c in copies_from("all-bounces@example.org", mid, sink)
        ),
        timeout=60,
        what="all@'s copy for staff@ at the smtp-sink",
    )
    (copy,) = [
        c
        for c in copies_from("all-bounces@example.org", mid, sink)
        if "staff@example.org" in c.recipients
    ]
    assert re.search(rb"^To: .*<all@example\.org>", copy.message, re.M | re.I), copy.message
    with LmtpClient(lmtp_at, lhlo_name="mx.test") as lmtp:
        result = lmtp.deliver(copy.sender, ["staff@example.org"], copy.message)
        assert result.replies["staff@example.org"].code == 250
    return mid


def held(mailman: Mailman, list_id: str) -> dict[str, str]:
    """Message-ID -> reason, for the posts the list holds for its moderators."""
    status, body = mailman.request("GET", f"lists/{list_id}/held")
    assert status == 200, body
    return {e["message_id"]: e["reason"] for e in (body or {}).get("entries", [])}


def test_a_post_to_a_parent_list_reaches_the_nested_lists_members(
    inventory: Inventory, mailman: Mailman, smtp_sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """The FAQ's nested lists: staff@ is a member of all@. A post to all@ reaches staff@ with
    `To: all@example.org`; without all@ among staff@'s acceptable aliases Mailman holds it
    ("Message has implicit destination"), with it staff@'s members get the post."""
    inventory.write([*LISTS, ALL_LIST])
    status, out, err = inventory.run(capsys)
    assert status == 0, out + err
    _, config = mailman.request("GET", f"lists/{STAFF}/config")
    assert config["acceptable_aliases"] == ["all@example.org", "team@lists.example.org"]

    # The bug, as the deployed stack showed it: staff@ without the aliases holds the post.
    status, body = mailman.request("DELETE", f"lists/{STAFF}/config/acceptable_aliases")
    assert status == 204, body
    unaliased = post_through_all(mailman, smtp_sink, "Held at staff")
    wait_until(
        lambda: unaliased in held(mailman, STAFF), timeout=60, what="staff@ holding the post"
    )
    assert held(mailman, STAFF)[unaliased] == "Message has implicit destination"

    # `mailglue lists` puts them back, and the next post goes through to staff@'s members.
    status, out, err = inventory.run(capsys)
    assert (status, changed(out)) == (0, 1), out + err
    mid = post_through_all(mailman, smtp_sink, "Through to staff")
    wait_until(
        lambda: (
            {
                r
                for c in copies_from("staff-bounces@example.org", mid, smtp_sink)
                for r in c.recipients
            }
            == {"carol@example.org", "dave@relay.test"}
        ),
        timeout=60,
        what="staff@'s copies for its members at the smtp-sink",
    )
    copy = copies_from("staff-bounces@example.org", mid, smtp_sink)[0]
    # staff@'s own copy (its description is the List-Id's phrase), not all@'s
    assert b"List-Id: Everyone on the staff <staff.example.org>" in copy.message
    assert mid not in held(mailman, STAFF)
