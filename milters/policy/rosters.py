"""Who is on a members-only list, from Mailman's REST API, kept for a short while.

At RCPT time the policy service refuses a non-member's post to a members-only list, so the
poster's own server tells them at once; accepting it and bouncing it later is what we never
do. One roster fetch per list per `roster_ttl` seconds, whatever the traffic; a Mailman that
does not answer is an outage (defer), never a guess.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from milters.common.mailman import MailmanRest

__all__ = ["Rosters", "list_id"]


def list_id(address: str) -> str:
    """Mailman's id of the list at `address`: `staff@example.org` -> `staff.example.org`."""
    return address.lower().replace("@", ".", 1)


class Rosters:
    """Members of lists, each roster reused for `ttl` seconds; thread-safe."""

    def __init__(
        self, rest: MailmanRest, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rest = rest
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    def is_member(self, list_address: str, sender: str) -> bool:
        """Raises MailmanError when Mailman cannot say."""
        return sender.lower() in self._members(list_id(list_address))

    def _members(self, lid: str) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(lid)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        members = frozenset(self.rest.roster(lid, "member"))
        with self._lock:
            self._cache[lid] = (now, members)
        return members
