"""Incoming mail from another host gets our Authentication-Results; forgeries of it go.

The deployed milter checks SPF, DKIM and DMARC for every client that is not this host. The
journey needs a client address that is not loopback: the test puts one from TEST-NET-2 on
`lo` for its duration, so the mail still never leaves the machine. The test domain has no
records anywhere, so the results say none (or temperror where DNS cannot answer); what the
checks conclude from real records is proven against a name server in
tests/integration/test_sender_auth.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.mailuser import assert_delivered, from_outside, in_folder, message, person, token
from tests.deploy.stack import DEPLOY_MARKS
from tests.harness.loopback import address_on_loopback

pytestmark = DEPLOY_MARKS

OUTSIDE_HOST = "198.51.100.25"  # TEST-NET-2 (RFC 5737)


@pytest.fixture(scope="module")
def outside_host() -> Iterator[str]:
    with address_on_loopback(OUTSIDE_HOST) as address:
        yield address


def test_mail_from_another_host_carries_our_results_and_no_forged_ones(
    deployed: dict[str, Any], outside_host: str
) -> None:
    hostname = deployed["vars"]["mail_hostname"]
    alice = person(deployed, "alice")
    sender = f"news@{token()}.example.net"
    subject = f"newsletter {token()}"
    raw = message(sender, [alice["mail"]], subject)
    forged = f"Authentication-Results: {hostname}; spf=pass; dkim=pass; dmarc=pass\r\n"
    raw = forged.encode() + raw
    assert_delivered(from_outside(sender, [alice["mail"]], subject, raw=raw, source=outside_host))
    # spamd tags it (no reverse DNS for a TEST-NET address), so Sieve files it in Junk
    copy = in_folder(alice, subject) or in_folder(alice, subject, "INBOX.Junk", timeout=5)
    assert copy is not None, "neither in INBOX nor in Junk"
    ours = [
        line
        for line in copy.replace(b"\r\n\t", b" ").split(b"\r\n")
        if line.lower().startswith(f"authentication-results: {hostname}".lower().encode())
    ]
    assert len(ours) == 1, ours  # the forged one is gone, ours is there
    assert b"dmarc=pass" not in ours[0]
    assert b"spf=none" in ours[0] or b"spf=temperror" in ours[0], ours[0]
    assert b"dkim=none" in ours[0]
