"""Mail under load on the bed, a fault in the middle, and the count afterwards.

Senders behave as other domains' MTAs do: each message goes to the first MX that answers
(a refused connection moves on to the next one at once); a 4xx, or a session that ends
without a reply to the final dot, leaves the message to be sent again once the fault is
over. The count then looks in the mailboxes over IMAPS: every message accepted must be
there exactly once, and a message that got a 4xx may be there only if a retry delivered it.
The counting is pure (`Reconciliation.of`), so it is unit-tested without the bed.
"""

from __future__ import annotations

import collections
import imaplib
import queue
import re
import smtplib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage

from tests.harness.smtp import tls_context

ACCEPTED, DEFERRED, REJECTED = "accepted", "deferred", "rejected"
SENDER = "load@example.net"


@dataclass(frozen=True)
class Letter:
    """One message of a load: its subject (unique) and recipient."""

    subject: str
    recipient: str

    def render(self) -> bytes:
        msg = EmailMessage()
        msg["From"] = SENDER
        msg["To"] = self.recipient
        msg["Subject"] = self.subject
        msg["Message-ID"] = f"<{self.subject.replace(' ', '.')}@load.example.net>"
        msg.set_content(f"{self.subject}\nA message of the multi-host load.\n")
        return msg.as_bytes()


@dataclass(frozen=True)
class Attempt:
    """What one sender saw: which MX answered, and the DATA reply (code 0: none)."""

    mx: str
    code: int
    text: str

    @property
    def outcome(self) -> str:
        if self.code // 100 == 2:
            return ACCEPTED
        return REJECTED if self.code // 100 == 5 else DEFERRED


def attempt(mxs: Sequence[str], letter: Letter, timeout: float = 120) -> Attempt:
    """One delivery attempt: MX hosts in order; the first that takes the session decides."""
    last = Attempt("-", 0, "no MX answered")
    for mx in mxs:
        try:
            smtp = smtplib.SMTP(mx, 25, timeout=timeout)
        except OSError as exc:
            last = Attempt(mx, 0, f"connect: {exc}")
            continue
        try:
            smtp.ehlo("sender.example.net")
            smtp.starttls(context=tls_context())
            smtp.ehlo("sender.example.net")
            code, text = smtp.mail(SENDER)
            if code == 250:
                code, text = smtp.rcpt(letter.recipient)
            if code == 250:
                code, text = smtp.data(letter.render())
            return Attempt(mx, code, text.decode("utf-8", "replace"))
        except smtplib.SMTPDataError as exc:
            return Attempt(mx, exc.smtp_code, str(exc.smtp_error))
        except (OSError, smtplib.SMTPException) as exc:
            return Attempt(mx, 0, f"session lost: {exc}")  # no reply: the sender tries again
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
    return last


@dataclass
class Load:
    """Every attempt per subject, in order."""

    letters: tuple[Letter, ...]
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)

    def first(self, outcome: str) -> list[Letter]:
        return [m for m in self.letters if self.attempts[m.subject][0].outcome == outcome]

    def pending(self) -> list[Letter]:
        return [m for m in self.letters if self.attempts[m.subject][-1].outcome == DEFERRED]


def rotated(mxs: Sequence[str], letter: Letter) -> list[str]:
    """MX hosts of equal preference in a per-message order, as senders spread over them."""
    start = sum(letter.subject.encode()) % len(mxs)
    return [*mxs[start:], *mxs[:start]]


def run_load(
    mxs: Sequence[str],
    letters: Sequence[Letter],
    senders: int,
    fault_after: int | None = None,
    fault: Callable[[], None] | None = None,
) -> Load:
    """Send every letter once from `senders` threads; `fault` runs (in its own thread) when
    `fault_after` letters have been handed out, so sessions are in flight while it acts."""
    load = Load(tuple(letters))
    todo: queue.Queue[Letter] = queue.Queue()
    for letter in letters:
        todo.put(letter)
    lock = threading.Lock()
    handed = 0
    fault_thread = threading.Thread(target=fault or (lambda: None), daemon=True)

    def sender() -> None:
        nonlocal handed
        while True:
            try:
                letter = todo.get_nowait()
            except queue.Empty:
                return
            with lock:
                handed += 1
                if fault is not None and handed == fault_after:
                    fault_thread.start()
            result = attempt(rotated(mxs, letter), letter)
            with lock:
                load.attempts.setdefault(letter.subject, []).append(result)

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if fault_thread.is_alive() or fault_thread.ident is not None:
        fault_thread.join()
    return load


def retry(load: Load, mxs: Sequence[str], rounds: int = 3, pause: float = 5) -> None:
    """Send again what was deferred, as the senders' queues would after the fault."""
    for _ in range(rounds):
        pending = load.pending()
        if not pending:
            return
        for letter in pending:
            load.attempts[letter.subject].append(attempt(rotated(mxs, letter), letter))
        time.sleep(pause)


def stored_subjects(imap: imaplib.IMAP4, tag: str) -> collections.Counter[str]:
    """How many copies of each subject with `tag` the selected mailbox holds."""
    status, data = imap.search(None, "SUBJECT", f'"{tag}"')
    assert status == "OK", data
    numbers = data[0].split() if data and data[0] else []
    counts: collections.Counter[str] = collections.Counter()
    if not numbers:
        return counts
    message_set = b",".join(numbers).decode()
    status, fetched = imap.fetch(message_set, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert status == "OK", fetched
    for item in fetched:
        if isinstance(item, tuple):
            found = re.search(rb"Subject: *(.+?)\r?\n", item[1], re.I)
            if found:
                counts[found.group(1).decode().strip()] += 1
    return counts


@dataclass(frozen=True)
class Reconciliation:
    """The fault suite's columns: first attempts, then after every 4xx was sent again."""

    sent: int
    accepted: int
    deferred: int
    rejected: int
    retried: int
    accepted_final: int
    stored: int
    duplicates: int
    lost: int
    deferred_but_stored: int  # a 4xx (not "uncertain") whose message was there before a retry

    @classmethod
    def of(
        cls,
        attempts: Mapping[str, Sequence[Attempt]],
        stored: Mapping[str, int],
        stored_before_retry: Iterable[str] = (),
    ) -> Reconciliation:
        firsts = {s: a[0].outcome for s, a in attempts.items()}
        false_4xx = {
            s for s, a in attempts.items() if a[0].code // 100 == 4 and "uncertain" not in a[0].text
        }
        finals = {s: a[-1].outcome for s, a in attempts.items()}
        accepted_final = [s for s, o in finals.items() if o == ACCEPTED]
        early = set(stored_before_retry)
        return cls(
            sent=len(attempts),
            accepted=sum(o == ACCEPTED for o in firsts.values()),
            deferred=sum(o == DEFERRED for o in firsts.values()),
            rejected=sum(o == REJECTED for o in firsts.values()),
            retried=sum(len(a) > 1 for a in attempts.values()),
            accepted_final=len(accepted_final),
            stored=sum(1 for s in attempts if stored.get(s, 0) > 0),
            duplicates=sum(max(0, stored.get(s, 0) - 1) for s in attempts),
            lost=sum(1 for s in accepted_final if stored.get(s, 0) == 0),
            deferred_but_stored=len(false_4xx & early),
        )

    @property
    def clean(self) -> bool:
        """Nothing lost, nothing twice, every message in the end accepted."""
        return (
            self.lost == 0
            and self.duplicates == 0
            and self.deferred_but_stored == 0
            and self.accepted_final == self.sent
            and self.stored == self.sent
        )

    def row(self) -> tuple[int, ...]:
        return (
            self.sent,
            self.accepted,
            self.deferred,
            self.rejected,
            self.retried,
            self.accepted_final,
            self.stored,
            self.duplicates,
            self.lost,
            self.deferred_but_stored,
        )


COLUMNS = (
    "sent",
    "accepted",
    "deferred",
    "rejected",
    "retried",
    "final",
    "stored",
    "dup",
    "lost",
    "4xx-but-stored",
)
