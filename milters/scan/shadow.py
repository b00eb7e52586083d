"""Shadow mode: what the milter would have done, next to what it does instead.

An admin rolling out new thresholds (or mailglue itself) wants to see the decisions before they
cost anyone a message. In shadow mode the milter still scans, scores and adds its headers, but a
verdict that would refuse the message becomes a marked accept, and the log keeps the refused
verdict as `would_action`/`would_reply`.

What shadow mode softens, and why:

- spam rejects (the thresholds being rolled out) → accepted with the full tagging headers;
- scanner failures and oversize messages that the config would tempfail or reject → accepted
  with `X-Mailglue-Unscanned`, because a shadow deployment must never make mail flow worse than
  it was without mailglue.

What it does not soften: a virus found by clamd is still rejected (the design's "a virus
rejects the whole message" is not a threshold to observe, and delivering known malware to
watch it is never wanted), and delivery failures (Cyrus said 4xx/5xx) still reach the client,
since a 250 for mail Cyrus did not take would lose it.

Pure: no I/O, tested as a table like `verdict.decide`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from milters.scan.verdict import (
    Action,
    Infected,
    SpamCheck,
    Verdict,
    VerdictPolicy,
    VirusCheck,
    decide,
)

SHADOW_HEADER = "X-Mailglue-Shadow"


@dataclass(frozen=True)
class ShadowVerdict:
    """`applied` is what the milter does; `would` is the refused verdict it replaced, if any."""

    applied: Verdict
    would: Verdict | None

    @property
    def softened(self) -> bool:
        return self.would is not None


def lenient(policy: VerdictPolicy) -> VerdictPolicy:
    """The same policy with every refusal except a virus turned into a (marked) accept."""
    return replace(
        policy,
        reject_at=Decimal("Infinity"),
        spamd_on_failure="accept",
        clamd_on_failure="accept",
        clamd_on_oversize="accept",
    )


def shadow_decide(
    virus: VirusCheck, spam: SpamCheck, policy: VerdictPolicy, shadow: bool
) -> ShadowVerdict:
    """`decide`, and in shadow mode the accept it is replaced by (viruses excepted)."""
    real = decide(virus, spam, policy)
    if not shadow or real.action is Action.ACCEPT or isinstance(virus, Infected):
        return ShadowVerdict(real, None)
    soft = decide(virus, spam, lenient(policy))
    assert soft.action is Action.ACCEPT, soft
    note = f"would {real.action.value}: {real.reply}" if real.reply else real.action.value
    headers = (*soft.headers, (SHADOW_HEADER, note))
    return ShadowVerdict(replace(soft, headers=headers), real)
