"""The fold rule, row by row, in both modes, with 0/1/many recipients."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lmtp_bridge.fold import FoldAction, Mode, RecipientOutcome, Rule, fold
from lmtp_bridge.outcome import NotAttempted, NotAttemptedReason, Outcome
from lmtp_bridge.replies import Reply

D = Reply(250, "2.1.5", ("Ok",))
T = Reply(452, "4.2.2", ("Over quota",))
P = Reply(550, "5.1.1", ("User unknown",))
P2 = Reply(552, "5.2.2", ("Mailbox full",))
DOWN = NotAttempted(NotAttemptedReason.UNREACHABLE, "unix:/run/lmtp: connection refused")
SLOW = NotAttempted(NotAttemptedReason.TIMEOUT, "no reply within 30s")
NOROUTE = NotAttempted(NotAttemptedReason.NO_ROUTE, "backend lookup failed")

DEFAULT, STRICT = Mode.DEFAULT, Mode.STRICT
BOTH = (DEFAULT, STRICT)
TEMPFAIL, NDT = FoldAction.TEMPFAIL, Rule.NOTHING_DELIVERED_TRANSIENT


@dataclass(frozen=True)
class Row:
    name: str
    local: list[Outcome]  # recipient i is l{i}@local
    non_local: int
    modes: tuple[Mode, ...]
    action: FoldAction
    rule: Rule
    code: int | None  # reply code, None when Postfix answers 250 itself
    deleted: list[int]  # indexes of deleted local recipients


ROWS = [
    # 1: nothing local
    Row("no local, no other", [], 0, BOTH, FoldAction.ACCEPT, Rule.NO_LOCAL, None, []),
    Row("no local, others", [], 2, BOTH, FoldAction.ACCEPT, Rule.NO_LOCAL, None, []),
    # 2: all delivered, nothing to relay
    Row("1 delivered", [D], 0, BOTH, FoldAction.DISCARD, Rule.ALL_DELIVERED, None, []),
    Row("3 delivered", [D, D, D], 0, BOTH, FoldAction.DISCARD, Rule.ALL_DELIVERED, None, []),
    # 3: all delivered, others remain
    Row("1 delivered+1", [D], 1, BOTH, FoldAction.ACCEPT, Rule.ALL_DELIVERED_NONLOCAL, None, [0]),
    Row(
        "2 delivered+3",
        [D, D],
        3,
        BOTH,
        FoldAction.ACCEPT,
        Rule.ALL_DELIVERED_NONLOCAL,
        None,
        [0, 1],
    ),
    # 4: nothing delivered, something transient
    Row("1 4xx", [T], 0, BOTH, TEMPFAIL, NDT, 451, []),
    Row("1 down", [DOWN], 0, BOTH, TEMPFAIL, NDT, 451, []),
    Row("1 timeout", [SLOW], 0, BOTH, TEMPFAIL, NDT, 451, []),
    Row("1 noroute", [NOROUTE], 0, BOTH, TEMPFAIL, NDT, 451, []),
    Row("4xx+down", [T, DOWN], 0, BOTH, TEMPFAIL, NDT, 451, []),
    Row("4xx+others", [T], 2, BOTH, TEMPFAIL, NDT, 451, []),
    Row("4xx+5xx", [P, T], 0, BOTH, TEMPFAIL, NDT, 451, []),
    Row("5xx+down+o", [P, DOWN], 1, BOTH, TEMPFAIL, NDT, 451, []),
    # 5: all permanent, nothing to relay
    Row("1 5xx", [P], 0, BOTH, FoldAction.REJECT, Rule.ALL_PERMANENT, 550, []),
    Row("3 5xx", [P, P, P], 0, BOTH, FoldAction.REJECT, Rule.ALL_PERMANENT, 550, []),
    Row("5xx differ", [P2, P], 0, BOTH, FoldAction.REJECT, Rule.ALL_PERMANENT, 552, []),
    # 6: all permanent, others remain
    Row("5xx+o", [P], 1, (DEFAULT,), FoldAction.ACCEPT, Rule.ALL_PERMANENT_NONLOCAL, None, []),
    Row("5xx+o strict", [P], 1, (STRICT,), FoldAction.REJECT, Rule.ALL_PERMANENT_NONLOCAL, 550, []),
    # 7: mixed
    Row("2xx+4xx", [D, T], 0, (DEFAULT,), FoldAction.ACCEPT, Rule.MIXED, None, [0]),
    Row("2xx+5xx", [P, D], 0, (DEFAULT,), FoldAction.ACCEPT, Rule.MIXED, None, [1]),
    Row("2xx+down", [D, DOWN, D], 0, (DEFAULT,), FoldAction.ACCEPT, Rule.MIXED, None, [0, 2]),
    Row("2xx+4xx+5xx+o", [D, T, P], 2, (DEFAULT,), FoldAction.ACCEPT, Rule.MIXED, None, [0]),
    Row("2xx+4xx strict", [D, T], 0, (STRICT,), FoldAction.TEMPFAIL, Rule.MIXED, 451, []),
    Row("2xx+5xx strict", [D, P], 0, (STRICT,), FoldAction.TEMPFAIL, Rule.MIXED, 451, []),
    Row("2xx+5xx+o strict", [D, P], 1, (STRICT,), FoldAction.TEMPFAIL, Rule.MIXED, 451, []),
]

EXPECTED_LOCAL_OUTCOME = {
    FoldAction.DISCARD: RecipientOutcome.LEFT_TO_QUEUE,
    FoldAction.ACCEPT: RecipientOutcome.LEFT_TO_QUEUE,
    FoldAction.TEMPFAIL: RecipientOutcome.DEFERRED,
    FoldAction.REJECT: RecipientOutcome.REJECTED,
}


def cases() -> list[tuple[Row, Mode]]:
    return [(row, mode) for row in ROWS for mode in row.modes]


@pytest.mark.parametrize(("row", "mode"), cases(), ids=lambda v: getattr(v, "name", str(v)))
def test_table(row: Row, mode: Mode) -> None:
    local = {f"l{i}@local": o for i, o in enumerate(row.local)}
    others = [f"o{i}@remote" for i in range(row.non_local)]
    decision = fold(local, others, mode)

    assert decision.action is row.action
    assert decision.rule is row.rule
    assert (decision.reply.code if decision.reply else None) == row.code
    assert decision.delete_recipients == tuple(f"l{i}@local" for i in row.deleted)
    if decision.action in (FoldAction.TEMPFAIL, FoldAction.REJECT):
        assert decision.reply is not None
        assert decision.reply.text
        assert decision.delete_recipients == ()
    else:
        assert decision.reply is None

    # bookkeeping: every recipient once, locals first, in order
    logged = [r.recipient for r in decision.recipients]
    assert logged == [*local, *others]
    rest = EXPECTED_LOCAL_OUTCOME[decision.action]
    for entry in decision.recipients:
        if entry.local:
            outcome = local[entry.recipient]
            assert entry.reply == str(outcome)
            delivered = isinstance(outcome, Reply) and outcome.code < 300
            assert entry.outcome is (RecipientOutcome.DELIVERED if delivered else rest)
        else:
            assert entry.reply == ""
            assert entry.outcome is rest
    assert decision.explanation


def test_every_rule_is_covered_by_the_table() -> None:
    assert {row.rule for row in ROWS} == set(Rule)
    assert {row.action for row in ROWS} == set(FoldAction)


def test_all_5xx_uses_cyrus_code_and_text() -> None:
    decision = fold({"a@x": P}, [])
    assert str(decision.reply) == "550 5.1.1 User unknown"


def test_all_5xx_same_error_many_recipients_is_verbatim() -> None:
    decision = fold({"a@x": P, "b@x": P}, [])
    assert str(decision.reply) == "550 5.1.1 User unknown"


def test_all_5xx_different_errors_pick_the_first_and_say_so() -> None:
    decision = fold({"a@x": P2, "b@x": P}, [])
    assert decision.reply is not None
    assert decision.reply.code == 552 and decision.reply.enhanced == "5.2.2"
    assert decision.reply.text.startswith("Mailbox full (this is the error for <a@x>")
    assert "different errors" in decision.reply.text


def test_5xx_without_enhanced_code_gets_a_generic_one() -> None:
    decision = fold({"a@x": Reply(554, None, ("Transaction failed",))}, [])
    assert str(decision.reply) == "554 5.0.0 Transaction failed"


def test_strict_reject_with_non_local_says_the_whole_message_is_refused() -> None:
    decision = fold({"a@x": P}, ["b@remote"], STRICT)
    assert decision.reply is not None
    assert "whole message refused" in decision.reply.text
    assert decision.recipients[1].outcome is RecipientOutcome.REJECTED


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (DOWN, "451 4.4.1 Mailbox server unreachable; nothing was delivered"),
        (SLOW, "451 4.4.1 Mailbox server did not answer in time; nothing was delivered"),
        (NOROUTE, "451 4.4.4 No mailbox server known for <a@x>; nothing was delivered"),
        (
            NotAttempted(NotAttemptedReason.UNREACHABLE, "reset", maybe_delivered=True),
            "451 4.4.1 Mailbox server connection lost after the message was sent; "
            "delivery is uncertain",
        ),
        (
            NotAttempted(NotAttemptedReason.TIMEOUT, "", maybe_delivered=True),
            "451 4.4.1 Mailbox server did not answer in time after the message was sent; "
            "delivery is uncertain",
        ),
        (T, "451 4.2.2 Mailbox server deferred <a@x>: 452 4.2.2 Over quota; nothing was"),
        (Reply(421, None, ("shutting down",)), "451 4.3.0 Mailbox server deferred <a@x>: 421"),
    ],
)
def test_tempfail_texts(outcome: Outcome, expected: str) -> None:
    decision = fold({"a@x": outcome}, [])
    assert str(decision.reply).startswith(expected)
    assert str(decision.reply).endswith("please try again later")


def test_tempfail_many_says_first_is_shown() -> None:
    local: dict[str, Outcome] = {"a@x": DOWN, "b@x": DOWN, "c@x": P}
    decision = fold(local, [])
    assert decision.reply is not None
    assert decision.reply.text.endswith("(2 recipients deferred, first shown)")
    assert "1 refused permanently" in decision.explanation


def test_strict_mixed_text_explains_the_retry() -> None:
    decision = fold({"a@x": D, "b@x": P, "c@x": D}, [], STRICT)
    text = str(decision.reply)
    assert text.startswith("451 4.3.0 Partial delivery refused (strict mode): 2 of 3")
    assert "<b@x> failed: 550 5.1.1 User unknown" in text
    assert "duplicates" in text
    assert decision.recipients[0].outcome is RecipientOutcome.DELIVERED
    assert decision.recipients[1].outcome is RecipientOutcome.DEFERRED


def test_strict_mixed_with_transient_keeps_its_enhanced_code() -> None:
    decision = fold({"a@x": D, "b@x": T}, [], STRICT)
    assert decision.reply is not None and decision.reply.enhanced == "4.2.2"


def test_backend_text_is_sanitised_and_bounded() -> None:
    nasty = Reply(550, "5.7.1", ("bad\x00\x07" + "x" * 1000,))
    decision = fold({"a@x": nasty}, [])
    assert decision.reply is not None
    assert decision.reply.text.isprintable()
    assert len(str(decision.reply)) < 512


def test_input_as_pairs_and_validation() -> None:
    decision = fold([("a@x", D), ("b@x", T)], ["c@y", "c@y"])
    assert [r.recipient for r in decision.recipients] == ["a@x", "b@x", "c@y"]
    with pytest.raises(ValueError, match="given twice"):
        fold([("a@x", D), ("a@x", T)], [])
    with pytest.raises(ValueError, match="both local and non-local"):
        fold({"a@x": D}, ["a@x"])


def test_mode_from_config_string() -> None:
    assert fold({"a@x": D, "b@x": T}, [], Mode("strict")).action is FoldAction.TEMPFAIL


def test_as_dict_is_json_ready() -> None:
    import json

    local: dict[str, Outcome] = {"a@x": D, "b@x": DOWN}
    decision = fold(local, ["c@y"])
    data = json.loads(json.dumps(decision.as_dict()))
    assert data["action"] == "accept"
    assert data["rule"] == "mixed"
    assert data["reply"] is None
    assert data["delete_recipients"] == ["a@x"]
    assert data["recipients"][1] == {
        "recipient": "b@x",
        "local": True,
        "outcome": "left-to-queue",
        "reply": "not attempted: backend unreachable (unix:/run/lmtp: connection refused)",
    }
