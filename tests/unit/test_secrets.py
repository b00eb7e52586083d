"""One reading rule for every password (LDAP bind, Cyrus admin), and a mask when printed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from milters.common.configkit import ConfigError
from milters.learn.config import parse_learn_config
from milters.policy.config import parse_policy_config

LOCAL_DOMAINS = {"local_domains": ["example.org"]}


def learn_password(tmp_path: Path, text: str) -> str:
    secret = tmp_path / "imap.secret"
    secret.write_text(text, encoding="utf-8")
    config = parse_learn_config("l.yaml", {"imap": {"password_file": str(secret)}})
    return config.imap.password.reveal()


def ldap_password(tmp_path: Path, text: str) -> str:
    secret = tmp_path / "ldap.secret"
    secret.write_text(text, encoding="utf-8")
    ldap = {"base": "dc=example,dc=org", "bind_dn": "cn=x", "bind_password_file": str(secret)}
    data = {"policy": LOCAL_DOMAINS, "ldap": ldap}
    config = parse_policy_config("p.yaml", data)
    assert config.ldap.bind_password is not None
    return config.ldap.bind_password.reveal()


@pytest.mark.parametrize("reader", [learn_password, ldap_password])
def test_only_the_line_ending_is_dropped(
    reader: Callable[[Path, str], str], tmp_path: Path
) -> None:
    assert reader(tmp_path, " two spaces \n") == " two spaces "
    assert reader(tmp_path, "crlf\r\n") == "crlf"


def test_an_empty_password_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'imap\.password_file'.*is empty"):
        learn_password(tmp_path, "\n")


def test_inline_and_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not both"):
        parse_learn_config("l.yaml", {"imap": {"password": "y", "password_file": str(secret)}})


def test_check_config_output_shows_a_mask(tmp_path: Path) -> None:
    config = parse_learn_config("l.yaml", {"imap": {"password": "hunter2", "security": "none"}})
    shown = json.dumps(dataclasses.asdict(config), default=str)
    assert "hunter2" not in shown and "********" in shown
