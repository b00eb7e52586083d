"""Policy config: defaults, every refusal names its key, the password never prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from milters.cli import main
from milters.common.configkit import ConfigError
from milters.common.sockets import InetAddress, UnixAddress
from milters.policy.config import Secret, load_policy_config, parse_policy_config

MINIMAL = {
    "policy": {"local_domains": ["Example.org"]},
    "ldap": {"base": "ou=people,dc=example,dc=org"},
}


def parse(data: object) -> object:
    return parse_policy_config("policy.yaml", data)


def problems(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return str(info.value)


def test_minimal_defaults() -> None:
    config = parse_policy_config("policy.yaml", MINIMAL)
    assert config.listen == "inet:127.0.0.1:10040"
    assert config.local_domains == ("example.org",)
    assert config.ldap.uri == "ldap://127.0.0.1/"
    assert config.ldap.address_attributes == ("mail",)
    assert config.ldap.bind_password is None
    assert config.mailbox.lmtp == UnixAddress("/run/cyrus/socket/lmtp")
    assert (config.mailbox.positive_ttl, config.mailbox.negative_ttl) == (600.0, 60.0)
    assert config.rate_limits.sasl_user.messages == 200
    assert config.rate_limits.client_address.messages == 0
    assert config.source == "policy.yaml"


def test_full_config_round_trip(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"""
policy:
  listen: unix:/run/mailglue/policy.sock
  local_domains: [example.org, example.net]
  recipient_delimiter: "+"
  workers: 4
  decision_timeout: 5
ldap:
  uri: ldap://ldap.example.org/
  base: dc=example,dc=org
  bind_dn: cn=policy,dc=example,dc=org
  bind_password_file: {pw}
  address_attributes: [mail, mailAlternateAddress]
  login_attributes: [uid, mail]
  starttls: true
  timeout: 2
mailbox:
  lmtp: inet:127.0.0.1:2003
  probe_recipient: "{{uid}}@{{domain}}"
  positive_ttl: 3600
  negative_ttl: 0
  route_attribute: mailHost
rate_limits:
  window: 600
  sasl_user: {{messages: 50, recipients: 300}}
  client_address: {{messages: 100}}
log:
  file: {tmp_path / "policy.log"}
"""
    )
    config = load_policy_config(path)
    assert config.ldap.bind_password == Secret("s3cret")
    assert config.ldap.address_attributes == ("mail", "mailAlternateAddress")
    assert config.mailbox.lmtp == InetAddress("127.0.0.1", 2003)
    assert config.mailbox.route_attribute == "mailHost"
    assert config.rate_limits.client_address.recipients == 0
    assert config.recipient_delimiter == "+"


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"policy": {"local_domains": ["example.org"], "listn": "x"}}, "policy.listn"),
        ({"policy": {"local_domains": ["example.org"], "listen": "tcp:1"}}, "policy.listen"),
        ({"policy": {"local_domains": []}}, "policy.local_domains"),
        ({"policy": {"local_domains": ["a@b"]}}, "policy.local_domains"),
        ({"policy": {"local_domains": ["x.org"], "workers": 0}}, "policy.workers"),
        ({"ldap": {}}, "ldap.base"),
        ({"ldap": {"base": "dc=x", "uri": "http://x"}}, "ldap.uri"),
        ({"ldap": {"base": "dc=x", "bind_password": "p"}}, "ldap.bind_dn"),
        (
            {
                "ldap": {
                    "base": "dc=x",
                    "bind_dn": "cn=a",
                    "bind_password": "p",
                    "bind_password_file": "/nonexistent",
                }
            },
            "ldap.bind_password_file",
        ),
        (
            {"ldap": {"base": "dc=x", "bind_dn": "cn=a", "bind_password_file": "/nonexistent"}},
            "ldap.bind_password_file",
        ),
        ({"ldap": {"base": "dc=x", "user_filter": "objectClass=x"}}, "ldap.user_filter"),
        ({"ldap": {"base": "dc=x", "address_attributes": []}}, "ldap.address_attributes"),
        ({"ldap": {"base": "dc=x", "starttls": "yes"}}, "ldap.starttls"),
        ({"ldap": {"base": "dc=x", "timeout": -1}}, "ldap.timeout"),
        ({"mailbox": {"lmtp": "127.0.0.1:24"}}, "mailbox.lmtp"),
        ({"mailbox": {"probe_recipient": "{user}"}}, "mailbox.probe_recipient"),
        ({"mailbox": {"route_attribute": ""}}, "mailbox.route_attribute"),
        ({"mailbox": {"negative_ttl": -5}}, "mailbox.negative_ttl"),
        ({"rate_limits": {"window": 0}}, "rate_limits.window"),
        ({"rate_limits": {"sasl_user": {"mesages": 1}}}, "rate_limits.sasl_user.mesages"),
        ({"rate_limits": {"client_address": {"messages": -1}}}, "rate_limits.client_address"),
        ({"log": {"fiel": "x"}}, "log.fiel"),
        ({"extra": 1}, "'extra'"),
    ],
)
def test_refusals_name_the_key(patch: dict[str, object], key: str) -> None:
    assert key in problems({**MINIMAL, **patch})


def test_all_problems_reported_at_once() -> None:
    text = problems({"policy": {"listen": "x"}, "ldap": {"uri": "x"}})
    assert "policy.listen" in text and "policy.local_domains" in text
    assert "ldap.uri" in text and "ldap.base" in text


def test_password_is_masked_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "policy: {local_domains: [example.org]}\n"
        "ldap: {base: dc=x, bind_dn: cn=a, bind_password: hunter2-very-secret}\n"
    )
    config = load_policy_config(path)
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert config.ldap.bind_password is not None
    assert config.ldap.bind_password.reveal() == "hunter2-very-secret"
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    printed = json.loads(out)
    assert printed["kind"] == "policy"
    assert printed["ldap"]["bind_password"] == "********"


def test_check_config_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("policy: {local_domains: [example.org], bogus: 1}\nldap: {base: dc=x}\n")
    assert main(["check-config", str(path)]) == 2
    assert "policy.bogus" in capsys.readouterr().err


def test_shipped_example_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "postfix-conf" / "policy.yaml.example"
    secret = tmp_path / "ldap.secret"
    secret.write_text("x\n")
    path = tmp_path / "policy.yaml"
    path.write_text(example.read_text().replace("/etc/mailglue/ldap.secret", str(secret)))
    config = load_policy_config(path)
    assert config.ldap.address_attributes == ("mail", "mailAlternateAddress")


def test_aliases_and_sender_rules_are_read() -> None:
    config = parse_policy_config(
        "p.yaml",
        {
            "policy": {"local_domains": ["example.org"]},
            "ldap": {"base": "ou=people,dc=example,dc=org"},
            "aliases": {"base": "ou=aliases,dc=example,dc=org", "max_depth": 3},
            "senders": {"trusted_networks": ["10.1.0.0/16"], "local_requires_login": False},
        },
    )
    assert config.aliases is not None and config.aliases.max_depth == 3
    assert config.aliases.member_attribute == "rfc822MailMember"
    assert not config.senders.local_requires_login
    assert [str(n) for n in config.senders.trusted_networks] == ["10.1.0.0/16"]


def test_alias_and_sender_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy_config(
            "p.yaml",
            {
                "policy": {"local_domains": ["example.org"]},
                "ldap": {"base": "ou=people,dc=example,dc=org"},
                "aliases": {"filter": "objectClass=x"},
                "senders": {"trusted_networks": ["not-a-net"]},
            },
        )
    text = str(caught.value)
    assert "key 'aliases.base'" in text
    assert "key 'aliases.filter'" in text
    assert "key 'senders.trusted_networks'" in text
