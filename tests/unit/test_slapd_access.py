"""Who may read what in the ldap role's slapd.conf: members see colleagues' names and
addresses only while `mail_member_directory` is on (the deployment test checks the real slapd)."""

from __future__ import annotations

from tests.harness.slapd_role import render_role_conf
from tests.unit.test_ldap_replica_settings import single_host_settings

PEOPLE_RULE = 'access to dn.subtree="ou=people,dc=example,dc=org" attrs='


def test_members_read_only_the_directory_attributes_of_people() -> None:
    conf = render_role_conf(single_host_settings())
    start = conf.index(PEOPLE_RULE)
    rule = conf[start : conf.index("by * none", start)]
    attributes = rule.split("attrs=", 1)[1].split()[0].split(",")
    assert set(attributes) == {
        "entry",
        "objectClass",
        "uid",
        "cn",
        "sn",
        "givenName",
        "displayName",
        "mail",
    }
    members = 'by dn.children="ou=people,dc=example,dc=org" read'
    assert members in rule  # bound as themselves: not the replicator, nor anyone else
    assert conf.count(members) == 1  # nowhere else: not quotas, stores or passwords
    assert start < conf.index("access to *")  # slapd takes the first rule that matches


def test_without_the_directory_members_read_only_themselves() -> None:
    conf = render_role_conf(single_host_settings(mail_member_directory=False))
    assert PEOPLE_RULE not in conf
    assert not any(clause.endswith(" read") for clause in member_clauses(conf))
    assert "by self read" in conf


def test_members_may_search_the_people_to_find_themselves() -> None:
    """Webmail looks up a new user's own name and address (new_user_identity) as the user."""
    for directory in (True, False):
        conf = render_role_conf(single_host_settings(mail_member_directory=directory))
        base = 'access to dn.base="ou=people,dc=example,dc=org" attrs=entry'
        assert base in conf and conf.index(base) < conf.index("access to *")
        assert 'by dn.children="ou=people,dc=example,dc=org" search' in member_clauses(conf)


def member_clauses(conf: str) -> list[str]:
    """What the rules grant anyone bound as a member (an entry below the people)."""
    return [
        line.strip()
        for line in conf.splitlines()
        if line.strip().startswith('by dn.children="ou=people,dc=example,dc=org"')
    ]
