"""The pure side of sender authentication: the header, the DMARC action, the settings."""

from __future__ import annotations

import pytest

from milters.auth.check import nameserver
from milters.auth.results import (
    AuthAction,
    AuthResults,
    DkimResult,
    DmarcResult,
    SpfResult,
    authserv_id_of,
    decide,
    from_domain,
    header_value,
)
from milters.common.configkit import ConfigError
from milters.scan.config import AuthConfig, parse_config
from milters.scan.headers import is_owned, owned_deletions

SPF_FAIL = SpfResult("fail", "bank.test", "mailfrom")
SIGNED_ELSEWHERE = (DkimResult("pass", "mailer.test", "s1"),)


def results(dmarc: str, policy: str = "", dkim: tuple[DkimResult, ...] = ()) -> AuthResults:
    return AuthResults(SPF_FAIL, dkim, DmarcResult(dmarc, "bank.test", policy))


@pytest.mark.parametrize(
    ("values", "domain"),
    [
        (["Alice <alice@Example.ORG>"], "example.org"),
        (["alice@example.org."], "example.org"),
        ([], None),
        (["a@x.test", "b@y.test"], None),  # two From headers
        (["a@x.test, b@y.test"], None),  # two authors in one
        (["undisclosed"], None),
    ],
)
def test_from_domain_is_the_single_author_domain(values: list[str], domain: str | None) -> None:
    assert from_domain(values) == domain


def test_header_names_each_method_and_identity() -> None:
    value = header_value(
        "mx.example.org",
        AuthResults(
            SpfResult("pass", "good.test", "mailfrom"),
            (DkimResult("pass", "good.test", "sel"), DkimResult("fail", "x.test", "s", "bad")),
            DmarcResult("pass", "good.test", "reject"),
        ),
        "bounce@good.test",
    )
    assert value == (
        "mx.example.org;\n"
        "\tspf=pass smtp.mailfrom=bounce@good.test;\n"
        "\tdkim=pass header.d=good.test header.s=sel;\n"
        "\tdkim=fail (bad) header.d=x.test header.s=s;\n"
        "\tdmarc=pass (p=reject) header.from=good.test"
    )


def test_header_for_a_null_sender_names_the_helo_and_no_signature() -> None:
    value = header_value(
        "mx.example.org",
        AuthResults(SpfResult("none", "client.test", "helo"), (), DmarcResult("permerror", "", "")),
        "",
    )
    assert value == (
        "mx.example.org;\n\tspf=none smtp.helo=client.test;\n\tdkim=none;\n\tdmarc=permerror"
    )


@pytest.mark.parametrize(
    ("dmarc", "policy", "on_reject", "on_quarantine", "action"),
    [
        ("fail", "reject", "reject", "quarantine", AuthAction.REJECT),
        ("fail", "reject", "quarantine", "quarantine", AuthAction.QUARANTINE),
        ("fail", "reject", "ignore", "quarantine", AuthAction.ACCEPT),
        ("fail", "quarantine", "reject", "quarantine", AuthAction.QUARANTINE),
        ("fail", "quarantine", "reject", "ignore", AuthAction.ACCEPT),
        ("fail", "none", "reject", "quarantine", AuthAction.ACCEPT),
        ("pass", "reject", "reject", "quarantine", AuthAction.ACCEPT),
        ("temperror", "", "reject", "quarantine", AuthAction.ACCEPT),
        ("permerror", "", "reject", "quarantine", AuthAction.ACCEPT),
        ("none", "", "reject", "quarantine", AuthAction.ACCEPT),
    ],
)
def test_dmarc_action_table(
    dmarc: str, policy: str, on_reject: str, on_quarantine: str, action: AuthAction
) -> None:
    assert decide(results(dmarc, policy), on_reject, on_quarantine).action is action


def test_reject_reply_says_who_asked_and_what_failed() -> None:
    decision = decide(results("fail", "reject", SIGNED_ELSEWHERE), "reject", "quarantine")
    assert decision.reply is not None
    assert (decision.reply.code, decision.reply.enhanced) == (550, "5.7.1")
    assert decision.reply.text == (
        "Message rejected: bank.test publishes a DMARC reject policy and this message fails "
        "it (SPF fail for bank.test, DKIM signed by mailer.test only)"
    )


def test_quarantine_flags_for_the_junk_rule_and_explains() -> None:
    decision = decide(results("fail", "quarantine"), "reject", "quarantine")
    assert dict(decision.headers) == {
        "X-Spam-Flag": "YES",
        "X-Mailglue-Quarantine": "DMARC quarantine policy of bank.test failed "
        "(SPF fail for bank.test, no valid DKIM signature)",
    }


@pytest.mark.parametrize(
    ("value", "authserv_id"),
    [
        ("mx.example.org; spf=pass", "mx.example.org"),
        ("MX.Example.Org 1; dkim=pass", "mx.example.org"),
        ("  mx.example.org (ours);\r\n\tdmarc=pass", "mx.example.org"),
        ("", ""),
    ],
)
def test_authserv_id_is_the_first_token(value: str, authserv_id: str) -> None:
    assert authserv_id_of(value) == authserv_id


def test_only_results_in_our_name_are_owned() -> None:
    headers = [
        ("Authentication-Results", "mx.example.org; dmarc=pass"),
        ("Authentication-Results", "mx.elsewhere.test; dmarc=pass"),
        ("authentication-results", "MX.EXAMPLE.ORG; spf=pass"),
    ]
    assert is_owned(*headers[0], authserv_id="mx.example.org")
    assert not is_owned(*headers[1], authserv_id="mx.example.org")
    assert not is_owned(*headers[0])  # no authserv-id given: only X-Spam-* and friends
    assert owned_deletions(headers, "mx.example.org") == [
        ("authentication-results", 3),
        ("Authentication-Results", 1),
    ]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("192.0.2.1:5353", ("192.0.2.1", 5353)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ],
)
def test_nameserver_forms(text: str, address: tuple[str, int]) -> None:
    assert nameserver(text) == address


def test_auth_settings_are_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "milter.yaml",
            {
                "auth": {
                    "nameservers": ["ns.example.org", "192.0.2.1:99999"],
                    "trusted_networks": ["10.0.0.0/33"],
                    "dmarc_reject": "bounce",
                }
            },
        )
    text = "\n".join(caught.value.problems)
    assert "key 'auth.nameservers': 'ns.example.org' is not an IP address" in text
    assert "'192.0.2.1:99999'" in text
    assert "key 'auth.trusted_networks': '10.0.0.0/33' is not a network" in text
    assert "auth.dmarc_reject" in text


def test_default_trust_is_this_host_only() -> None:
    auth = AuthConfig()
    assert auth.trusts("127.0.0.1") and auth.trusts("::1") and auth.trusts("")
    assert not auth.trusts("192.0.2.7") and not auth.trusts("2001:db8::7")
    assert not AuthConfig(trusted_networks=()).trusts("127.0.0.1")
