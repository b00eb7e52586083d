"""The scan milter: pymilter callbacks around the scanner and the pure verdict.

Postfix calls one `ScanMilter` per SMTP connection (libmilter runs each in its own thread).
The callbacks only collect; everything is decided at end-of-message, where the milter
either rejects/tempfails with an explicit reply or removes forged headers and adds ours.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import Milter

from milters.config import MilterConfig, pymilter_socket
from milters.headers import ClientInfo, is_owned, owned_deletions, received_header, render
from milters.jsonlog import EventLog
from milters.scanner import Scanner, ScanReport
from milters.spool import Spool
from milters.verdict import (
    Action,
    Infected,
    SmtpReply,
    SpamScore,
    Unscanned,
    Verdict,
    VerdictPolicy,
    decide,
)

MILTER_FLAGS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.DELRCPT
ERROR_REPLY = SmtpReply(
    "451", "4.3.0", "Temporary error in the mail filter, please try again later"
)


@dataclass
class MilterService:
    """What all connections share: config, scanner threads, the event log."""

    config: MilterConfig
    scanner: Scanner
    log: EventLog

    @property
    def policy(self) -> VerdictPolicy:
        spam, virus = self.config.spam, self.config.virus
        return VerdictPolicy(
            tag_above=spam.tag_above,
            reject_at=spam.reject_at,
            spamd_on_failure=spam.on_failure,
            clamd_on_failure=virus.on_failure,
            clamd_on_oversize=virus.on_oversize,
        )


def bare(address: str) -> str:
    """`<Alice@Example.org>` -> `Alice@Example.org` (for logs and Received)."""
    return address.strip().removeprefix("<").removesuffix(">")


def milter_text(text: str) -> str:
    """libmilter treats `%` in reply texts as a format character."""
    return text.replace("%", "%%")


def scan_fields(report: ScanReport) -> dict[str, Any]:
    spam: dict[str, Any]
    if isinstance(report.spam, SpamScore):
        spam = {
            "score": report.spam.score,
            "tests": {name: score for name, score in report.spam.tests},
            "precise": report.spam_precise,
            "backend": report.spamd_backend,
        }
    else:
        spam = {"unscanned": report.spam.cause.value, "reason": report.spam.reason}
    virus: dict[str, Any]
    if isinstance(report.virus, Unscanned):
        virus = {"unscanned": report.virus.cause.value, "reason": report.virus.reason}
    else:
        name = report.virus.signature if isinstance(report.virus, Infected) else None
        virus = {"found": name, "backend": report.clamd_backend}
    return {"spam": spam, "virus": virus}


class ScanMilter(Milter.Base):  # type: ignore[misc]
    def __init__(self, service: MilterService) -> None:
        self.service = service
        self.client_addr = ""
        self.client_name = ""
        self.helo = ""
        self.spool: Spool | None = None
        self._new_transaction()

    # -- collecting -------------------------------------------------------------------------

    def _new_transaction(self) -> None:
        if self.spool is not None:
            self.spool.close()
        config = self.service.config
        self.spool = Spool(config.spool_memory_limit, config.spool_dir)
        self.sender = ""
        self.recipients: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.started = time.monotonic()  # reset at end-of-message: the budget starts there

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.client_name = hostname or ""
        if isinstance(hostaddr, tuple) and hostaddr:  # (ip, port) for inet and inet6
            self.client_addr = str(hostaddr[0])
        elif isinstance(hostaddr, str):
            self.client_addr = hostaddr
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def hello(self, heloname: str) -> int:
        self.helo = heloname or ""
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._new_transaction()
        self.sender = bare(mailfrom)
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def envrcpt(self, to: str, *params: str) -> int:
        self.recipients.append(to)
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def header(self, name: str, value: str) -> int:
        self.headers.append((name, value))
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def body(self, chunk: bytes) -> int:
        assert self.spool is not None
        self.spool.write(chunk)
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def abort(self) -> int:
        self._new_transaction()
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def close(self) -> int:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        return Milter.CONTINUE  # type: ignore[no-any-return]

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
        queue_id = self._macro("i")
        client = self.client_info()
        fields: dict[str, Any] = {
            "queue_id": queue_id,
            "message_id": next(
                (v.strip() for n, v in self.headers if n.lower() == "message-id"), None
            ),
            "client": {
                "addr": client.addr,
                "name": client.name,
                "helo": client.helo,
                "tls": client.tls or None,
                "sasl_user": client.auth_user or None,
            },
            "sender": self.sender,
            "recipients": [{"address": bare(r)} for r in self.recipients],
        }
        try:
            verdict, report = self._scan(queue_id, client)
            fields.update(scan_fields(report))
            fields["timings_ms"] = report.timings_ms
            fields["size"] = self._size()
            return self._apply(verdict, queue_id, fields)
        except Exception as exc:
            fields.update(
                action="tempfail",
                reason="internal error",
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(limit=8),
            )
            return self._reply(ERROR_REPLY, Milter.TEMPFAIL, fields)
        finally:
            self._new_transaction()

    def _size(self) -> int:
        assert self.spool is not None
        return self.spool.size + len(render(self.headers)) + 2

    def _scan(self, queue_id: str, client: ClientInfo) -> tuple[Verdict, ScanReport]:
        assert self.spool is not None
        config = self.service.config
        deadline = self.started + config.time_budget
        received = received_header(
            client, config.hostname, queue_id, [bare(r) for r in self.recipients], datetime.now(UTC)
        )
        kept = [(n, v) for n, v in self.headers if not is_owned(n)]
        prefix = render([received, *kept]) + b"\r\n"
        report = self.service.scanner.scan(prefix, self.spool, deadline, self.progress)
        return decide(report.virus, report.spam, self.service.policy), report

    def _apply(self, verdict: Verdict, queue_id: str, fields: dict[str, Any]) -> int:
        fields["reason"] = verdict.reason
        if verdict.action is not Action.ACCEPT:
            assert verdict.reply is not None
            status = Milter.REJECT if verdict.action is Action.REJECT else Milter.TEMPFAIL
            fields["action"] = verdict.action.value
            return self._reply(verdict.reply, status, fields)
        for name, index in owned_deletions(self.headers):
            self.chgheader(name, index, None)
        for name, value in verdict.headers:
            self.addheader(name, value)
        fields["headers_removed"] = [name for name, _ in owned_deletions(self.headers)]
        fields["headers_added"] = dict(verdict.headers)
        fields.update(action="accept", reply=f"250 queued as {queue_id or '?'}")
        self._log(fields)
        return Milter.ACCEPT  # type: ignore[no-any-return]

    def _reply(self, reply: SmtpReply, status: int, fields: dict[str, Any]) -> int:
        self.setreply(reply.code, reply.enhanced, milter_text(reply.text))
        fields["reply"] = str(reply)
        self._log(fields)
        return status

    def _log(self, fields: dict[str, Any]) -> None:
        fields.setdefault("timings_ms", {})["total"] = int((time.monotonic() - self.started) * 1000)
        self.service.log.emit("transaction", **fields)


def run(config: MilterConfig) -> None:
    """Serve until libmilter is told to stop (SIGTERM/SIGINT)."""
    log = EventLog(config.log_file)
    scanner = Scanner(config)
    service = MilterService(config, scanner, log)
    Milter.factory = lambda: ScanMilter(service)
    Milter.set_flags(MILTER_FLAGS)
    log.emit("startup", daemon="milter", listen=config.listen, config=config.source)
    try:
        Milter.runmilter("mailglue", pymilter_socket(config.listen), 600)
    finally:
        scanner.shutdown()
        log.emit("shutdown", daemon="milter")
        log.close()
