"""Fault injection for the real-daemon harness: SIGKILL a daemon we own, then bring it back.

The harness's own `stop()` methods are polite (SIGTERM, then a grace period): a crash is not.
These helpers kill the whole process group at once, as the kernel's OOM killer or a segfault
in the leader would, and wait for the listening sockets to close before anyone restarts the
daemon on the same addresses (killed daemons linger as zombies here, see process.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence

from .process import Address, DaemonError, ManagedProcess, wait_closed


def sigkill(
    process: ManagedProcess | None, addresses: Sequence[Address], timeout: float = 10
) -> None:
    """SIGKILL the process group of a running ManagedProcess and wait until it is gone.

    Unix socket files stay behind, as after a real crash; the daemons here rebind over them.
    """
    if process is None or process.proc is None:
        raise DaemonError("nothing to kill: the daemon was not started by the harness")
    proc = process.proc
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout)
    process.proc = None
    wait_closed(addresses, timeout=timeout, what=process.name)
