"""The scan milter's session: pymilter callbacks around the scanner and the pure verdict.

Postfix calls one `ScanMilter` per SMTP connection (libmilter runs each in its own thread).
The callbacks only collect; everything is decided at end-of-message, where the milter
either rejects/tempfails with an explicit reply or removes forged headers and adds ours.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import Milter

from lmtp_bridge import FoldAction, FoldDecision, Mode, fold
from lmtp_bridge.replies import Reply
from milters.auth.check import authenticate
from milters.auth.results import AuthAction, AuthDecision, AuthResults, decide, header_value
from milters.common.addresses import bare
from milters.common.jsonlog import elapsed_ms
from milters.scan.delivery import Deliverer
from milters.scan.event import INTERNAL_ERROR, Client, Recipient, Shadow, TransactionEvent
from milters.scan.headers import (
    ClientInfo,
    content_message_id,
    is_owned,
    no_autoreply,
    owned_deletions,
    received_header,
    render,
    render_as_received,
    with_leading_space,
)
from milters.scan.memo import scan_key
from milters.scan.scanner import ScanReport
from milters.scan.service import MilterService
from milters.scan.shadow import ShadowVerdict, shadow_decide
from milters.scan.spool import Spool, message_stream
from milters.scan.verdict import (
    Action,
    Verdict,
    for_our_user,
)

T = TypeVar("T")
Callback = TypeVar("Callback", bound=Callable[..., int])
MILTER_FLAGS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.DELRCPT
ERROR_REPLY = Reply.make(451, "4.3.0", "Temporary error in the mail filter, please try again later")


def no_reply(callback: Callback) -> Callback:
    """Postfix need not wait for this callback's answer (milter protocol SMFIP_NR_*).

    It saves a round trip per header, recipient and body chunk. Such a callback must always
    return CONTINUE and never raise: an answer Postfix does not wait for would be read as the
    answer to its next command.
    """
    return cast(Callback, Milter.noreply(callback))


def milter_text(text: str) -> str:
    """libmilter treats `%` in reply texts as a format character."""
    return text.replace("%", "%%")


# P_HDR_LEADSPC: header values exactly as sent (render_as_received), and ours added as given.
@Milter.header_leading_space
class ScanMilter(Milter.Base):  # type: ignore[misc]
    def __init__(self, service: MilterService) -> None:
        self.service = service
        self.rt = service.runtime()
        self.client_addr = ""
        self.client_name = ""
        self.helo = ""
        self.spool: Spool | None = None
        self.in_flight = False
        self._new_transaction()

    # -- collecting -------------------------------------------------------------------------

    def _new_transaction(self) -> None:
        self._close_spool()
        self._leave()
        config = self.service.config
        self.spool = Spool(config.spool_memory_limit, config.spool_dir)
        self.spool_error = ""  # why the body could not be kept; eom then tempfails
        self.sender = ""
        self.recipients: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.auth_headers: list[tuple[str, str]] = []  # Authentication-Results, ours
        self.auth_decision = AuthDecision(AuthAction.ACCEPT)
        self.auth_softened: Shadow | None = None  # shadow mode: the DMARC reject not done
        self.started = time.monotonic()  # reset at end-of-message: the budget starts there

    def _close_spool(self) -> None:
        if self.spool is not None:
            with contextlib.suppress(OSError):  # a vanished spool file is already gone
                self.spool.close()
            self.spool = None

    @no_reply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.client_name = hostname or ""
        if isinstance(hostaddr, tuple) and hostaddr:  # (ip, port) for inet and inet6
            self.client_addr = str(hostaddr[0])
        elif isinstance(hostaddr, str):
            self.client_addr = hostaddr
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @no_reply
    def hello(self, heloname: str) -> int:
        self.helo = heloname or ""
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @no_reply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._new_transaction()
        self.service.in_flight.enter()  # a SIGTERM now waits for this transaction's reply
        self.in_flight = True
        if self.service.metrics is not None:
            self.service.metrics.in_flight.inc()
        self.sender = bare(mailfrom)
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @no_reply
    def envrcpt(self, to: str, *params: str) -> int:
        self.recipients.append(to)
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @no_reply
    def header(self, name: str, value: str) -> int:
        self.headers.append((name, value))
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @no_reply
    def body(self, chunk: bytes) -> int:
        if self.spool is not None and not self.spool_error:
            try:
                self.spool.write(chunk)
            except OSError as exc:  # disk full, spool_dir gone: answered at end-of-message
                self.spool_error = f"{type(exc).__name__}: {exc}"
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def abort(self) -> int:
        self._new_transaction()
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def close(self) -> int:
        self._close_spool()
        self._leave()
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def _leave(self) -> None:
        if self.in_flight:
            self.in_flight = False
            self.service.in_flight.leave()
            if self.service.metrics is not None:
                self.service.metrics.in_flight.dec()

    # -- deciding ---------------------------------------------------------------------------

    def _macro(self, name: str) -> str:
        value = self.getsymval(name)
        return str(value) if value else ""

    def client_info(self) -> ClientInfo:
        return ClientInfo(
            addr=self.client_addr,
            name=self.client_name,
            helo=self.helo,
            tls=self._macro("{tls_version}"),
            auth_user=self._macro("{auth_authen}"),
        )

    def eom(self) -> int:
        self.started = time.monotonic()
        self.rt = self.service.runtime()
        queue_id = self._macro("i")
        client = self.client_info()
        fields = TransactionEvent(
            queue_id=queue_id,
            message_id=next(
                (v.strip() for n, v in self.headers if n.lower() == "message-id"), None
            ),
            client=Client(
                client.addr, client.name, client.helo, client.tls or None, client.auth_user or None
            ),
            # outbound: one of our users, logged in (port 587, or 25 after AUTH)
            direction="outbound" if client.auth_user else "inbound",
            sender=self.sender,
            recipients=[Recipient(bare(r)) for r in self.recipients],
        )
        try:
            if self.spool_error:
                fields.failed("spool write failed", self.spool_error)
                return self._reply(ERROR_REPLY, Milter.TEMPFAIL, fields)
            auth_started = time.monotonic()
            auth = self._authenticate(client, fields)
            auth_ms = elapsed_ms(auth_started)
            if self.auth_decision.action is AuthAction.REJECT:
                assert self.auth_decision.reply is not None
                fields.size = self._size()
                fields.timings_ms["auth"] = auth_ms
                refused = Verdict(Action.REJECT, self.auth_decision.reply, (), "dmarc")
                return self._apply(refused, queue_id, fields)
            verdict, report = self._scan(queue_id, client)
            fields.record_scan(report)
            if auth is not None:
                fields.timings_ms["auth"] = auth_ms
            fields.size = self._size()
            fields.record_shadow(verdict)
            if fields.would is None and self.auth_softened is not None:
                fields.would = self.auth_softened
            return self._apply(verdict.applied, queue_id, fields)
        except Exception as exc:
            fields.failed(
                INTERNAL_ERROR,
                f"{type(exc).__name__}: {exc}",
                traceback.format_exc(limit=8),
            )
            return self._reply(ERROR_REPLY, Milter.TEMPFAIL, fields)
        finally:
            self._new_transaction()

    def _authenticate(self, client: ClientInfo, fields: TransactionEvent) -> AuthResults | None:
        """SPF, DKIM and DMARC of a message from outside; sets our header and the DMARC action.

        Not for our own users (AUTH) or trusted hosts re-sending mail (Sieve, list copies):
        their mail is not theirs to authenticate, and a forwarded p=reject message would
        otherwise be refused on its way to the member's other address.
        """
        settings = self.rt.config.auth
        if not settings.enabled or client.auth_user or settings.trusts(client.addr):
            return None
        assert self.spool is not None
        spool = self.spool
        message = None
        if spool.size <= settings.max_size:
            with spool.reader() as body:
                message = render_as_received(self.headers) + b"\r\n" + body.read()
        from_values = [v for n, v in self.headers if n.strip().lower() == "from"]
        results = self._wait(
            lambda: authenticate(
                message, client.addr, client.helo, self.sender, from_values, settings.timeout
            )
        )
        authserv_id = settings.authserv_id or self.rt.config.hostname
        self.auth_headers = [
            ("Authentication-Results", header_value(authserv_id, results, self.sender))
        ]
        decision = decide(results, settings.dmarc_reject, settings.dmarc_quarantine)
        if decision.action is AuthAction.REJECT and self.rt.config.shadow:
            assert decision.reply is not None
            self.auth_softened = Shadow("reject", "dmarc", str(decision.reply))
            decision = decide(results, "quarantine", "quarantine")
        self.auth_decision = decision
        fields.auth = {**results.to_json(), "action": decision.action.value}
        return results

    def _size(self) -> int:
        assert self.spool is not None
        return self.spool.size + len(render_as_received(self.headers)) + 2

    def _scan(self, queue_id: str, client: ClientInfo) -> tuple[ShadowVerdict, ScanReport]:
        assert self.spool is not None
        config = self.rt.config
        self.deadline = self.started + config.time_budget
        self.received = received_header(
            client,
            config.hostname,
            queue_id,
            [bare(r) for r in self.recipients],
            datetime.now(UTC),
        )
        self.kept = [(n, v) for n, v in self.headers if not is_owned(n, v, self._authserv_id())]
        kept = render_as_received(self.kept)
        self.rendered = render([self.received]) + kept  # delivery appends ours to it
        # spamd reads our Authentication-Results too (SpamAssassin's AuthRes plugin)
        prefix = render([self.received, *self.auth_headers]) + kept + b"\r\n"
        key = None
        if self.rt.memo.ttl > 0 and len(prefix) + self.spool.size <= config.spam.max_size:
            key = scan_key(client, self.sender, self.kept, self.spool.body_digest())
        known = self.rt.memo.get(key) if key is not None else None
        report = self.rt.scanner.scan(prefix, self.spool, self.deadline, self.progress, known)
        if key is not None:
            self.rt.memo.put(key, report)
        verdict = shadow_decide(report.virus, report.spam, self.rt.policy, config.shadow)
        if client.auth_user:
            applied = for_our_user(verdict.applied, report.virus, report.spam, self.rt.policy)
            verdict = replace(verdict, applied=applied)
        return verdict, report

    def _authserv_id(self) -> str:
        return self.rt.config.auth.authserv_id or self.rt.config.hostname

    def _missing_message_id(self) -> list[tuple[str, str]]:
        """A content-derived Message-ID if the message has none, so retries dedupe in Cyrus."""
        assert self.spool is not None
        if any(n.lower() == "message-id" for n, _ in self.headers):
            return []
        mid = content_message_id(
            self.kept, self.spool.body_digest(), self.sender, self.rt.config.hostname
        )
        return [("Message-ID", mid)]

    def _apply(self, verdict: Verdict, queue_id: str, fields: TransactionEvent) -> int:
        fields.reason = verdict.reason
        if verdict.action is not Action.ACCEPT:
            assert verdict.reply is not None
            status = Milter.REJECT if verdict.action is Action.REJECT else Milter.TEMPFAIL
            fields.action = verdict.action.value
            return self._reply(verdict.reply, status, fields)
        quarantined = self.auth_decision.action is AuthAction.QUARANTINE
        flagged = any(n.lower() == "x-spam-flag" for n, _ in verdict.headers)
        ours = [
            *self.auth_headers,
            *verdict.headers,
            *(
                (n, v)
                for n, v in self.auth_decision.headers
                if not (flagged and n.lower() == "x-spam-flag")
            ),
            *no_autoreply(
                verdict.reason == "tagged" or quarantined, fields.direction == "inbound", self.kept
            ),
        ]
        added = [*ours, *self._missing_message_id()]
        if added[len(ours) :]:
            fields.message_id = added[-1][1]
        # the same for both paths: Postfix edits its copy, or Cyrus stores ours
        fields.headers_removed = [n for n, _ in owned_deletions(self.headers, self._authserv_id())]
        fields.headers_added = dict(added)
        deliverer = self.rt.deliverer
        local = [r for r in self.recipients if deliverer and deliverer.is_local(bare(r))]
        if deliverer is None or not local:
            return self._accept(added, queue_id, fields)
        return self._deliver(deliverer, local, added, queue_id, fields)

    def _accept(
        self,
        added: list[tuple[str, str]],
        queue_id: str,
        fields: TransactionEvent,
        delete: tuple[str, ...] = (),
    ) -> int:
        """Let Postfix queue the message: our headers in, forged ones out."""
        deletions = owned_deletions(self.headers, self._authserv_id())
        for name, index in deletions:
            self.chgheader(name, index, None)
        for name, value in with_leading_space(added):
            self.addheader(name, value)
        originals = {bare(r): r for r in self.recipients}
        for recipient in delete:
            self.delrcpt(originals.get(recipient, f"<{recipient}>"))
        fields.action, fields.reply = "accept", postfix_250(queue_id)
        self._log(fields)
        return Milter.ACCEPT  # type: ignore[no-any-return]

    def _deliver(
        self,
        deliverer: Deliverer,
        local: list[str],
        added: list[tuple[str, str]],
        queue_id: str,
        fields: TransactionEvent,
    ) -> int:
        """Deliver to Cyrus now; the fold rule turns its replies into the client's reply."""
        assert self.spool is not None
        prefix = self.rendered + render(added) + b"\r\n"
        started = time.monotonic()
        size = len(prefix) + self.spool.size
        eight_bit = self.spool.eight_bit or not prefix.isascii()
        with message_stream(prefix, self.spool) as stream:
            delivery = self._wait(
                lambda: deliverer.deliver(
                    self.sender,
                    [bare(r) for r in local],
                    stream,
                    self.deadline,
                    size=size,
                    eight_bit=eight_bit,
                )
            )
        fields.timings_ms["lmtp"] = elapsed_ms(started)
        for backend, why in delivery.reconnects.items():
            self.service.emit("lmtp.reconnect", queue_id=queue_id, backend=backend, reason=why)
        non_local = [bare(r) for r in self.recipients if r not in local]
        mode = Mode.STRICT if self.rt.config.delivery.strict else Mode.DEFAULT
        decision = fold(delivery.outcomes, non_local, mode)
        fields.recipients = [
            Recipient.folded(r, delivery.backends.get(r.recipient), r.recipient in delivery.lists)
            for r in decision.recipients
        ]
        fields.delivery = {"rule": decision.rule.value, "explanation": decision.explanation}
        if decision.action is FoldAction.DISCARD:
            fields.action, fields.reply = "delivered", postfix_250(queue_id)
            self._log(fields)
            return Milter.DISCARD  # type: ignore[no-any-return]
        if decision.action is FoldAction.ACCEPT:
            return self._accept(added, queue_id, fields, decision.delete_recipients)
        fields.action = decision.action.value
        status = Milter.REJECT if decision.action is FoldAction.REJECT else Milter.TEMPFAIL
        return self._reply(fold_reply(decision), status, fields)

    def _wait(self, job: Callable[[], T]) -> T:
        """Run a blocking job, sending Postfix progress keepalives until it is done.

        The job enforces the deadline itself (LMTP timeouts): a delivery in flight is never
        abandoned, since it may have reached Cyrus.
        """
        future = self.service.pool.submit(job)
        while True:
            try:
                return future.result(timeout=self.rt.config.keepalive_interval)
            except FutureTimeout:
                self.progress()

    def _reply(self, reply: Reply, status: int, fields: TransactionEvent) -> int:
        self.setreply(str(reply.code), reply.enhanced, milter_text(reply.text))
        fields.reply = str(reply)
        self._log(fields)
        return status

    def _log(self, fields: TransactionEvent) -> None:
        fields.timings_ms["total"] = elapsed_ms(self.started)
        self.service.emit_transaction(fields)


def postfix_250(queue_id: str) -> str:
    """The reply Postfix gives for an accepted (or milter-discarded) message."""
    return f"250 2.0.0 Ok: queued as {queue_id or '?'}"


def fold_reply(decision: FoldDecision) -> Reply:
    """The folded LMTP reply as the milter gives it, always with an enhanced status code."""
    assert decision.reply is not None
    reply = decision.reply
    return Reply.make(reply.code, reply.enhanced or f"{reply.code // 100}.0.0", reply.text)
