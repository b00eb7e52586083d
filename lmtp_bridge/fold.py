"""The fold rule: per-recipient LMTP outcomes → ONE milter action and SMTP reply. Pure.

Each local recipient's outcome is one of: delivered (2xx), transient (4xx, or not attempted
because the backend was unreachable, timed out or had no route; also any stray 3xx), permanent
(5xx). Non-local
recipients are Postfix's business; they only matter for whether anything is left to relay.

The rules, first match wins (D/T/P = delivered/transient/permanent local recipients):

| # | local outcomes                  | non-local | default mode                    | strict mode |
|---|---------------------------------|-----------|---------------------------------|-------------|
| 1 | no local recipients             | any       | ACCEPT, delete nothing          | same        |
| 2 | all D                           | none      | DISCARD (client gets 250)       | same        |
| 3 | all D                           | some      | delete D, ACCEPT                | same        |
| 4 | no D, at least one T (any P)    | any       | TEMPFAIL 451                    | same        |
| 5 | all P                           | none      | REJECT with the backend's 5xx   | same        |
| 6 | all P                           | some      | ACCEPT, delete nothing          | REJECT 5xx  |
| 7 | some D, some T or P             | any       | delete D, ACCEPT                | TEMPFAIL 451|

Why rows 4, 6 and 7 are as they are:
- 4: nothing was delivered, so refusing costs nothing and the sender keeps the message; a
  permanent failure among them fails again on the retry, and once the transient ones go through
  the message falls into row 7, where Postfix bounces the permanent ones.
- 6: a 5xx would also refuse the non-local recipients, who can be reached. Postfix keeps the
  local ones in its queue, its own `lmtp:` transport gets the same 5xx and bounces them. Strict
  mode never leaves a local recipient in Postfix's queue, so it rejects the whole message.
- 7: the delivered recipients cannot be un-delivered. Default: remove them and let Postfix's
  queue retry (4xx) or bounce (5xx) the rest. Strict: tempfail everything; the retry is safe for
  the delivered ones because Cyrus drops duplicates (same Message-ID and Date) — with a 5xx
  among them the sender retries until its queue lifetime ends, as strict mode accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from lmtp_bridge.outcome import NotAttempted, NotAttemptedReason, Outcome
from lmtp_bridge.replies import Reply

__all__ = [
    "FoldAction",
    "FoldDecision",
    "Mode",
    "RecipientLog",
    "RecipientOutcome",
    "Rule",
    "fold",
]

_MAX_QUOTED = 200  # chars of a backend's text quoted inside our own reply


class Mode(StrEnum):
    """How partial delivery is answered (config key value)."""

    DEFAULT = "default"
    STRICT = "strict"


class FoldAction(StrEnum):
    """The milter's end-of-message action."""

    DISCARD = "discard"
    ACCEPT = "accept"
    TEMPFAIL = "tempfail"
    REJECT = "reject"


class Rule(StrEnum):
    """Which row of the table fired (logged, and asserted by the tests)."""

    NO_LOCAL = "no-local-recipients"
    ALL_DELIVERED = "all-delivered"
    ALL_DELIVERED_NONLOCAL = "all-delivered-nonlocal-remain"
    NOTHING_DELIVERED_TRANSIENT = "nothing-delivered-transient"
    ALL_PERMANENT = "all-permanent"
    ALL_PERMANENT_NONLOCAL = "all-permanent-nonlocal-remain"
    MIXED = "mixed"


class RecipientOutcome(StrEnum):
    """A recipient's fate as the JSON log records it."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    REJECTED = "rejected"
    LEFT_TO_QUEUE = "left-to-queue"


@dataclass(frozen=True, slots=True)
class RecipientLog:
    """One recipient's line in the transaction log."""

    recipient: str
    local: bool
    outcome: RecipientOutcome
    reply: str  # the backend's reply, or "not attempted: …"; empty for non-local recipients

    def as_dict(self) -> dict[str, str | bool]:
        """JSON-ready."""
        return {
            "recipient": self.recipient,
            "local": self.local,
            "outcome": self.outcome.value,
            "reply": self.reply,
        }


@dataclass(frozen=True, slots=True)
class FoldDecision:
    """What the milter does at end of message, and the record of why."""

    action: FoldAction
    rule: Rule
    reply: Reply | None  # for TEMPFAIL/REJECT; None means Postfix's own 250
    delete_recipients: tuple[str, ...]  # bare addresses (the milter adds the <> for delrcpt)
    recipients: tuple[RecipientLog, ...]
    explanation: str  # one sentence for the admin

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "action": self.action.value,
            "rule": self.rule.value,
            "reply": str(self.reply) if self.reply is not None else None,
            "delete_recipients": list(self.delete_recipients),
            "recipients": [r.as_dict() for r in self.recipients],
            "explanation": self.explanation,
        }


def _is_delivered(o: Outcome) -> bool:
    return isinstance(o, Reply) and o.code < 300


def _is_permanent(o: Outcome) -> bool:
    return isinstance(o, Reply) and o.is_permanent


def _clean(text: str, limit: int = _MAX_QUOTED) -> str:
    """Printable, one line, bounded: backend text ends up in our SMTP reply."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _tempfail_enhanced(o: Outcome | None) -> str:
    if isinstance(o, NotAttempted):
        return "4.4.4" if o.reason is NotAttemptedReason.NO_ROUTE else "4.4.1"
    if isinstance(o, Reply) and o.is_transient and o.enhanced:
        return o.enhanced
    return "4.3.0"


def _why_deferred(rcpt: str, o: Outcome) -> str:
    if isinstance(o, NotAttempted):
        if o.reason is NotAttemptedReason.NO_ROUTE:
            return f"No mailbox server known for <{rcpt}>"
        after = " after the message was sent" if o.maybe_delivered else ""
        if o.reason is NotAttemptedReason.TIMEOUT:
            return f"Mailbox server did not answer in time{after}"
        if o.maybe_delivered:
            return f"Mailbox server connection lost{after}"
        return "Mailbox server unreachable"
    return f"Mailbox server deferred <{rcpt}>: {_clean(str(o))}"


def _collect(local: Mapping[str, Outcome] | Iterable[tuple[str, Outcome]]) -> dict[str, Outcome]:
    pairs = local.items() if isinstance(local, Mapping) else local
    out: dict[str, Outcome] = {}
    for rcpt, outcome in pairs:
        if rcpt in out:
            raise ValueError(f"local recipient {rcpt!r} given twice")
        out[rcpt] = outcome
    return out


def fold(
    local: Mapping[str, Outcome] | Iterable[tuple[str, Outcome]],
    non_local: Sequence[str] = (),
    mode: Mode = Mode.DEFAULT,
) -> FoldDecision:
    """Apply the fold rule (module docstring) to one message's outcomes, in recipient order."""
    outcomes = _collect(local)
    others = tuple(dict.fromkeys(non_local))
    both = sorted(set(outcomes).intersection(others))
    if both:
        raise ValueError(f"recipients both local and non-local: {both}")
    return _Fold(outcomes, others, mode).decide()


class _Fold:
    """One application of the rule; the helpers share the sorted-out recipients."""

    def __init__(self, outcomes: dict[str, Outcome], others: tuple[str, ...], mode: Mode) -> None:
        self.outcomes = outcomes
        self.others = others
        self.mode = mode
        self.delivered = [r for r, o in outcomes.items() if _is_delivered(o)]
        self.permanent = [r for r, o in outcomes.items() if _is_permanent(o)]
        self.transient = [
            r for r, o in outcomes.items() if not _is_delivered(o) and not _is_permanent(o)
        ]

    def decide(self) -> FoldDecision:
        n_local, n_del = len(self.outcomes), len(self.delivered)
        if not self.outcomes:
            return self._accept(Rule.NO_LOCAL, "no local recipients: Postfix handles the message")
        if n_del == n_local:
            if not self.others:
                return self._make(
                    FoldAction.DISCARD,
                    Rule.ALL_DELIVERED,
                    None,
                    f"delivered to all {_plural(n_local, 'local recipient')}, nothing left to "
                    "relay: discarded from Postfix, the client gets 250",
                )
            return self._accept(
                Rule.ALL_DELIVERED_NONLOCAL,
                f"delivered to all {_plural(n_local, 'local recipient')}; removed them, Postfix "
                f"relays the {_plural(len(self.others), 'non-local recipient')}",
            )
        if not self.delivered and self.transient:
            return self._nothing_delivered_transient()
        if not self.delivered:
            return self._all_permanent()
        if self.mode is Mode.STRICT:
            return self._mixed_strict()
        undelivered = len(self.transient) + len(self.permanent)
        return self._accept(
            Rule.MIXED,
            f"partial delivery: {n_del} of {n_local} local recipients delivered and removed; "
            f"Postfix's queue retries (4xx) or bounces (5xx) the other {undelivered}",
        )

    def _nothing_delivered_transient(self) -> FoldDecision:
        first = self.transient[0]
        outcome = self.outcomes[first]
        uncertain = isinstance(outcome, NotAttempted) and outcome.maybe_delivered
        # Never claim "nothing was delivered" when the backend died after taking the message.
        done = "delivery is uncertain" if uncertain else "nothing was delivered"
        text = f"{_why_deferred(first, outcome)}; {done}, please try again later"
        if len(self.transient) > 1:
            text += f" ({len(self.transient)} recipients deferred, first shown)"
        extra = f", {len(self.permanent)} refused permanently" if self.permanent else ""
        return self._make(
            FoldAction.TEMPFAIL,
            Rule.NOTHING_DELIVERED_TRANSIENT,
            Reply.make(451, _tempfail_enhanced(outcome), text),
            f"nothing delivered: {_plural(len(self.transient), 'local recipient')} temporarily "
            f"failed{extra}; the sender keeps the message and retries",
        )

    def _all_permanent(self) -> FoldDecision:
        first = self.outcomes[self.permanent[0]]
        assert isinstance(first, Reply)
        if self.others and self.mode is Mode.DEFAULT:
            return self._accept(
                Rule.ALL_PERMANENT_NONLOCAL,
                f"every local recipient refused permanently (first: {first}); accepted for the "
                f"{_plural(len(self.others), 'non-local recipient')}, Postfix's lmtp transport "
                "will bounce the local ones",
            )
        text = _clean(first.text, 400) or "Delivery refused by the mailbox server"
        if len({str(self.outcomes[r]) for r in self.permanent}) > 1:
            text += (
                f" (this is the error for <{self.permanent[0]}>; other recipients got different "
                "errors, see the mail log)"
            )
        if self.others:
            text += " (whole message refused: strict delivery mode)"
        rule = Rule.ALL_PERMANENT_NONLOCAL if self.others else Rule.ALL_PERMANENT
        why = "every local recipient refused permanently"
        if self.others:
            why += "; strict mode refuses the non-local recipients with them"
        enhanced = first.enhanced or f"{first.code // 100}.0.0"
        return self._make(FoldAction.REJECT, rule, Reply.make(first.code, enhanced, text), why)

    def _mixed_strict(self) -> FoldDecision:
        failed = [r for r in self.outcomes if r not in self.delivered]
        first = failed[0]
        outcome = self.outcomes[first]
        detail = _clean(str(outcome))
        text = (
            f"Partial delivery refused (strict mode): {len(self.delivered)} of "
            f"{len(self.outcomes)} local recipients delivered, <{first}> failed: {detail}; "
            "please retry, copies already delivered are dropped as duplicates"
        )
        enhanced = _tempfail_enhanced(outcome if not _is_permanent(outcome) else None)
        return self._make(
            FoldAction.TEMPFAIL,
            Rule.MIXED,
            Reply.make(451, enhanced, text),
            f"partial delivery in strict mode: tempfail; {len(self.delivered)} already "
            "delivered, Cyrus duplicate suppression drops their copy on the retry",
        )

    def _accept(self, rule: Rule, why: str) -> FoldDecision:
        return self._make(FoldAction.ACCEPT, rule, None, why)

    def _make(self, action: FoldAction, rule: Rule, reply: Reply | None, why: str) -> FoldDecision:
        rest = {
            FoldAction.DISCARD: RecipientOutcome.LEFT_TO_QUEUE,  # unused: all delivered
            FoldAction.ACCEPT: RecipientOutcome.LEFT_TO_QUEUE,
            FoldAction.TEMPFAIL: RecipientOutcome.DEFERRED,
            FoldAction.REJECT: RecipientOutcome.REJECTED,
        }[action]
        logs = [
            RecipientLog(
                r,
                True,
                RecipientOutcome.DELIVERED if _is_delivered(o) else rest,
                str(o),
            )
            for r, o in self.outcomes.items()
        ]
        logs += [RecipientLog(r, False, rest, "") for r in self.others]
        delete = tuple(self.delivered) if action is FoldAction.ACCEPT else ()
        return FoldDecision(action, rule, reply, delete, tuple(logs), why)
