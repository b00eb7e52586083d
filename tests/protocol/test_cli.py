"""`mailglue check-config` and `mailglue trace`: what an admin sees for good and broken files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.test_maillog import POST
from tests.unit.test_trace_members import post

MAILGLUE = str(Path(sys.executable).with_name("mailglue"))
EXAMPLES = Path(__file__).parents[2] / "postfix-conf"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MAILGLUE, *args], capture_output=True, text=True, timeout=60)


def test_example_milter_config_is_valid() -> None:
    result = run("check-config", str(EXAMPLES / "milter.yaml.example"), "--kind", "milter")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["kind"] == "milter"
    assert printed["spam"]["tag_above"] == "3.0" and printed["spam"]["reject_at"] == "5.0"


def test_broken_config_names_file_and_every_key(tmp_path: Path) -> None:
    path = tmp_path / "milter.yaml"
    path.write_text("spam:\n  tag_above: 6\n  on_failure: maybe\nvirus:\n  colour: red\n")
    result = run("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: key 'spam.tag_above': must be below spam.reject_at" in result.stderr
    assert f"{path}: key 'spam.on_failure': must be one of tempfail, accept" in result.stderr
    assert f"{path}: key 'virus.colour': unknown key" in result.stderr
    assert result.stdout == ""


def test_milter_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "milter.yaml"
    path.write_text("milter:\n  listen: tcp:25\n")
    result = run("milter", "--config", str(path))
    assert result.returncode == 2
    assert "key 'milter.listen'" in result.stderr


def test_learn_config_is_recognised_and_its_password_masked(tmp_path: Path) -> None:
    secret = tmp_path / "imap.secret"
    secret.write_text("hunter2-not-for-logs\n")
    path = tmp_path / "learn.yaml"
    path.write_text(f"imap:\n  password_file: {secret}\n  security: none\n  port: 143\n")
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["kind"] == "learn" and printed["imap"]["password"] == "********"
    assert "hunter2" not in result.stdout


def test_python_dash_m_runs_the_same_commands() -> None:
    """`python -m milters.cli` (how the tests start some commands) builds every subcommand:
    a helper defined below the `__main__` guard once broke it while `mailglue` worked."""
    for command in ("learn", "quota", "lists", "dns"):
        result = subprocess.run(
            [sys.executable, "-m", "milters.cli", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_trace_of_a_list_post_reads_postfixs_log_for_the_members(tmp_path: Path) -> None:
    events, maillog = tmp_path / "milter.log", tmp_path / "postfix.log"
    events.write_text(json.dumps(post()) + "\n")
    maillog.write_text(POST)
    result = run("trace", "<p1@journey.test>", str(events), "--maillog", str(maillog))
    assert result.returncode == 0, result.stderr
    assert "  member    8827D16270E 08:19:50 alice@example.org: sent via lmtp " in result.stdout
    assert "  member    8827D16270E 08:19:50 friend@example.net: DEFERRED " in result.stdout
    # a member's copy's queue id (from the member's headers or Postfix's log) finds the post
    by_copy = run("trace", "8827D16270E", str(events), "--maillog", str(maillog), "--json")
    assert by_copy.returncode == 0, by_copy.stderr
    (line,) = by_copy.stdout.splitlines()
    shown = json.loads(line)
    assert shown["transaction"]["queue_id"] == "1A4DD1626C4"
    assert [c["queue_id"] for c in shown["members"]] == ["6B2B81626E5", "8827D16270E"]


def test_trace_without_a_readable_postfix_log_still_prints_and_names_it(tmp_path: Path) -> None:
    events = tmp_path / "milter.log"
    events.write_text(json.dumps(post()) + "\n")
    missing = tmp_path / "postfix.log"
    result = run("trace", "1A4DD1626C4", str(events), "--maillog", str(missing))
    assert result.returncode == 0, result.stderr
    assert "  reply     250 2.0.0 Ok: queued as 1A4DD1626C4" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == (
        f"  members   member deliveries unknown: no Postfix log was readable ({missing}: not found)"
    )
