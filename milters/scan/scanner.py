"""Runs clamd and spamd on one message, in parallel, within the transaction's time budget.

The milter thread stays in `scan()` and calls `keepalive()` (smfi_progress) while it waits,
so Postfix does not give up on us during a slow scan. Backend errors never escape: each
becomes an `Unscanned` result that the verdict turns into the configured policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TypeVar

from milters.common.jsonlog import elapsed_ms
from milters.common.sockets import AllBackendsFailed
from milters.scan.config import MilterConfig
from milters.scan.spool import Spool
from milters.scan.verdict import (
    Clean,
    Infected,
    SkipCause,
    SpamCheck,
    SpamScore,
    Unscanned,
    VirusCheck,
)
from milters.scanners import clamd, spamc

Result = TypeVar("Result", VirusCheck, SpamCheck)


BUDGET_EXHAUSTED = "time budget exhausted"  # the reason of a scan the budget cut short


@dataclass
class ScanReport:
    virus: VirusCheck
    spam: SpamCheck
    timings_ms: dict[str, float] = field(default_factory=dict)
    spamd_backend: str = ""
    clamd_backend: str = ""
    spam_precise: bool = True
    cached: bool = False  # spamd's result came from the memo (memo.py), spamd was not asked
    reused: bool = False  # some result came from the memo


@dataclass(frozen=True)
class Known:
    """Results of an earlier scan of the same message (memo.py); None: not known, ask."""

    virus: VirusCheck | None = None
    clamd_backend: str = ""
    spam: SpamScore | None = None
    spamd_backend: str = ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, AllBackendsFailed):
        return f"unreachable ({exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class Scanner:
    def __init__(self, config: MilterConfig, workers: int = 32) -> None:
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _virus(self, prefix: bytes, spool: Spool, report: ScanReport) -> VirusCheck:
        conf = self.config.virus
        started = time.monotonic()
        try:
            with spool.reader() as body:
                result = clamd.scan(conf.backends, body, conf.timeout, prefix=(prefix,))
        except clamd.ClamdSizeLimit as exc:
            return Unscanned("clamd", SkipCause.OVERSIZE, str(exc))
        except (OSError, clamd.ClamdError) as exc:
            return Unscanned("clamd", SkipCause.FAILED, _describe(exc))
        finally:
            report.timings_ms["clamd"] = elapsed_ms(started)
        report.clamd_backend = result.backend
        return Infected(result.signature) if result.signature else Clean()

    def _spam(self, prefix: bytes, spool: Spool, report: ScanReport) -> SpamCheck:
        conf = self.config.spam
        started = time.monotonic()
        try:
            with spool.reader() as body:
                result = spamc.check(
                    conf.backends, body, spool.size, conf.timeout, conf.user, prefix=(prefix,)
                )
        except (OSError, spamc.SpamdError) as exc:
            return Unscanned("spamd", SkipCause.FAILED, _describe(exc))
        finally:
            report.timings_ms["spamd"] = elapsed_ms(started)
        report.spamd_backend = result.backend
        report.spam_precise = result.precise
        return SpamScore(result.score, result.tests)

    def scan(
        self,
        prefix: bytes,
        spool: Spool,
        deadline: float,
        keepalive: Callable[[], None],
        known: Known | None = None,
    ) -> ScanReport:
        """Scan `prefix + spool` (headers + body) with both backends before `deadline`;
        a result already `known` for this message is used instead of asking again."""
        size = len(prefix) + spool.size
        report = ScanReport(virus=Clean(), spam=Unscanned("spamd", SkipCause.FAILED, "pending"))
        started = time.monotonic()
        virus_job: Future[VirusCheck] | None = None
        spam_job: Future[SpamCheck] | None = None
        if known is not None and known.virus is not None:
            report.virus, report.clamd_backend = known.virus, known.clamd_backend
            report.reused = True
        elif size > self.config.virus.max_size:
            report.virus = Unscanned(
                "clamd",
                SkipCause.OVERSIZE,
                f"message size {size} above virus.max_size {self.config.virus.max_size}",
            )
        else:
            virus_job = self._pool.submit(self._virus, prefix, spool, report)
        if known is not None and known.spam is not None:
            report.spam, report.spamd_backend = known.spam, known.spamd_backend
            report.cached = report.reused = True
        elif size > self.config.spam.max_size:
            report.spam = Unscanned(
                "spamd",
                SkipCause.OVERSIZE,
                f"not scored: message size {size} above spam.max_size {self.config.spam.max_size}",
            )
        else:
            spam_job = self._pool.submit(self._spam, prefix, spool, report)

        for job in (virus_job, spam_job):  # both are needed, so wait for each in turn
            while job is not None and not job.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job.exception(timeout=min(remaining, self.config.keepalive_interval))
                except FutureTimeout:
                    keepalive()
        if virus_job is not None:
            report.virus = _outcome(virus_job, "clamd")
        if spam_job is not None:
            report.spam = _outcome(spam_job, "spamd")
        report.timings_ms["scan"] = elapsed_ms(started)
        return report


def _outcome(job: Future[Result], backend: str) -> Result | Unscanned:
    """The job's result, or `Unscanned` if the budget ran out first (the job is abandoned)."""
    if job.done():
        return job.result()
    job.cancel()
    return Unscanned(backend, SkipCause.FAILED, BUDGET_EXHAUSTED)
