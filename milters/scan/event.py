"""The scan milter's `transaction` event: one typed record per message, one JSON shape.

The milter fills a `TransactionEvent` as the transaction goes and logs `to_json()`; metrics,
`replay`, `trace` and `tail` read the same type (`from_json()` for a logged line), so the shape
is defined here once instead of as loose dicts matched by string literals. The JSON keys and
values are those the log has always had: ops tooling and `jq` recipes read them.

`from_json` is lenient on purpose: an old or partial line (a key missing) still reads, with
the defaults below, because `trace` must answer for whatever the log holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from lmtp_bridge import NotAttemptedReason, RecipientLog
from milters.scan.scanner import BUDGET_EXHAUSTED, ScanReport
from milters.scan.shadow import ShadowVerdict
from milters.scan.verdict import Infected, SpamScore, Unscanned

INTERNAL_ERROR = "internal error"  # `reason` of a transaction ended by an exception
LMTP_FAILURES = tuple(
    f"not attempted: {why.value}"
    for why in (NotAttemptedReason.UNREACHABLE, NotAttemptedReason.TIMEOUT)
)
Number = Decimal | float | int


@dataclass(frozen=True)
class Skipped:
    """A check that did not run: `{"unscanned": cause, "reason": …}`."""

    cause: str
    reason: str

    @property
    def failed(self) -> bool:
        return self.cause == "failed"

    @property
    def out_of_time(self) -> bool:
        return self.failed and self.reason == BUDGET_EXHAUSTED

    def to_json(self) -> dict[str, Any]:
        return {"unscanned": self.cause, "reason": self.reason}


@dataclass(frozen=True)
class SpamResult:
    score: Number
    tests: Mapping[str, Number] = field(default_factory=dict)
    precise: bool = True
    backend: str | None = None
    cached: bool = False  # the memo's result for the same message (scan/memo.py)

    def to_json(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "score": self.score,
            "tests": dict(self.tests),
            "precise": self.precise,
            "backend": self.backend,
        }
        if self.cached:
            fields["cached"] = True
        return fields


@dataclass(frozen=True)
class VirusResult:
    found: str | None
    backend: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"found": self.found, "backend": self.backend}


@dataclass(frozen=True)
class Client:
    addr: str = ""
    name: str = ""
    helo: str = ""
    tls: str | None = None
    sasl_user: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "addr": self.addr,
            "name": self.name,
            "helo": self.helo,
            "tls": self.tls,
            "sasl_user": self.sasl_user,
        }


@dataclass(frozen=True)
class Recipient:
    """Before delivery only the address (`{"address": …}`); after it, the fold rule's line."""

    address: str
    local: bool | None = None
    outcome: str | None = None  # None: not (yet) delivered by us
    reply: str = ""
    backend: str | None = None
    mailing_list: bool = False  # a list address, delivered to Mailman rather than a mailbox

    @classmethod
    def folded(cls, log: RecipientLog, backend: str | None, mailing_list: bool) -> Recipient:
        return cls(log.recipient, log.local, log.outcome.value, log.reply, backend, mailing_list)

    def to_json(self) -> dict[str, Any]:
        if self.outcome is None:
            return {"address": self.address}
        out: dict[str, Any] = {
            "recipient": self.address,
            "local": self.local,
            "outcome": self.outcome,
            "reply": self.reply,
        }
        if self.backend:
            out["backend"] = self.backend
        if self.mailing_list:
            out["list"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Recipient:
        return cls(
            address=str(data.get("recipient") or data.get("address") or ""),
            local=data.get("local"),
            outcome=data.get("outcome"),
            reply=str(data.get("reply") or ""),
            backend=data.get("backend"),
            mailing_list=bool(data.get("list")),
        )


SpamFields = SpamResult | Skipped
VirusFields = VirusResult | Skipped


@dataclass(frozen=True)
class Shadow:
    """Shadow mode: what would have been done (`would_*` keys)."""

    action: str
    reason: str
    reply: str


@dataclass
class TransactionEvent:
    """One message's record; mutable while the milter fills it, logged once at its reply."""

    queue_id: str = ""
    message_id: str | None = None
    client: Client = field(default_factory=Client)
    direction: str = "inbound"  # outbound: one of our users, logged in
    sender: str = ""
    recipients: list[Recipient] = field(default_factory=list)
    spam: SpamFields | None = None
    virus: VirusFields | None = None
    auth: dict[str, Any] | None = None  # SPF, DKIM, DMARC results and the action taken
    timings_ms: dict[str, float] = field(default_factory=dict)
    size: int | None = None
    would: Shadow | None = None
    reason: str = ""
    action: str = ""
    error: str | None = None
    traceback: str | None = None
    headers_removed: list[str] | None = None
    headers_added: dict[str, str] | None = None
    delivery: dict[str, str] | None = None
    reply: str = ""
    ts: str | None = None  # set when read back from the log (the log writes it)

    def record_scan(self, report: ScanReport) -> None:
        self.spam, self.virus = scan_fields(report)
        self.timings_ms = report.timings_ms

    def record_shadow(self, verdict: ShadowVerdict) -> None:
        self.would = shadow_of(verdict)

    def failed(self, reason: str, error: str, traceback: str | None = None) -> None:
        self.action, self.reason, self.error, self.traceback = "tempfail", reason, error, traceback

    @property
    def internal_error(self) -> bool:
        return self.reason == INTERNAL_ERROR

    @property
    def lmtp_failed(self) -> bool:
        return any(r.reply.startswith(LMTP_FAILURES) for r in self.recipients)

    def to_json(self) -> dict[str, Any]:
        """The logged fields (without `ts` and `event`, which the log adds), in log order."""
        out: dict[str, Any] = {
            "queue_id": self.queue_id,
            "message_id": self.message_id,
            "client": self.client.to_json(),
            "direction": self.direction,
            "sender": self.sender,
            "recipients": [r.to_json() for r in self.recipients],
        }
        if self.spam is not None:
            out["spam"] = self.spam.to_json()
        if self.virus is not None:
            out["virus"] = self.virus.to_json()
        if self.auth is not None:
            out["auth"] = self.auth
        out["timings_ms"] = self.timings_ms
        if self.size is not None:
            out["size"] = self.size
        if self.would is not None:
            out.update(shadow_json(self.would))
        out["reason"] = self.reason
        out["action"] = self.action
        optional = {
            "error": self.error,
            "traceback": self.traceback,
            "headers_removed": self.headers_removed,
            "headers_added": self.headers_added,
            "delivery": self.delivery,
        }
        out.update({key: value for key, value in optional.items() if value is not None})
        out["reply"] = self.reply
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TransactionEvent:
        client = data.get("client") or {}
        would = None
        if data.get("would_action"):
            would = Shadow(
                str(data["would_action"]),
                str(data.get("would_reason") or ""),
                str(data.get("would_reply") or ""),
            )
        return cls(
            queue_id=str(data.get("queue_id") or ""),
            message_id=data.get("message_id"),
            client=Client(**{k: client[k] for k in Client.__dataclass_fields__ if k in client}),
            direction=str(data.get("direction") or "inbound"),
            sender=str(data.get("sender") or ""),
            recipients=[
                Recipient.from_json(r) for r in data.get("recipients") or [] if isinstance(r, dict)
            ],
            spam=_spam_from_json(data.get("spam")),
            virus=_virus_from_json(data.get("virus")),
            auth=data.get("auth") if isinstance(data.get("auth"), dict) else None,
            timings_ms=dict(data.get("timings_ms") or {}),
            size=data.get("size"),
            would=would,
            reason=str(data.get("reason") or ""),
            action=str(data.get("action") or ""),
            error=data.get("error"),
            traceback=data.get("traceback"),
            headers_removed=data.get("headers_removed"),
            headers_added=data.get("headers_added"),
            delivery=data.get("delivery"),
            reply=str(data.get("reply") or ""),
            ts=data.get("ts"),
        )


def scan_fields(report: ScanReport) -> tuple[SpamFields, VirusFields]:
    """The scanners' results as the event records them."""
    spam: SpamFields
    if isinstance(report.spam, SpamScore):
        spam = SpamResult(
            report.spam.score,
            dict(report.spam.tests),
            report.spam_precise,
            report.spamd_backend,
            report.cached,
        )
    else:
        spam = _skipped(report.spam)
    virus: VirusFields
    if isinstance(report.virus, Unscanned):
        virus = _skipped(report.virus)
    else:
        name = report.virus.signature if isinstance(report.virus, Infected) else None
        virus = VirusResult(name, report.clamd_backend)
    return spam, virus


def shadow_of(verdict: ShadowVerdict) -> Shadow | None:
    if verdict.would is None:
        return None
    return Shadow(verdict.would.action.value, verdict.would.reason, str(verdict.would.reply))


def shadow_json(would: Shadow) -> dict[str, Any]:
    return {
        "shadow": True,
        "would_action": would.action,
        "would_reason": would.reason,
        "would_reply": would.reply,
    }


def _skipped(check: Unscanned) -> Skipped:
    return Skipped(check.cause.value, check.reason)


def _spam_from_json(data: object) -> SpamFields | None:
    if not isinstance(data, dict) or not data:
        return None
    if "unscanned" in data:
        return Skipped(str(data["unscanned"]), str(data.get("reason") or ""))
    if "score" not in data:
        return None
    return SpamResult(
        data["score"],
        data.get("tests") or {},
        data.get("precise", True),
        data.get("backend"),
        bool(data.get("cached", False)),
    )


def _virus_from_json(data: object) -> VirusFields | None:
    if not isinstance(data, dict) or not data:
        return None
    if "unscanned" in data:
        return Skipped(str(data["unscanned"]), str(data.get("reason") or ""))
    return VirusResult(data.get("found"), data.get("backend"))
