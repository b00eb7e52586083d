"""What happened to one local recipient: a server reply, or the reason nothing was tried.

Kept apart from replies so the fold rule can tell "the backend was never reached" from a 4xx the
backend itself gave, and log which it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lmtp_bridge.replies import Reply

__all__ = ["NotAttempted", "NotAttemptedReason", "Outcome"]


class NotAttemptedReason(StrEnum):
    """Why a recipient got no reply of its own from a backend."""

    UNREACHABLE = "backend unreachable"
    TIMEOUT = "backend timeout"
    NO_ROUTE = "no route"


@dataclass(frozen=True, slots=True)
class NotAttempted:
    """No usable reply for this recipient; `detail` is for the admin reading the log."""

    reason: NotAttemptedReason
    detail: str = ""
    # The connection failed after the whole message was sent: the backend may have stored it
    # before it went (a crash between storing and answering). A retry is still right; Cyrus
    # drops the copy it already has, unless it died before recording it.
    maybe_delivered: bool = False

    def __str__(self) -> str:
        base = f"not attempted: {self.reason.value}"
        return f"{base} ({self.detail})" if self.detail else base


Outcome = Reply | NotAttempted
