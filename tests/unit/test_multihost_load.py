"""The multi-host bed's count after a fault (tests/multihost/load.py): pure, no bed needed."""

from __future__ import annotations

from tests.multihost.load import Attempt, Reconciliation

OK = Attempt("mx1", 250, "2.0.0 Ok: delivered")
BUSY = Attempt("mx1", 451, "4.3.0 spam filter unavailable, try again later")
UNCERTAIN = Attempt("mx1", 451, "4.4.2 ... delivery is uncertain, please try again later")
LOST_SESSION = Attempt("mx1", 0, "session lost: Connection reset by peer")
NO = Attempt("mx2", 550, "5.7.1 virus found")


def test_every_message_accepted_and_stored_once_is_clean() -> None:
    r = Reconciliation.of({"a": [OK], "b": [BUSY, OK]}, {"a": 1, "b": 1})
    assert r.row() == (2, 1, 1, 0, 1, 2, 2, 0, 0, 0)
    assert r.clean


def test_an_accepted_message_missing_from_the_mailbox_is_lost() -> None:
    r = Reconciliation.of({"a": [OK], "b": [OK]}, {"a": 1})
    assert (r.lost, r.stored, r.clean) == (1, 1, False)


def test_a_second_copy_is_counted() -> None:
    r = Reconciliation.of({"a": [LOST_SESSION, OK]}, {"a": 2}, stored_before_retry={"a"})
    assert (r.duplicates, r.deferred_but_stored, r.clean) == (1, 0, False)


def test_a_plain_4xx_for_a_message_already_stored_is_a_false_deferral() -> None:
    r = Reconciliation.of({"a": [BUSY, OK]}, {"a": 1}, stored_before_retry={"a"})
    assert (r.deferred_but_stored, r.clean) == (1, False)


def test_uncertain_4xx_and_lost_sessions_may_have_been_stored() -> None:
    attempts = {"a": [UNCERTAIN, OK], "b": [LOST_SESSION, OK]}
    r = Reconciliation.of(attempts, {"a": 1, "b": 1}, stored_before_retry={"a", "b"})
    assert (r.deferred, r.deferred_but_stored, r.clean) == (2, 0, True)


def test_a_message_refused_for_good_is_not_clean() -> None:
    r = Reconciliation.of({"a": [NO]}, {})
    assert (r.rejected, r.accepted_final, r.lost, r.clean) == (1, 0, 0, False)


def test_a_message_still_deferred_after_the_retries_is_not_clean() -> None:
    r = Reconciliation.of({"a": [BUSY, BUSY, BUSY]}, {})
    assert (r.retried, r.accepted_final, r.clean) == (1, 0, False)
