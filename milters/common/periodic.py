"""`--every N` for the admin jobs (learn, quota): one pass now, then one every N seconds until
stopped. The form a service manager without timers (supervisor) can run; each pass re-reads
its config, so a fixed file is picked up without a restart."""

from __future__ import annotations

import time
from collections.abc import Callable


def repeat(one_pass: Callable[[], int], every: float | None) -> int:
    """The exit status of the pass (the only one without `every`; the loop never ends)."""
    while True:
        status = one_pass()
        if every is None:
            return status
        time.sleep(every)
