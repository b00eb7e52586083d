"""The loopback client address survives a run that was killed and left it behind."""

from __future__ import annotations

import subprocess

from tests.harness.loopback import address_on_loopback, on_loopback

LEFT_BEHIND = "198.51.100.26"  # TEST-NET-2 (RFC 5737)


def test_an_address_left_by_a_killed_run_is_taken_and_given_back() -> None:
    subprocess.run(["ip", "addr", "add", f"{LEFT_BEHIND}/32", "dev", "lo"], check=True)
    try:
        with address_on_loopback(LEFT_BEHIND) as address:
            assert on_loopback(address)
        assert not on_loopback(LEFT_BEHIND)
    finally:
        subprocess.run(["ip", "addr", "del", f"{LEFT_BEHIND}/32", "dev", "lo"], check=False)


def test_taking_it_twice_in_a_row_works() -> None:
    for _ in range(2):
        with address_on_loopback(LEFT_BEHIND):
            assert on_loopback(LEFT_BEHIND)
    assert not on_loopback(LEFT_BEHIND)
