"""Fixed-window message and recipient counters per key (SASL login or client address).

Pure apart from the injectable clock: no I/O, no threads; the server calls it from the event
loop only. Memory is bounded: past `max_keys` the least recently seen key is forgotten, so a
flood of distinct client addresses costs at most `max_keys` small entries. The price is that
such a flood can make us forget a key early, which only ever errs towards letting mail through.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from milters.policy.config import RateLimits

__all__ = ["RateExceeded", "RateLimiter"]


@dataclass(frozen=True)
class RateExceeded:
    key: str
    what: str  # "messages" or "recipients"
    limit: int
    window: float
    retry_after: float


class _Window:
    __slots__ = ("instance", "messages", "recipients", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.messages = 0
        self.recipients = 0
        self.instance = ""


class RateLimiter:
    """Counts one recipient per call and one message per new Postfix `instance` (transaction)."""

    def __init__(
        self,
        window: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or max_keys < 1:
            raise ValueError("window must be positive and max_keys at least 1")
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def reconfigure(self, window: float, max_keys: int) -> None:
        """Keep the counts across a config reload; shrink to the new bound if needed."""
        self.window = window
        self.max_keys = max_keys
        self._evict()

    def hit(self, key: str, limits: RateLimits, instance: str = "") -> RateExceeded | None:
        """Count a recipient, unless that would exceed a limit: then count nothing and say why.

        An empty `instance` (unknown transaction) counts every recipient as a new message.
        """
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None or now - entry.start >= self.window:
            entry = _Window(now)
            self._entries[key] = entry
        self._entries.move_to_end(key)
        new_message = not instance or instance != entry.instance
        retry_after = max(0.0, entry.start + self.window - now)
        if limits.messages and new_message and entry.messages >= limits.messages:
            exceeded: RateExceeded | None = RateExceeded(
                key, "messages", limits.messages, self.window, retry_after
            )
        elif limits.recipients and entry.recipients >= limits.recipients:
            exceeded = RateExceeded(key, "recipients", limits.recipients, self.window, retry_after)
        else:
            exceeded = None
            entry.messages += new_message
            entry.recipients += 1
            entry.instance = instance
        self._evict()
        return exceeded

    def _evict(self) -> None:
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
