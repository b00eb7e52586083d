"""LMTP delivery for mailglue: a client that returns one reply per recipient, recipient →
backend routing, and the pure fold rule that turns those replies into one milter reply.

Imports nothing from `milters/`; the milters use this package.
"""

from lmtp_bridge.address import (
    BackendAddress,
    BackendAddressError,
    InetAddress,
    UnixAddress,
    parse_backend_address,
)
from lmtp_bridge.client import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    DeliveryResult,
    LmtpClient,
    Timeouts,
    Timings,
)
from lmtp_bridge.fold import (
    FoldAction,
    FoldDecision,
    Mode,
    RecipientLog,
    RecipientOutcome,
    Rule,
    fold,
)
from lmtp_bridge.outcome import NotAttempted, NotAttemptedReason, Outcome
from lmtp_bridge.protocol import MailAddressError, RecipientReply, Stage
from lmtp_bridge.replies import MalformedReply, Reply, ReplyParser
from lmtp_bridge.routing import NoRoute, RoutePlan, Router, mail_host_backend

__all__ = [
    "BackendAddress",
    "BackendAddressError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "DeliveryResult",
    "FoldAction",
    "FoldDecision",
    "InetAddress",
    "LmtpClient",
    "MailAddressError",
    "MalformedReply",
    "Mode",
    "NoRoute",
    "NotAttempted",
    "NotAttemptedReason",
    "Outcome",
    "RecipientLog",
    "RecipientOutcome",
    "RecipientReply",
    "Reply",
    "ReplyParser",
    "RoutePlan",
    "Router",
    "Rule",
    "Stage",
    "Timeouts",
    "Timings",
    "UnixAddress",
    "fold",
    "mail_host_backend",
    "parse_backend_address",
]
