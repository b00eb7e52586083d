"""Concurrent SMTP senders that remember, per message, the final reply they got.

Postfix's smtp-source is the issue's suggested load tool, but it only prints totals; the
reconciliation needs to know, for every single message, whether the sender was told 250
(we now own it), 4xx (the sender keeps it and retries) or 5xx (the sender bounces it). So the
senders here are Python threads, one SMTP session per message, each message with a unique
Message-ID that the IMAP census looks for afterwards.
"""

from __future__ import annotations

import itertools
import smtplib
import threading
import time
from dataclasses import dataclass, field

from tests.harness.messages import build_message
from tests.harness.smtp import NO_REPLY, Reply, send

SENDER = "loadgen@relay.test"


@dataclass
class Attempt:
    """One SMTP transaction for a message: the reply that decided its fate, and when."""

    reply: Reply
    at: float


@dataclass
class Message:
    index: int
    recipient: str
    message_id: str
    data: bytes
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def final(self) -> Reply:
        return self.attempts[-1].reply

    @property
    def first(self) -> Reply:
        return self.attempts[0].reply

    @property
    def ever_accepted(self) -> bool:
        return any(a.reply.code // 100 == 2 for a in self.attempts)


def deciding_reply(address: tuple[str, int], message: Message, timeout: float) -> Reply:
    """The reply that tells a sender what happened: the first refusal, else DATA's reply."""
    try:
        tx = send(address, SENDER, [message.recipient], message.data, timeout=timeout)
    except (OSError, smtplib.SMTPException) as exc:  # refused connection, 421 banner...
        code = getattr(exc, "smtp_code", NO_REPLY)
        return Reply(int(code), f"{type(exc).__name__}: {exc}")
    if tx.mail.code // 100 != 2:
        return tx.mail
    refused = [r for r in tx.rcpt.values() if r.code // 100 != 2]
    if refused:
        return refused[0]
    assert tx.data is not None
    return tx.data


class Load:
    """`clients` threads sending fresh messages round-robin to `recipients` until stopped.

    A client that is told 4xx waits `backoff` seconds before its next message, like a real
    MTA's queue would: otherwise an outage of a few seconds turns into thousands of instant
    tempfails and the run measures nothing but the outage.
    """

    def __init__(
        self,
        address: tuple[str, int],
        tag: str,
        recipients: list[str],
        clients: int = 20,
        backoff: float = 1.5,
        timeout: float = 150,
    ) -> None:
        self.address = address
        self.tag = tag
        self.recipients = recipients
        self.clients = clients
        self.backoff = backoff
        self.timeout = timeout
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.accepted = 0

    def make(self, index: int) -> Message:
        recipient = self.recipients[index % len(self.recipients)]
        message_id = f"<{self.tag}.{index}@relay.test>"
        data = build_message(
            f"load message {index} of run {self.tag}",
            recipient=recipient,
            subject=f"fault run {self.tag} #{index}",
            message_id=message_id,
        )
        return Message(index, recipient, message_id, data)

    def start(self) -> None:
        for n in range(self.clients):
            t = threading.Thread(target=self._client, name=f"load-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop starting new messages and wait for the ones in flight to get their reply."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 10)

    def _client(self) -> None:
        while not self._stop.is_set():
            message = self.make(next(self._counter))
            with self._lock:
                self.messages.append(message)
            reply = deciding_reply(self.address, message, self.timeout)
            message.attempts.append(Attempt(reply, time.monotonic()))
            if reply.code // 100 == 2:
                with self._lock:
                    self.accepted += 1
            elif reply.code // 100 == 4 or reply.code == NO_REPLY:
                self._stop.wait(self.backoff)

    def wait_accepted(self, count: int, timeout: float) -> None:
        """Block until `count` messages in total got 250 (the load is really flowing)."""
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {self.accepted} of {count} messages accepted after {timeout}s: "
                    f"{self.summary()}"
                )
            time.sleep(0.05)

    def summary(self) -> str:
        with self._lock:
            finals = [m.attempts[-1].reply for m in self.messages if m.attempts]
        codes: dict[str, int] = {}
        for r in finals:
            key = f"{r.code} {r.text[:50]}"
            codes[key] = codes.get(key, 0) + 1
        return ", ".join(f"{n}x {k}" for k, n in sorted(codes.items(), key=lambda kv: -kv[1]))

    def retry_unaccepted(self, clients: int = 10, rounds: int = 3, pause: float = 1.0) -> int:
        """What a sender's queue does once the fault is over: resend every 4xx, same bytes.

        Same bytes means the same Message-ID and Date, so a message that reached Cyrus before
        the fault cut its 250 short is dropped there as a duplicate and still answered 250.
        Returns how many messages were retried.
        """
        retried: set[int] = set()
        for _ in range(rounds):
            pending = [m for m in self.messages if m.attempts and _retryable(m.final)]
            if not pending:
                break
            retried.update(m.index for m in pending)
            chunks = [pending[i::clients] for i in range(clients)]
            threads = [
                threading.Thread(target=self._resend, args=(chunk,), daemon=True)
                for chunk in chunks
                if chunk
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=self.timeout * len(pending) + 10)
            time.sleep(pause)
        return len(retried)

    def _resend(self, chunk: list[Message]) -> None:
        for message in chunk:
            reply = deciding_reply(self.address, message, self.timeout)
            message.attempts.append(Attempt(reply, time.monotonic()))


def _retryable(reply: Reply) -> bool:
    return reply.code // 100 == 4 or reply.code == NO_REPLY
