"""The LDAP replica's pieces agree with one another (issue 16).

The integration test renders the ldap role's slapd.conf template itself; these checks keep the
variables it passes the role's own, keep the single-host layout free of replication, and keep
the split layout's wiring (who runs a consumer, which URI the daemons read) in place.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import jinja2.meta
import yaml

from tests.harness.slapd_role import TEMPLATE, render_role_conf
from tests.integration.test_ldap_replica import common_settings

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
SPLIT = ANSIBLE / "inventories/split/group_vars"


def load(path: Path) -> dict[str, object]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def role_variables() -> set[str]:
    """What the ldap role may read: its defaults, the shared mail ones, what it registers."""
    own = load(ANSIBLE / "roles/ldap/defaults/main.yml")
    shared = load(ANSIBLE / "roles/mail/defaults/main.yml")
    return {*own, *shared, "ldap_rootpw", "ansible_managed"}


def test_the_template_reads_only_role_variables() -> None:
    env = jinja2.Environment()
    source = TEMPLATE.read_text()
    assert jinja2.meta.find_undeclared_variables(env.parse(source)) <= role_variables()


def test_the_integration_test_sets_role_variables_only() -> None:
    assert set(common_settings()) <= role_variables()


def single_host_settings(**overrides: object) -> dict[str, object]:
    defaults = load(ANSIBLE / "roles/ldap/defaults/main.yml")
    settings: dict[str, object] = {
        "mail_ldap_base_dn": "dc=example,dc=org",
        "mail_ldap_service_dn": "cn=mailglue,dc=example,dc=org",
        "mail_ldap_people_dn": "ou=people,dc=example,dc=org",
        "mail_member_directory": True,
        "ldap_root_dn": "cn=admin,dc=example,dc=org",
        "ldap_rootpw": {"hash": "{SSHA}x"},
        "ldap_database_dir": defaults["ldap_database_dir"],
        "ldap_mode": defaults["ldap_mode"],
        "ldap_syncprov_enabled": defaults["ldap_syncprov_enabled"],
    }
    return {**settings, **overrides}


def test_by_default_slapd_neither_serves_nor_follows_replicas() -> None:
    conf = render_role_conf(single_host_settings())
    for word in ("syncprov", "syncrepl", "TLSCertificate", "updateref", "replicator"):
        assert word not in conf
    assert "rootpw          {SSHA}x" in conf


def test_the_split_layout_runs_a_consumer_on_every_mx_and_mailstore_host() -> None:
    plays = yaml.safe_load((ANSIBLE / "site.yml").read_text())
    replicas = [p for p in plays if p["hosts"] == "mx:mailstore:!ldap"]
    assert len(replicas) == 1
    assert replicas[0]["roles"][0]["role"] == "ldap"
    assert replicas[0]["roles"][0]["vars"] == {"ldap_mode": "consumer"}
    # before any play whose daemons read LDAP
    names = [p["name"] for p in plays]
    assert names.index(replicas[0]["name"]) == names.index("Directory") + 1


def test_the_split_layouts_daemons_read_the_local_replica() -> None:
    everyone = load(SPLIT / "all/main.yml")
    assert everyone["mail_ldap_uri"] == "ldap://127.0.0.1/"
    assert str(everyone["ldap_provider_uri"]).startswith("ldap://{{ groups['ldap'][0] }}")
    assert everyone["ldap_replicator_password"] == "{{ vault_ldap_replicator_password }}"
    assert load(SPLIT / "ldap/main.yml")["ldap_syncprov_enabled"] is True
