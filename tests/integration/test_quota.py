"""`mailglue quota` against real slapd and Cyrus: LDAP values and the default reach Cyrus's
quota roots, a wrong value is reported by name and changes nothing, missing mailboxes wait."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest

from milters.common.imap import ImapConfig
from milters.common.jsonlog import EventLog
from milters.common.ldapconfig import LdapConfig
from milters.common.secrets import Secret
from milters.quota.config import QuotaConfig
from milters.quota.sync import QuotaSync
from tests.harness import cyrus as cyrus_harness
from tests.harness.cyrus import Cyrus
from tests.harness.slapd import PEOPLE_DN, ROOT_DN, ROOT_PASSWORD, Slapd


def set_attribute(slapd: Slapd, uid: str, value: str | None) -> None:
    conn = ldap.initialize(slapd.uri)
    conn.simple_bind_s(ROOT_DN, ROOT_PASSWORD)
    try:
        dn = f"uid={uid},{PEOPLE_DN}"
        _, entry = conn.search_s(dn, ldap.SCOPE_BASE, attrlist=["objectClass"])[0]
        if b"mailglueMailbox" not in entry["objectClass"]:
            conn.modify_s(dn, [(ldap.MOD_ADD, "objectClass", [b"mailglueMailbox"])])
        values = None if value is None else [value.encode()]
        conn.modify_s(dn, [(ldap.MOD_REPLACE, "mailQuotaKiB", values)])
    finally:
        conn.unbind_s()


def limit(cyrus: Cyrus, mailbox: str) -> int | None:
    with cyrus.imap() as imap:
        status, data = imap.getquotaroot(mailbox)
        assert status == "OK", data
    for line in data[1]:
        if line and line.split()[0].strip(b'"') == mailbox.encode() and b"STORAGE" in line:
            return int(line.rsplit(b" ", 1)[1].rstrip(b")"))
    return None


@pytest.fixture
def quota_config(cyrus: Cyrus, slapd: Slapd, tmp_path: Path) -> Iterator[QuotaConfig]:
    with cyrus.imap() as imap:
        for uid in ("alice", "bob"):
            if f"user.{uid}" not in cyrus.mailboxes():
                imap.create(f"user.{uid}")
    host, port = cyrus.imap_address
    yield QuotaConfig(
        imap=ImapConfig(
            host=host,
            port=port,
            security="none",
            user=cyrus_harness.ADMIN_USER,
            password=Secret(cyrus_harness.ADMIN_PASSWORD),
        ),
        ldap=LdapConfig(
            uri=slapd.uri,
            base=PEOPLE_DN,
            bind_dn=ROOT_DN,
            bind_password=Secret(ROOT_PASSWORD),
        ),
        default_kib=4096,
        log_file=str(tmp_path / "quota.log"),
    )
    for uid in ("alice", "bob", "carol"):
        set_attribute(slapd, uid, None)
    with cyrus.imap() as imap:
        for uid in ("alice", "bob"):
            imap.setquota(f"user.{uid}", "()")


def events(config: QuotaConfig) -> list[dict[str, object]]:
    assert config.log_file is not None
    lines = Path(config.log_file).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_ldap_values_and_the_default_reach_cyrus(
    cyrus: Cyrus, slapd: Slapd, quota_config: QuotaConfig
) -> None:
    set_attribute(slapd, "alice", "2048")
    set_attribute(slapd, "bob", None)
    with cyrus.imap() as imap:
        imap.setquota("user.bob", "(STORAGE 7)")  # set by hand: put back to the default
    log = EventLog(quota_config.log_file)
    summary = QuotaSync(quota_config, log).run()
    log.close()
    assert limit(cyrus, "user.alice") == 2048
    assert limit(cyrus, "user.bob") == 4096
    set_events = {e["user"]: e for e in events(quota_config) if e["event"] == "quota_set"}
    assert set_events["bob"]["from_kib"] == 7 and set_events["bob"]["to_kib"] == 4096
    assert summary.changed >= 2 and summary.problems == 0

    log = EventLog(quota_config.log_file)
    again = QuotaSync(quota_config, log).run()  # nothing left to do
    log.close()
    assert again.changed == 0

    set_attribute(slapd, "alice", "0")  # 0: no limit, not even the default
    log = EventLog(quota_config.log_file)
    QuotaSync(quota_config, log).run()
    log.close()
    assert limit(cyrus, "user.alice") is None


def test_a_wrong_value_is_reported_by_name_and_changes_nothing(
    cyrus: Cyrus, slapd: Slapd, quota_config: QuotaConfig
) -> None:
    with pytest.raises(ldap.INVALID_SYNTAX):
        set_attribute(slapd, "alice", "lots")  # the schema takes integers only
    with cyrus.imap() as imap:
        imap.setquota("user.alice", "(STORAGE 3000)")
    set_attribute(slapd, "alice", "-5")  # an integer, but not a quota
    set_attribute(slapd, "bob", "512")
    log = EventLog(quota_config.log_file)
    summary = QuotaSync(quota_config, log).run()
    log.close()
    assert limit(cyrus, "user.alice") == 3000  # left as it was
    assert limit(cyrus, "user.bob") == 512  # the others are still done
    problems = [e for e in events(quota_config) if e["event"] == "quota_problem"]
    assert [e["user"] for e in problems] == ["alice"], problems
    assert "-5" in str(problems[0]["reason"])
    assert summary.problems == 1


def test_dry_run_changes_nothing_and_says_what_it_would_do(
    cyrus: Cyrus, slapd: Slapd, quota_config: QuotaConfig
) -> None:
    set_attribute(slapd, "alice", "1234")
    log = EventLog(quota_config.log_file)
    summary = QuotaSync(quota_config, log).run(dry_run=True)
    log.close()
    assert limit(cyrus, "user.alice") != 1234
    planned = [e for e in events(quota_config) if e["event"] == "quota_set"]
    assert any(e["user"] == "alice" and e["to_kib"] == 1234 and e["dry_run"] for e in planned)
    assert summary.changed >= 1
