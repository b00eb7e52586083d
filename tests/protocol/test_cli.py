"""`mailglue check-config`: what an admin sees for a good and a broken file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
