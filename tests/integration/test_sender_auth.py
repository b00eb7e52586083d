"""SPF, DKIM and DMARC of incoming mail, against a real name server (NSD) with test domains.

The milter asks NSD for every record (SPF, DKIM key, DMARC policy) of the domains under
`sender.test`; Postfix, spamd, clamd and Cyrus are the session's real daemons. Loopback
clients are normally trusted (not checked), so these tests turn that off.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message

import pytest

from tests.harness.cyrus import Cyrus
from tests.harness.logs import DaemonLogs
from tests.harness.messages import build_message, unique_message_id
from tests.harness.milter import ScanMilter, wait_for
from tests.harness.nsd import Nsd
from tests.harness.postfix import Postfix
from tests.harness.process import free_port
from tests.harness.senders import ZONE, SenderDomains
from tests.harness.smtp import Transaction, send

OUR_HOST = "mx.example.org"  # the milter's hostname in the session config: our authserv-id


@pytest.fixture(scope="module")
def senders() -> SenderDomains:
    return SenderDomains()


@pytest.fixture(scope="module")
def nsd(
    tmp_path_factory: pytest.TempPathFactory, daemon_logs: DaemonLogs, senders: SenderDomains
) -> Iterator[Nsd]:
    root = tmp_path_factory.mktemp("nsd")
    daemon_logs.register("nsd", root / "nsd.log")
    server = senders.serve(root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def checking_milter(scan_milter_process: ScanMilter, nsd: Nsd) -> ScanMilter:
    """The session's milter asking NSD, with no trusted networks: loopback is checked too."""
    scan_milter_process.ensure({"auth": {"nameservers": [nsd.server], "trusted_networks": []}})
    return scan_milter_process


def message(author: str, mid: str, extra: dict[str, str] | None = None) -> bytes:
    return build_message(
        sender=author,
        subject="Invoice 4711",
        message_id=mid,
        date=datetime.now(UTC),
        extra_headers=extra,
    )


def deliver(postfix: Postfix, envelope_from: str, raw: bytes) -> Transaction:
    return send(postfix.address, envelope_from, ["alice@example.org"], raw)


def stored(cyrus: Cyrus, mid: str, folder: str = "INBOX") -> Message | None:
    def find() -> Message | None:
        for raw in cyrus.messages("alice", folder):
            parsed = email.message_from_bytes(raw)
            if parsed["Message-ID"] == mid:
                return parsed
        return None

    found: Message | None = wait_for(find, 20)
    return found


def our_results(copy: Message) -> list[str]:
    return [v for v in copy.get_all("Authentication-Results", []) if v.startswith(OUR_HOST)]


def methods(value: str) -> dict[str, str]:
    """{"spf": "pass", "dkim": "pass", ...} from one Authentication-Results value."""
    out = {}
    for part in value.split(";")[1:]:
        method, _, rest = part.strip().partition("=")
        out[method] = rest.split()[0]
    return out


def test_spf_dkim_and_dmarc_pass_is_delivered_with_three_passes(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, senders: SenderDomains
) -> None:
    mid = unique_message_id()
    raw = senders.sign(message(f"alice@good.{ZONE}", mid))
    tx = deliver(postfix, f"bounces@good.{ZONE}", raw)
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None
    [value] = our_results(copy)
    assert methods(value) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert f"header.d=good.{ZONE}" in value and f"header.from=good.{ZONE}" in value
    assert "MG_AUTH_DKIM_VALID=-0.1" in copy["X-Spam-Status"].replace("\n", "").replace("\t", "")
    auth = checking_milter.transaction(mid)["auth"]
    assert auth["spf"] == {"result": "pass", "domain": f"good.{ZONE}", "identity": "mailfrom"}
    assert [d["result"] for d in auth["dkim"]] == ["pass"]
    assert auth["dmarc"]["result"] == "pass" and auth["action"] == "accept"


def test_forged_reject_domain_is_refused_at_data_550_5_7_1(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    tx = deliver(postfix, f"ceo@bank.{ZONE}", message(f"ceo@bank.{ZONE}", mid))
    assert tx.data is not None and tx.data.code == 550, tx
    assert tx.data.enhanced == "5.7.1"
    assert f"bank.{ZONE} publishes a DMARC reject policy" in tx.data.text
    assert "SPF fail" in tx.data.text
    event = checking_milter.transaction(mid)
    assert event["action"] == "reject" and event["reason"] == "dmarc"
    assert event["auth"]["dmarc"] == {
        "result": "fail",
        "header_from": f"bank.{ZONE}",
        "policy": "reject",
    }
    assert "spam" not in event  # refused before spamd was asked
    assert postfix.queue_is_empty()
    assert stored(cyrus, mid) is None


def test_a_valid_signature_passes_dmarc_when_spf_fails(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, senders: SenderDomains
) -> None:
    """A message forwarded or sent through a list keeps its author's signature."""
    mid = unique_message_id()
    raw = senders.sign(message(f"alice@good.{ZONE}", mid))
    tx = deliver(postfix, f"list-bounces@lax.{ZONE}", raw)
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None
    assert methods(our_results(copy)[0]) == {"spf": "fail", "dkim": "pass", "dmarc": "pass"}


def test_a_simple_signature_over_unusual_header_spacing_still_passes(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, senders: SenderDomains
) -> None:
    """c=simple/simple signs the header bytes as sent: no space after a colon, a tab after
    another. Postfix used to drop that information on the way to the milter (one space
    eaten, then one put back), so the signature failed and the p=reject policy refused a
    genuine message with 550; the stored copy had its headers respaced too."""
    mid = unique_message_id()
    raw = message(f"alice@good.{ZONE}", mid)
    raw = raw.replace(b"Subject: Invoice 4711", b"Subject:Invoice 4711")
    raw = raw.replace(b"To: ", b"To:\t", 1)
    assert b"Subject:Invoice 4711" in raw and b"To:\t" in raw
    signed = senders.sign(raw, canonicalize="simple/simple")
    tx = deliver(postfix, f"list-bounces@lax.{ZONE}", signed)  # SPF fails: DKIM must pass
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None
    assert methods(our_results(copy)[0]) == {"spf": "fail", "dkim": "pass", "dmarc": "pass"}
    [stored_raw] = [m for m in cyrus.messages("alice", "INBOX") if mid.encode() in m]
    assert b"\r\nSubject:Invoice 4711\r\n" in stored_raw and b"\r\nTo:\t" in stored_raw


def test_a_tampered_signature_fails_and_the_reject_policy_applies(
    checking_milter: ScanMilter, postfix: Postfix, senders: SenderDomains
) -> None:
    mid = unique_message_id()
    raw = senders.sign(message(f"alice@good.{ZONE}", mid))
    raw = raw.replace(b"Invoice 4711", b"Invoice 9999")
    tx = deliver(postfix, f"list-bounces@lax.{ZONE}", raw)
    assert tx.data is not None and (tx.data.code, tx.data.enhanced) == (550, "5.7.1"), tx
    [dkim_result] = checking_milter.transaction(mid)["auth"]["dkim"]
    assert dkim_result["result"] == "fail" and dkim_result["domain"] == f"good.{ZONE}"


def test_p_none_failure_is_delivered_and_marked(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    tx = deliver(postfix, f"news@lax.{ZONE}", message(f"news@lax.{ZONE}", mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None
    [value] = our_results(copy)
    assert methods(value) == {"spf": "fail", "dkim": "none", "dmarc": "fail"}
    assert "(p=none)" in value
    assert copy["X-Spam-Flag"] is None
    # spamd read our header (SpamAssassin's AuthRes plugin) and scored the failures
    status = copy["X-Spam-Status"].replace("\n", "").replace("\t", "")
    assert "MG_AUTH_SPF_FAIL=0.919" in status and "MG_AUTH_DMARC_FAIL=0.898" in status


def test_p_quarantine_failure_is_delivered_flagged_for_junk(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    tx = deliver(postfix, f"billing@careful.{ZONE}", message(f"billing@careful.{ZONE}", mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None
    assert copy.get_all("X-Spam-Flag") == ["YES"]  # the default Sieve rule files it in Junk
    assert f"DMARC quarantine policy of careful.{ZONE} failed" in copy["X-Mailglue-Quarantine"]
    assert copy["Precedence"] == "junk"  # no vacation reply to a forgery
    assert checking_milter.transaction(mid)["auth"]["action"] == "quarantine"


def test_pct_0_turns_a_reject_policy_into_quarantine(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    tx = deliver(postfix, f"x@trial.{ZONE}", message(f"x@trial.{ZONE}", mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None and copy["X-Spam-Flag"] == "YES"
    dmarc = checking_milter.transaction(mid)["auth"]["dmarc"]
    assert dmarc["policy"] == "quarantine" and dmarc["reason"].startswith("pct=0")


def test_dmarc_reject_action_is_configurable(
    scan_milter_process: ScanMilter, nsd: Nsd, postfix: Postfix, cyrus: Cyrus
) -> None:
    """auth.dmarc_reject: quarantine delivers the forgery to Junk instead of refusing it."""
    scan_milter_process.ensure(
        {
            "auth": {
                "nameservers": [nsd.server],
                "trusted_networks": [],
                "dmarc_reject": "quarantine",
            }
        }
    )
    mid = unique_message_id()
    tx = deliver(postfix, f"ceo@bank.{ZONE}", message(f"ceo@bank.{ZONE}", mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None and copy["X-Spam-Flag"] == "YES"


def test_forged_authentication_results_in_our_name_are_removed(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    mid = unique_message_id()
    forged = f"{OUR_HOST}; spf=pass smtp.mailfrom=ceo@bank.{ZONE}; dmarc=pass"
    theirs = "mx.elsewhere.test; spf=pass smtp.mailfrom=news@lax.sender.test"
    raw = message(f"news@lax.{ZONE}", mid, extra={"Authentication-Results": forged})
    raw = raw.replace(
        b"MIME-Version:", b"Authentication-Results: " + theirs.encode() + b"\r\nMIME-Version:"
    )
    tx = deliver(postfix, f"news@lax.{ZONE}", raw)
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None
    values = copy.get_all("Authentication-Results", [])
    assert forged not in values
    assert theirs in values  # another host's results are not ours to remove
    [ours] = our_results(copy)
    assert methods(ours)["dmarc"] == "fail"
    assert "Authentication-Results" in checking_milter.transaction(mid)["headers_removed"]


def test_trusted_clients_are_not_checked(
    scan_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, nsd: Nsd
) -> None:
    """The default: loopback (this host re-sending mail) is trusted; no header, no refusal."""
    mid = unique_message_id()
    tx = deliver(postfix, f"ceo@bank.{ZONE}", message(f"ceo@bank.{ZONE}", mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None and our_results(copy) == []
    assert "auth" not in scan_milter.transaction(mid)


def test_name_server_down_gives_temperror_and_delivers(
    scan_milter_process: ScanMilter, postfix: Postfix, cyrus: Cyrus
) -> None:
    """No DNS answer is not a forgery: temperror, delivered, and said in the header."""
    scan_milter_process.ensure(
        {
            "auth": {
                "nameservers": [f"127.0.0.1:{free_port()}"],
                "trusted_networks": [],
                "timeout": 1,
            }
        }
    )
    mid = unique_message_id()
    tx = deliver(postfix, f"ceo@bank.{ZONE}", message(f"ceo@bank.{ZONE}", mid))
    assert tx.data is not None and tx.data.code == 250, tx
    copy = stored(cyrus, mid)
    assert copy is not None
    assert methods(our_results(copy)[0]) == {
        "spf": "temperror",
        "dkim": "none",
        "dmarc": "temperror",
    }


def test_each_signature_is_verified_on_its_own(
    checking_milter: ScanMilter, postfix: Postfix, cyrus: Cyrus, senders: SenderDomains
) -> None:
    """A list or forwarder adds its own signature on top; the author's still counts."""
    mid = unique_message_id()
    raw = senders.sign(senders.sign(message(f"alice@good.{ZONE}", mid)), "lax")
    tx = deliver(postfix, f"list-bounces@lax.{ZONE}", raw)
    assert tx.data is not None and tx.data.code == 250, tx
    dkim_results = checking_milter.transaction(mid)["auth"]["dkim"]
    assert [(d["domain"], d["result"]) for d in dkim_results] == [
        (f"lax.{ZONE}", "fail"),  # lax publishes no key (dkimpy: does not verify)
        (f"good.{ZONE}", "pass"),
    ]
    copy = stored(cyrus, mid)
    assert copy is not None and methods(our_results(copy)[0])["dmarc"] == "pass"
