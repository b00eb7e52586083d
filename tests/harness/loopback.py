"""A non-loopback client address for tests, held on `lo` for a test's duration.

Tests that must look like another host put a TEST-NET address on `lo`. A run that was
killed (a session ended, a CI timeout) leaves the address behind, so taking it must not
fail when it is already there, and giving it back must not fail when it is already gone.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def _ip(*args: str, check: bool) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@contextmanager
def address_on_loopback(address: str) -> Iterator[str]:
    """Hold `address`/32 on `lo`; `ip addr replace` succeeds whether or not it is there."""
    _ip("addr", "replace", f"{address}/32", "dev", "lo", check=True)
    try:
        yield address
    finally:
        _ip("addr", "del", f"{address}/32", "dev", "lo", check=False)


def on_loopback(address: str) -> bool:
    """Whether `address` is currently assigned to `lo`."""
    shown = subprocess.run(
        ["ip", "-o", "addr", "show", "dev", "lo"], check=True, capture_output=True, text=True
    ).stdout
    return f" {address}/" in shown
