"""`lists.yaml`: names, addresses and settings are checked before Mailman sees them; each
problem names the file, the key (`lists[1].members`) and what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from milters.common.configkit import ConfigError
from milters.common.secrets import Secret
from milters.lists.config import (
    address_problem,
    list_name_problem,
    load_lists_config,
    parse_lists_config,
)
from milters.lists.plan import DomainSpec, ListSpec
from milters.ops.checkconfig import kind_of

SOURCE = "lists.yaml"


def config(lists: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    mailman = top.pop("mailman", {"password": "rest-secret"})
    return {"mailman": mailman, "lists": lists, **top}


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_lists_config(SOURCE, data)
    return info.value.problems


STAFF = {"name": "staff@example.org", "owners": ["alice@example.org"]}


def test_a_full_file_reads_into_specs(tmp_path: Path) -> None:
    secret = tmp_path / "rest.secret"
    secret.write_text(" pass word \n")
    path = tmp_path / "lists.yaml"
    path.write_text(
        f"""
mailman:
  rest_url: http://127.0.0.1:8001/
  user: restadmin
  password_file: {secret}
domains:
  - mail_host: lists.example.org
    web_host: www.example.org
lists:
  - name: staff@example.org
    description: Everyone on the staff
    owners: [alice@example.org]
    moderators: [Bob@Example.org]
    members: [carol@example.org, dave@relay.test]
    nonmember_action: reject
    members_only: true
state_file: {tmp_path / "state.json"}
log:
  file: /var/log/mailglue/lists.log
"""
    )
    c = load_lists_config(path)
    assert c.mailman.rest_url == "http://127.0.0.1:8001"  # no trailing slash
    assert c.mailman.password == Secret(" pass word ")  # only the line ending goes
    assert c.domains == (DomainSpec("lists.example.org", "www.example.org"),)
    assert c.lists == (
        ListSpec(
            name="staff@example.org",
            owners=("alice@example.org",),
            moderators=("Bob@Example.org",),  # kept as written; compared without case
            members=("carol@example.org", "dave@relay.test"),
            description="Everyone on the staff",
            nonmember_action="reject",
            members_only=True,
        ),
    )
    assert c.state_file == str(tmp_path / "state.json")
    assert c.log_file == "/var/log/mailglue/lists.log"
    assert c.source == str(path)
    assert kind_of(str(path)) == "lists"


def test_defaults_hold_nonmembers_and_leave_the_description_alone() -> None:
    c = parse_lists_config(SOURCE, config([STAFF]))
    (spec,) = c.lists
    assert spec.nonmember_action == "hold"
    assert spec.members_only is False
    assert spec.description is None
    assert spec.settings() == {
        "default_nonmember_action": "hold",
        "max_message_size": "0",  # no limit of the list's own: the server's applies
        "archive_policy": "private",  # members read the archive, not the whole web
    }
    assert c.mailman.rest_url == "http://127.0.0.1:8001"
    assert c.mailman.user == "restadmin"
    assert c.domains == ()


@pytest.mark.parametrize("empty", ["", None])
def test_an_empty_description_is_none_given(empty: str | None) -> None:
    """What the Ansible template renders for a list without one: left to the owners."""
    (spec,) = parse_lists_config(SOURCE, config([{**STAFF, "description": empty}])).lists
    assert spec.description is None


def test_the_password_is_required_and_never_printed() -> None:
    assert problems(config([STAFF], mailman={})) == [
        "lists.yaml: key 'mailman.password_file': is required (the REST API's admin_pass)"
    ]
    c = parse_lists_config(SOURCE, config([STAFF]))
    assert "rest-secret" not in repr(c)


def test_an_unreadable_password_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    (problem,) = problems(config([STAFF], mailman={"password_file": str(missing)}))
    assert problem.startswith("lists.yaml: key 'mailman.password_file': cannot read")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1:8001", "must be an http:// or https:// URL"),
        ("127.0.0.1:8001", "must be an http:// or https:// URL"),
        ("http://restadmin:pw@127.0.0.1:8001", "must not hold a user or password"),
        ("http://127.0.0.1:8001/3.1", "without the API version"),
    ],
)
def test_the_rest_url_is_a_bare_base_url(url: str, why: str) -> None:
    (problem,) = problems(config([STAFF], mailman={"rest_url": url, "password": "x"}))
    assert problem.startswith("lists.yaml: key 'mailman.rest_url': ")
    assert why in problem
    assert "pw" not in problem.replace(url, "")  # only the URL as given, nothing added


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("staff", "posting address"),
        ("Staff@example.org", "a-z, 0-9"),
        ("st aff@example.org", "a-z, 0-9"),
        ("staff-request@example.org", "ends like an address Mailman makes"),
        ("staff-owner@example.org", "ends like an address Mailman makes"),
        ("staff@Example.org", "must be lower case"),
        ("staff@localhost", "not a host name"),
    ],
)
def test_list_names_mailman_would_refuse(name: str, why: str) -> None:
    problem = list_name_problem(name)
    assert problem is not None and why in problem
    (reported,) = problems(config([{**STAFF, "name": name}]))
    assert reported.startswith(f"lists.yaml: key 'lists[0].name': {name!r} ")


@pytest.mark.parametrize(
    "good", ["alice@example.org", "Alice.Liddell+lists@Example.ORG", "o'brien@relay.test"]
)
def test_plain_addresses_pass(good: str) -> None:
    assert address_problem(good) is None


@pytest.mark.parametrize(
    "bad",
    [
        "alice",
        "@example.org",
        "alice@",
        "alice@localhost",
        "Alice <alice@example.org>",
        "alice@example.org,bob@example.org",
        "a..b@example.org",
        ".alice@example.org",
        "alice@exa_mple.org",
    ],
)
def test_addresses_that_are_not_plain_mailboxes(bad: str) -> None:
    assert address_problem(bad) is not None
    (problem,) = problems(config([{**STAFF, "members": [bad]}]))
    assert problem.startswith(f"lists.yaml: key 'lists[0].members': {bad!r} ")


def test_every_problem_of_every_list_at_once() -> None:
    found = problems(
        config(
            [
                STAFF,
                {
                    "name": "team@example.org",
                    "owners": ["alice@example.org", "ALICE@example.org"],
                    "moderators": "not-an-address",
                    "members": [1, 2],
                    "nonmember_action": "bounce",
                    "max_message_kb": -1,
                    "archive_policy": "secret",
                    "colour": "blue",
                },
                {"owners": ["alice@example.org"]},
                {**STAFF, "description": "two\nlines"},
            ],
            domains=[{"mail_host": "example.org"}, {"mail_host": "example.org", "web": "x"}],
        )
    )
    assert found == [
        "lists.yaml: key 'domains[1].web': unknown key",
        "lists.yaml: key 'lists[1].owners': 'ALICE@example.org' is listed twice",
        "lists.yaml: key 'lists[1].moderators': 'not-an-address' is not a mail address "
        "(local@domain)",
        "lists.yaml: key 'lists[1].members': must be a list of non-empty strings, got [1, 2]",
        "lists.yaml: key 'lists[1].nonmember_action': must be one of hold, reject, discard, "
        "accept; got 'bounce'",
        "lists.yaml: key 'lists[1].max_message_kb': must be at least 0, got -1",
        "lists.yaml: key 'lists[1].archive_policy': must be one of private, public, never; "
        "got 'secret'",
        "lists.yaml: key 'lists[1].colour': unknown key",
        "lists.yaml: key 'lists[2].name': is required",
        "lists.yaml: key 'lists[3].description': must be one line (Mailman refuses newlines)",
        "lists.yaml: key 'domains': listed twice: example.org",
        "lists.yaml: key 'lists[3].name': 'staff@example.org' is also lists[0]",
    ]


def test_a_list_needs_an_owner_and_members_only_cannot_accept_nonmembers() -> None:
    found = problems(
        config([{"name": "staff@example.org", "members_only": True, "nonmember_action": "accept"}])
    )
    assert found == [
        "lists.yaml: key 'lists[0].nonmember_action': accept contradicts members_only: true "
        "(hold, reject or discard)",
        "lists.yaml: key 'lists[0].owners': a list needs at least one owner (who can then "
        "delegate)",
    ]


def test_a_list_is_no_member_of_itself_but_may_be_of_another() -> None:
    (problem,) = problems(config([{**STAFF, "members": ["Staff@example.org"]}]))
    assert problem == (
        "lists.yaml: key 'lists[0].members': 'staff@example.org' is this list itself "
        "(Mailman refuses it)"
    )
    every = {"name": "all@example.org", "owners": ["alice@example.org"]}
    parse_lists_config(SOURCE, config([STAFF, {**every, "members": ["staff@example.org"]}]))


def test_domains_are_host_names() -> None:
    found = problems(config([STAFF], domains=[{"web_host": "Lists.Example.org"}, "x"]))
    assert found == [
        "lists.yaml: domains[1]: must be a mapping",
        "lists.yaml: key 'domains[0].mail_host': is required",
        "lists.yaml: key 'domains[0].web_host': 'Lists.Example.org' must be lower case",
        "lists.yaml: key 'domains[1].mail_host': is required",
    ]
    (problem,) = problems(config([STAFF], domains=[{"mail_host": "lists"}]))
    assert problem == (
        "lists.yaml: key 'domains[0].mail_host': 'lists' is not a host name like example.org"
    )
