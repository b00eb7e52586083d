"""Elapsed time as logged and measured everywhere in mailglue: milliseconds to 0.1 ms.

Here rather than in milters/common because lmtp_bridge imports nothing from milters, and both
packages time things the same way.
"""

from __future__ import annotations

import time


def milliseconds(start: float, end: float | None = None) -> float:
    """From one `time.monotonic()` value to another (or to now), in ms to 0.1 ms."""
    stop = time.monotonic() if end is None else end
    return round((stop - start) * 1000.0, 1)
