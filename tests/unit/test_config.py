"""Config validation: every problem named with the file and the key."""

from decimal import Decimal
from pathlib import Path

import pytest

from milters.common.configkit import ConfigError
from milters.common.sockets import InetAddress, UnixAddress
from milters.scan.config import load_config, parse_config, pymilter_socket


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config("milter.yaml", data)
    return info.value.problems


def test_empty_file_gives_safe_defaults() -> None:
    config = parse_config("milter.yaml", {})
    assert config.spam.tag_above == Decimal("3.0")
    assert config.spam.reject_at == Decimal("5.0")
    assert config.spam.on_failure == "tempfail"
    assert config.virus.on_failure == "tempfail"
    assert config.listen == "inet:127.0.0.1:8891"


def test_thresholds_are_exact_decimals() -> None:
    config = parse_config("m.yaml", {"spam": {"tag_above": 3.1, "reject_at": "4.999"}})
    assert config.spam.tag_above == Decimal("3.1")
    assert config.spam.reject_at == Decimal("4.999")


def test_tag_above_must_be_below_reject_at() -> None:
    assert problems({"spam": {"tag_above": 5.0, "reject_at": 5.0}}) == [
        "milter.yaml: key 'spam.tag_above': must be below spam.reject_at (5.0), got 5.0: "
        "nothing could ever be tagged"
    ]


def test_unknown_keys_are_refused_with_their_path() -> None:
    assert problems({"spam": {"tag_abov": 3}}) == ["milter.yaml: key 'spam.tag_abov': unknown key"]
    assert problems({"spamd": {}}) == ["milter.yaml: key 'spamd': unknown key"]


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "milter": {"listen": "tcp:1", "time_budget": "soon"},
            "spam": {"on_failure": "ignore", "backends": ["inet:localhost"]},
            "virus": {"max_size": -1, "timeout": True},
        }
    )
    assert len(found) == 6
    joined = "\n".join(found)
    for key in (
        "milter.listen",
        "milter.time_budget",
        "spam.on_failure",
        "spam.backends",
        "virus.max_size",
        "virus.timeout",
    ):
        assert f"'{key}'" in joined


def test_wrong_shapes() -> None:
    assert problems([1, 2]) == ["milter.yaml: top level: must be a mapping"]
    assert problems({"spam": "yes"}) == ["milter.yaml: spam: must be a mapping"]
    assert "must be one of tempfail, accept" in problems({"virus": {"on_failure": 1}})[0]


def test_backends_parse_both_kinds() -> None:
    config = parse_config("m.yaml", {"spam": {"backends": ["inet:10.0.0.1:783", "unix:/s"]}})
    assert config.spam.backends == (
        InetAddress("10.0.0.1", 783),
        UnixAddress("/s"),
    )


def test_keepalive_below_budget() -> None:
    assert (
        "'milter.keepalive_interval'"
        in problems({"milter": {"time_budget": 5, "keepalive_interval": 10}})[0]
    )


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "milter.yaml"
    bad.write_text("spam: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and "not valid YAML (line" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read" in str(info.value)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("inet:127.0.0.1:8891", "inet:8891@127.0.0.1"),
        ("unix:/run/m.sock", "unix:/run/m.sock"),
        ("inet:[::1]:8891", "inet6:8891@[::1]"),
    ],
)
def test_pymilter_socket(listen: str, expected: str) -> None:
    assert pymilter_socket(listen) == expected


def test_ldap_routing_needs_an_ldap_section() -> None:
    assert problems({"delivery": {"route_attribute": "mailHost"}}) == [
        "milter.yaml: key 'delivery.route_attribute': "
        "needs a delivery.ldap section to look it up in"
    ]
    config = parse_config(
        "m.yaml",
        {
            "delivery": {
                "route_attribute": "mailHost",
                "ldap": {"uri": "ldap://127.0.0.1:389/", "base": "ou=people,dc=example,dc=org"},
            }
        },
    )
    assert config.delivery.ldap is not None and config.delivery.route_attribute == "mailHost"
    assert (
        "'delivery.ldap.base': is required"
        in problems({"delivery": {"route_attribute": "mailHost", "ldap": {}}})[0]
    )
