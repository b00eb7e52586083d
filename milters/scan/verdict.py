"""The pure verdict: scan results + thresholds + failure policy -> action, reply and headers.

No I/O here. Everything the milter decides about a scanned message is decided in `decide`,
so every boundary (3.0 vs 3.1, 4.999 vs 5.0, a backend down) is tested as a table of values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from lmtp_bridge.replies import Reply

MAX_STARS = 50


class Action(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class Clean:
    """clamd scanned the whole message and found nothing."""


@dataclass(frozen=True)
class Infected:
    signature: str


@dataclass(frozen=True)
class SpamScore:
    score: Decimal
    tests: tuple[tuple[str, Decimal], ...]


class SkipCause(enum.Enum):
    FAILED = "failed"  # backend down, refused, protocol error, timed out
    OVERSIZE = "oversize"  # message larger than what we send to this backend


@dataclass(frozen=True)
class Unscanned:
    backend: str  # "clamd" or "spamd"
    cause: SkipCause
    reason: str  # for the header and the log, e.g. "connection refused"


VirusCheck = Clean | Infected | Unscanned
SpamCheck = SpamScore | Unscanned


@dataclass(frozen=True)
class VerdictPolicy:
    tag_above: Decimal = Decimal("3.0")
    reject_at: Decimal = Decimal("5.0")
    spamd_on_failure: str = "tempfail"  # "tempfail" | "accept"
    clamd_on_failure: str = "tempfail"  # "tempfail" | "accept"
    clamd_on_oversize: str = "reject"  # "reject" | "tempfail" | "accept"


@dataclass(frozen=True)
class Verdict:
    action: Action
    reply: Reply | None  # None: the milter accepts (delivery decides the final reply)
    headers: tuple[tuple[str, str], ...]  # to add, in order
    reason: str  # one phrase for the log: "clean", "spam", "virus", "clamd failed", ...


def format_score(score: Decimal) -> str:
    """3 -> "3.0", 4.999 -> "4.999", 1000 -> "1000.0": exact, never truncated."""
    text = format(score.normalize(), "f")
    return text if "." in text else text + ".0"


def stars(score: Decimal) -> str:
    """One star per whole point (3.9 -> ***), none below 1, capped so the header stays short."""
    whole = int(score.to_integral_value(rounding=ROUND_FLOOR))
    return "*" * max(0, min(whole, MAX_STARS))


def spam_status(score: SpamScore, flagged: bool, tag_above: Decimal) -> str:
    tests = ",".join(f"{name}={format_score(value)}" for name, value in score.tests) or "none"
    yes_no = "Yes" if flagged else "No"
    return (
        f"{yes_no}, score={format_score(score.score)} required={format_score(tag_above)} "
        f"tests={tests}"
    )


def _tempfail(what: str, reason: str) -> Verdict:
    reply = Reply.make(451, "4.7.1", f"{what} temporarily unavailable, please try again later")
    return Verdict(Action.TEMPFAIL, reply, (), reason)


def _unscanned_header(check: Unscanned) -> tuple[str, str]:
    return ("X-Mailglue-Unscanned", f"{check.backend}: {check.reason}")


def decide(virus: VirusCheck, spam: SpamCheck, policy: VerdictPolicy) -> Verdict:
    """Map one message's scan results to what the milter does with it.

    Order matters: a virus rejects whole whatever the spam score; then a backend that
    could not scan decides by its failure policy; then the score bands.
    """
    headers: list[tuple[str, str]] = []

    if isinstance(virus, Infected):
        reply = Reply.make(554, "5.7.1", f"Message rejected: virus found ({virus.signature})")
        return Verdict(Action.REJECT, reply, (), "virus")
    if isinstance(virus, Unscanned):
        if virus.cause is SkipCause.OVERSIZE:
            if policy.clamd_on_oversize == "reject":
                reply = Reply.make(552, "5.3.4", "Message too big to be scanned for viruses")
                return Verdict(Action.REJECT, reply, (), "too big for clamd")
            if policy.clamd_on_oversize == "tempfail":
                return _tempfail("Virus scanning of a message this size", "too big for clamd")
        elif policy.clamd_on_failure == "tempfail":
            return _tempfail("Virus scanner", "clamd failed")
        headers.append(_unscanned_header(virus))
    else:
        headers.append(("X-Virus-Scanned", "clean (clamd)"))

    if isinstance(spam, Unscanned):
        if spam.cause is SkipCause.FAILED and policy.spamd_on_failure == "tempfail":
            return _tempfail("Spam scanner", "spamd failed")
        headers.append(_unscanned_header(spam))
        return Verdict(Action.ACCEPT, None, tuple(headers), f"spamd {spam.cause.value}")

    if spam.score >= policy.reject_at:
        reply = Reply.make(
            550, "5.7.1", f"Message rejected as spam (score {format_score(spam.score)})"
        )
        return Verdict(Action.REJECT, reply, (), "spam")

    flagged = spam.score > policy.tag_above
    headers.append(("X-Spam-Status", spam_status(spam, flagged, policy.tag_above)))
    if flagged:
        headers.append(("X-Spam-Flag", "YES"))
        level = stars(spam.score)
        if level:
            headers.append(("X-Spam-Level", level))
    return Verdict(Action.ACCEPT, None, tuple(headers), "tagged" if flagged else "clean")


def for_our_user(
    verdict: Verdict, virus: VirusCheck, spam: SpamCheck, policy: VerdictPolicy
) -> Verdict:
    """The same verdict, its refusal worded for one of our users sending out (after AUTH):
    they read it in their mail client's error box, so it says that nothing was sent and why.
    """
    if verdict.action is not Action.REJECT or verdict.reply is None:
        return verdict
    reply = verdict.reply
    if verdict.reason == "spam" and isinstance(spam, SpamScore):
        top = sorted((t for t in spam.tests if t[1] > 0), key=lambda t: t[1], reverse=True)[:3]
        why = ", ".join(name for name, _ in top) or "its content"
        text = (
            f"Not sent: our spam filter scored your message {format_score(spam.score)} "
            f"(refused from {format_score(policy.reject_at)}), mostly for {why}; "
            "change the text or ask postmaster"
        )
    elif verdict.reason == "virus" and isinstance(virus, Infected):
        text = f"Not sent: virus found ({virus.signature}) in your message"
    else:
        return verdict
    return Verdict(verdict.action, Reply.make(reply.code, reply.enhanced, text), (), verdict.reason)
