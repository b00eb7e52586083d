"""Per-recipient mailstore from LDAP (`delivery.route_attribute: mailHost`), real slapd + Cyrus.

Carol's entry names Cyrus's TCP LMTP service as her mailHost; everyone else goes to the
default unix socket. The milter logs each recipient's backend, and both copies must arrive.
With LDAP down, a route cannot be known: 451, not a guess. The policy service asks each
member's own store whether the mailbox exists, so carol passes RCPT while the default store
is gone.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import ldap
import pytest

from tests.harness.cyrus import Cyrus
from tests.harness.messages import build_message, unique_message_id
from tests.harness.milter import ScanMilter
from tests.harness.policy import PolicyService
from tests.harness.postfix import Postfix
from tests.harness.slapd import PEOPLE_DN, ROOT_DN, ROOT_PASSWORD, Slapd
from tests.harness.smtp import send

CAROL_DN = f"uid=carol,{PEOPLE_DN}"


@pytest.fixture
def carol_on_tcp(slapd: Slapd, cyrus: Cyrus) -> Iterator[str]:
    """Give carol a mailHost pointing at Cyrus's TCP LMTP service; take it away afterwards."""
    host = f"inet:127.0.0.1:{cyrus.lmtp_port}"
    conn = ldap.initialize(slapd.uri)
    conn.simple_bind_s(ROOT_DN, ROOT_PASSWORD)
    conn.modify_s(
        CAROL_DN,
        [
            (ldap.MOD_ADD, "objectClass", [b"inetLocalMailRecipient"]),
            (ldap.MOD_ADD, "mailHost", [host.encode()]),
        ],
    )
    try:
        yield host
    finally:
        conn.modify_s(
            CAROL_DN,
            [
                (ldap.MOD_DELETE, "mailHost", None),
                (ldap.MOD_DELETE, "objectClass", [b"inetLocalMailRecipient"]),
            ],
        )
        conn.unbind_s()


@pytest.fixture
def routed_milter(scan_milter: ScanMilter, slapd: Slapd) -> ScanMilter:
    scan_milter.ensure(
        {
            "delivery": {
                "route_attribute": "mailHost",
                "ldap": {"uri": slapd.uri, "base": PEOPLE_DN, "timeout": 2},
            }
        }
    )
    return scan_milter


def test_mail_host_routes_each_recipient_to_its_backend(
    routed_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, carol_on_tcp: str
) -> None:
    mid = unique_message_id()
    raw = build_message(message_id=mid, date=datetime.now(UTC))
    tx = send(postfix.address, "bob@relay.test", ["alice@example.org", "carol@example.org"], raw)
    assert tx.data is not None and tx.data.code == 250, tx
    event = routed_milter.transaction(mid)
    backends = {r["recipient"]: r["backend"] for r in event["recipients"]}
    assert backends == {
        "alice@example.org": f"unix:{cyrus.lmtp_socket}",
        "carol@example.org": carol_on_tcp,
    }
    assert [r["outcome"] for r in event["recipients"]] == ["delivered", "delivered"]
    for user in ("alice", "carol"):
        assert any(mid.encode() in m for m in cyrus.messages(user)), user


def test_ldap_down_means_no_route_and_451(
    routed_milter: ScanMilter, postfix: Postfix, slapd: Slapd, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    raw = build_message(message_id=mid, date=datetime.now(UTC))
    slapd.stop()
    try:
        tx = send(postfix.address, "bob@relay.test", ["alice@example.org"], raw)
    finally:
        slapd.start()
    assert tx.data is not None and tx.data.code == 451, tx
    assert tx.data.enhanced == "4.4.4"
    event = routed_milter.transaction(mid)
    assert "no route" in event["recipients"][0]["reply"]
    assert postfix.queue_is_empty()


def policy_action(service: PolicyService, recipient: str) -> str:
    """Postfix's question at RCPT time, as smtpd asks it."""
    request = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "client_address": "192.0.2.1",
        "sender": "someone@relay.test",
        "recipient": recipient,
        "instance": uuid.uuid4().hex,
    }
    data = "".join(f"{k}={v}\n" for k, v in request.items()).encode() + b"\n"
    with socket.create_connection(service.address, timeout=10) as conn:
        conn.sendall(data)
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = conn.recv(4096)
            assert chunk, answer
            answer += chunk
    return answer.decode().removeprefix("action=").strip()


def test_the_policy_asks_each_members_own_mailstore(
    tmp_path: Path, slapd: Slapd, cyrus: Cyrus, carol_on_tcp: str
) -> None:
    """The default store is a socket nobody listens on; carol's mailHost is the live Cyrus."""
    if "user.carol" not in cyrus.mailboxes():
        cyrus.create_mailbox("carol")
    service = PolicyService(
        tmp_path / "policy", slapd.uri, tmp_path / "no-store.sock", route_attribute="mailHost"
    )
    service.start()
    try:
        carol = policy_action(service, "carol@example.org")
        alice = policy_action(service, "alice@example.org")
    finally:
        service.stop()
    assert carol == "DUNNO", carol
    assert alice.startswith("DEFER_IF_PERMIT 4."), alice
