"""The DANE integration test's Postfix and resolver are configured as the roles deploy them.

`tests/integration/test_dane.py` runs Postfix with the main.cf settings the postfix role
writes for mail to the outside, and a resolv.conf like the one the resolver role writes; this
keeps the two from drifting apart.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.integration.test_dane import DEPLOYED_MAIN_CF

ROLES = Path(__file__).resolve().parents[2] / "ansible/roles"


def defaults(role: str) -> dict[str, object]:
    data = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
    assert isinstance(data, dict)
    return data


def main_cf_template() -> dict[str, str]:
    lines = (ROLES / "postfix/templates/etc/postfix/main.cf.j2").read_text().splitlines()
    pairs = (line.split(" = ", 1) for line in lines if " = " in line and line[:1].isalpha())
    return {name: value for name, value in pairs}


def test_postfix_deploys_dane_and_dnssec_lookups_for_mail_to_the_outside() -> None:
    template, role = main_cf_template(), defaults("postfix")
    assert template["smtp_dns_support_level"] == "{{ postfix_smtp_dns_support_level }}"
    assert role["postfix_smtp_dns_support_level"] == DEPLOYED_MAIN_CF["smtp_dns_support_level"]
    assert template["smtp_tls_security_level"] == "{{ postfix_smtp_tls_security_level }}"
    level = str(role["postfix_smtp_tls_security_level"])
    # dane, except for a relay host we log in to, which always gets TLS (encrypt)
    assert level.endswith("else 'dane' }}") and "'encrypt' if" in level
    assert DEPLOYED_MAIN_CF["smtp_tls_security_level"] == "dane"
    assert template["smtp_tls_loglevel"] == DEPLOYED_MAIN_CF["smtp_tls_loglevel"]


def test_the_resolver_role_passes_the_ad_bit_on_as_the_test_does() -> None:
    resolv = (ROLES / "resolver/templates/etc/resolv.conf.j2").read_text().splitlines()
    assert "options trust-ad" in resolv
    unbound_harness = (Path(__file__).resolve().parents[1] / "harness/unbound.py").read_text()
    assert "options trust-ad" in unbound_harness
    assert defaults("resolver")["resolver_listen"] == ["127.0.0.1"]
