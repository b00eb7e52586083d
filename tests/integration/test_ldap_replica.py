"""The local LDAP replica on mx and mailstore hosts (issue 16): two real slapds, one provider
and one consumer, both configured by the ldap role's own template, StartTLS between them with
the consumer verifying the provider's certificate against a test CA.

What the replica is for: the host's daemons keep authenticating and routing while the provider
is away, and whatever changed on the provider meanwhile reaches the replica when they meet
again, whichever side was away. The steps share one pair of daemons (starting them is most of
the cost) and run in order; each leaves both running.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import ldap
import pytest
import yaml

from tests.harness.logs import DaemonLogs
from tests.harness.process import LOOPBACK, run, wait_until
from tests.harness.slapd import BASE_DN, PEOPLE_DN, ROOT_DN, ldif
from tests.harness.slapd_role import RoleSlapd, hash_password
from tests.harness.tls_ca import TestCa

pytestmark = pytest.mark.timeout(120)

TLS_TASKS = Path(__file__).resolve().parents[2] / "ansible/roles/mail/tasks/tls.yml"

ROOT_PASSWORD = "provider-root-secret"
REPLICATOR_DN = f"cn=replicator,{BASE_DN}"
REPLICATOR_PASSWORD = "replicator-secret"
SERVICE_DN = f"cn=mailglue,{BASE_DN}"
SERVICE_PASSWORD = "service-secret"


def common_settings() -> dict[str, object]:
    """The role variables both sides share (the role's defaults, spelled for this base)."""
    return {
        "mail_ldap_base_dn": BASE_DN,
        "mail_ldap_service_dn": SERVICE_DN,
        "mail_ldap_people_dn": f"ou=people,{BASE_DN}",
        "mail_member_directory": True,
        "ldap_root_dn": ROOT_DN,
        "ldap_replicator_dn": REPLICATOR_DN,
    }


def directory_ldif() -> str:
    """The harness's people, plus the accounts the role creates: service and replicator."""
    accounts = [
        f"dn: {dn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: {dn.split(',')[0].split('=')[1]}\nuserPassword: {password}\n"
        for dn, password in ((SERVICE_DN, SERVICE_PASSWORD), (REPLICATOR_DN, REPLICATOR_PASSWORD))
    ]
    return "\n".join([ldif(), *accounts])


class Pair:
    """The provider and its consumer, as the role sets them up on the ldap and mx hosts."""

    def __init__(self, root: Path) -> None:
        ca = TestCa(root / "ca")
        cert, key = ca.issue("provider", [LOOPBACK])
        self.provider = provider(root / "provider", cert, key)
        # The consumer checks this address against the provider's certificate.
        provider_uri = self.provider.uri
        self.consumer = consumer(root / "consumer", provider_uri, ca.ca_file)
        # The same, trusting another CA than the one that signed the provider's certificate.
        self.untrusting = consumer(root / "untrusting", provider_uri, TestCa(root / "ca2").ca_file)
        self.provider.configure(directory_ldif())
        self.consumer.configure()
        self.untrusting.configure()


def provider(root: Path, cert: Path, key: Path) -> RoleSlapd:
    return RoleSlapd(
        root,
        f"slapd-{root.name}",
        {
            **common_settings(),
            "ldap_mode": "provider",
            "ldap_syncprov_enabled": True,
            "ldap_rootpw": {"hash": hash_password(ROOT_PASSWORD)},
            "ldap_tls_cert_file": str(cert),
            "ldap_tls_key_file": str(key),
        },
    )


def consumer(root: Path, provider_uri: str, ca_file: Path) -> RoleSlapd:
    return RoleSlapd(
        root,
        f"slapd-{root.name}",
        {
            **common_settings(),
            "ldap_mode": "consumer",
            "ldap_syncprov_enabled": False,
            "ldap_provider_uri": provider_uri,
            "ldap_provider_ca_file": str(ca_file),
            "ldap_replica_rid": "001",
            "ldap_replica_retry": "1 +",  # the role's default waits longer between tries
            "ldap_replicator_password": REPLICATOR_PASSWORD,
        },
    )


@pytest.fixture(scope="module")
def pair(stack_root: Path, daemon_logs: DaemonLogs) -> Iterator[Pair]:
    """In the session's directory, which slapd's user can reach and the session removes."""
    p = Pair(stack_root / "ldap-replica")
    for server in (p.provider, p.consumer, p.untrusting):
        daemon_logs.register(server.name, server.log_path)  # shown when a test fails
    try:
        p.provider.start()
        p.consumer.start()
        yield p
    finally:
        p.untrusting.stop()
        p.consumer.stop()
        p.provider.stop()


def connect(server: RoleSlapd, who: str = SERVICE_DN, password: str = SERVICE_PASSWORD) -> Any:
    conn = ldap.initialize(server.uri)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.simple_bind_s(who, password)
    return conn


def mails(server: RoleSlapd, uid: str) -> list[str]:
    """The mail values of a person, as the service account sees them ([] when absent)."""
    conn = connect(server)
    try:
        found = conn.search_s(PEOPLE_DN, ldap.SCOPE_ONELEVEL, f"(uid={uid})", ["mail"])
    finally:
        conn.unbind_s()
    return [v.decode() for _, attrs in found for v in attrs.get("mail", [])]


def add_person(server: RoleSlapd, uid: str, password: str) -> None:
    conn = connect(server, ROOT_DN, ROOT_PASSWORD)
    try:
        conn.add_s(
            f"uid={uid},{PEOPLE_DN}",
            [
                ("objectClass", [b"inetOrgPerson"]),
                ("uid", [uid.encode()]),
                ("cn", [uid.encode()]),
                ("sn", [uid.encode()]),
                ("mail", [f"{uid}@example.org".encode()]),
                ("userPassword", [password.encode()]),
            ],
        )
    finally:
        conn.unbind_s()


def delete_person(server: RoleSlapd, uid: str) -> None:
    conn = connect(server, ROOT_DN, ROOT_PASSWORD)
    try:
        conn.delete_s(f"uid={uid},{PEOPLE_DN}")
    finally:
        conn.unbind_s()


def replicated(server: RoleSlapd, uid: str, timeout: float = 20) -> None:
    wait_until(
        lambda: mails(server, uid) == [f"{uid}@example.org"],
        timeout=timeout,
        what=f"{uid} on {server.name}",
    )


def can_bind(server: RoleSlapd, uid: str, password: str) -> bool:
    try:
        connect(server, f"uid={uid},{PEOPLE_DN}", password).unbind_s()
    except ldap.INVALID_CREDENTIALS:
        return False
    return True


def first_refresh_done(server: RoleSlapd) -> bool:
    """Every person there, read by the service account (which itself arrives in the refresh)."""
    try:
        return all(mails(server, uid) for uid in ("alice", "bob", "carol"))
    except ldap.INVALID_CREDENTIALS:
        return False


def test_an_entry_added_on_the_provider_reaches_the_consumer(pair: Pair) -> None:
    wait_until(lambda: first_refresh_done(pair.consumer), what="the consumer's first refresh")
    assert mails(pair.consumer, "alice") == ["alice@example.org", "alice.liddell@example.org"]
    add_person(pair.provider, "erin", "erin-secret")
    replicated(pair.consumer, "erin")
    assert can_bind(pair.consumer, "erin", "erin-secret")


def test_the_consumer_is_read_only_and_refers_writes_to_the_provider(pair: Pair) -> None:
    conn = connect(pair.consumer, f"uid=bob,{PEOPLE_DN}", "bob-secret")
    try:
        with pytest.raises(ldap.REFERRAL) as refused:
            conn.modify_s(f"uid=bob,{PEOPLE_DN}", [(ldap.MOD_REPLACE, "cn", [b"Robert"])])
    finally:
        conn.unbind_s()
    referral = str(refused.value)
    assert pair.provider.uri.rstrip("/") in referral
    assert mails(pair.provider, "bob") == mails(pair.consumer, "bob")


def test_the_consumer_answers_while_the_provider_is_down(pair: Pair) -> None:
    pair.provider.stop()
    try:
        assert mails(pair.consumer, "carol") == ["carol@example.org"]
        assert can_bind(pair.consumer, "carol", "carol-secret")
        assert not can_bind(pair.consumer, "carol", "wrong")
    finally:
        pair.provider.start()


def test_a_change_made_while_the_consumer_was_down_arrives_when_it_returns(pair: Pair) -> None:
    pair.consumer.stop()
    try:
        add_person(pair.provider, "frank", "frank-secret")
        delete_person(pair.provider, "erin")  # a user who left must stop logging in
    finally:
        pair.consumer.start()
    replicated(pair.consumer, "frank")
    assert can_bind(pair.consumer, "frank", "frank-secret")
    wait_until(lambda: mails(pair.consumer, "erin") == [], what="erin gone from the consumer")
    assert not can_bind(pair.consumer, "erin", "erin-secret")


def test_a_change_after_the_provider_returns_reaches_the_waiting_consumer(pair: Pair) -> None:
    pair.provider.stop()  # the consumer's session ends; it retries on its own
    pair.provider.start()
    add_person(pair.provider, "grace", "grace-secret")
    replicated(pair.consumer, "grace")  # the consumer's retry found the provider again


def test_a_consumer_that_cannot_verify_the_provider_copies_nothing(pair: Pair) -> None:
    pair.untrusting.start()
    try:
        wait_until(
            lambda: "ldap_start_tls failed" in pair.untrusting.log_path.read_text(),
            what="the untrusting consumer's TLS failure",
        )
        conn = ldap.initialize(pair.untrusting.uri)
        try:
            found = conn.search_s(BASE_DN, ldap.SCOPE_BASE)
        except ldap.NO_SUCH_OBJECT:
            found = []
        assert found == []
    finally:
        pair.untrusting.stop()


def test_the_replicator_reads_nothing_without_tls(pair: Pair) -> None:
    conn = connect(pair.provider, REPLICATOR_DN, REPLICATOR_PASSWORD)
    try:
        with pytest.raises(ldap.NO_SUCH_OBJECT):  # the ACL shows it nothing, not even the base
            conn.search_s(PEOPLE_DN, ldap.SCOPE_ONELEVEL, "(uid=alice)")
    finally:
        conn.unbind_s()


def role_self_signed_certificate(root: Path) -> tuple[Path, Path]:
    """The certificate the mail role generates when the inventory gives none, made with the
    role's own openssl command line (tasks/tls.yml): the split layout's default provider
    certificate, which a consumer then trusts as it is."""
    tasks = yaml.safe_load(TLS_TASKS.read_text())
    (generate,) = [t for t in tasks if t["name"].startswith("Generate a self-signed")]
    cert, key = root / "self-signed.crt", root / "self-signed.key"
    settings = {
        "mail_hostname": "mail.example.org",
        "mail_tls_cert_file": str(cert),
        "mail_tls_key_file": str(key),
    }
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    argv = [
        env.from_string(a).render(settings) for a in generate["ansible.builtin.command"]["argv"]
    ]
    root.mkdir(parents=True, exist_ok=True)
    run(argv)
    key.chmod(0o644)  # the role gives it to group ssl-cert, which openldap joins; a test key
    return cert, key


def test_a_consumer_trusts_the_self_signed_certificate_the_mail_role_makes(
    stack_root: Path, daemon_logs: DaemonLogs
) -> None:
    root = stack_root / "ldap-replica-self-signed"
    cert, key = role_self_signed_certificate(root / "tls")
    own = provider(root / "provider", cert, key)
    # ldap_provider_ca_content left empty: the provider's certificate file, copied.
    follower = consumer(root / "consumer", own.uri, cert)
    own.configure(directory_ldif())
    follower.configure()
    for server in (own, follower):
        daemon_logs.register(server.name, server.log_path)
    try:
        own.start()
        follower.start()
        wait_until(lambda: first_refresh_done(follower), what="a refresh over the self-signed TLS")
    finally:
        follower.stop()
        own.stop()
