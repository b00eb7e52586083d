"""The milter's routing with Mailman's map: a list post goes to Mailman's LMTP, other mail
keeps its route (no LDAP here: the LDAP half is tested against a real slapd)."""

from __future__ import annotations

from pathlib import Path

from lmtp_bridge import InetAddress, UnixAddress
from milters.scan.config import DeliveryConfig
from milters.scan.delivery import Deliverer

CYRUS = "unix:/run/cyrus/socket/lmtp"


def deliverer(tmp_path: Path) -> Deliverer:
    lists_map = tmp_path / "postfix_lmtp"
    lists_map.write_text("staff@example.org lmtp:[127.0.0.1]:8024\n")
    config = DeliveryConfig(
        mode="lmtp",
        local_domains=("example.org",),
        lmtp_backend=CYRUS,
        recipient_delimiter="+",
        lists_map=str(lists_map),
    )
    return Deliverer(config, "mx.example.org")


def test_a_list_post_is_routed_to_mailman_and_marked_as_a_list(tmp_path: Path) -> None:
    d = deliverer(tmp_path)
    assert d.is_local("staff@example.org") and d.is_list("Staff+x@example.org")
    assert d.router.route("staff@example.org") == InetAddress("127.0.0.1", 8024)


def test_other_local_mail_keeps_the_mailbox_route(tmp_path: Path) -> None:
    d = deliverer(tmp_path)
    assert d.is_local("alice@example.org") and not d.is_list("alice@example.org")
    assert d.router.route("alice@example.org") == UnixAddress("/run/cyrus/socket/lmtp")
    assert not d.is_local("staff@example.net")
