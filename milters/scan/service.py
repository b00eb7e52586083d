"""What every milter connection shares: the config, scanner, LMTP pool, log and metrics.

Kept apart from the pymilter callbacks (session.py) because it also owns reload: a SIGHUP
swaps config, scanner and deliverer as one `Runtime`, and each transaction samples exactly one.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from milters.auth.check import use_nameservers
from milters.common.configkit import ConfigError
from milters.common.jsonlog import EventLog
from milters.common.lifecycle import InFlight
from milters.scan.config import MilterConfig, load_config
from milters.scan.delivery import Deliverer
from milters.scan.event import TransactionEvent
from milters.scan.memo import ScanMemo
from milters.scan.scanner import Scanner
from milters.scan.verdict import VerdictPolicy

if TYPE_CHECKING:  # prometheus_client is loaded only when metrics are on (daemon.run)
    from milters.scan.metrics import MilterMetrics


@dataclass(frozen=True)
class Runtime:
    """What one transaction runs with, taken once at end-of-message so a reload in the middle
    never mixes two configs in one decision."""

    config: MilterConfig
    scanner: Scanner
    deliverer: Deliverer | None
    memo: ScanMemo

    @property
    def policy(self) -> VerdictPolicy:
        return verdict_policy(self.config)


def verdict_policy(config: MilterConfig) -> VerdictPolicy:
    spam, virus = config.spam, config.virus
    return VerdictPolicy(
        tag_above=spam.tag_above,
        reject_at=spam.reject_at,
        spamd_on_failure=spam.on_failure,
        clamd_on_failure=virus.on_failure,
        clamd_on_oversize=virus.on_oversize,
    )


def make_deliverer(config: MilterConfig, log: EventLog) -> Deliverer | None:
    if config.delivery.mode != "lmtp":
        return None  # delivery.mode queue: Postfix delivers

    def lists_map_problem(message: str) -> None:
        log.emit("lists.map_problem", message=message)

    return Deliverer(config.delivery, config.hostname, lists_map_problem)


@dataclass
class MilterService:
    """What all connections share: config, scanner threads, the event log, the metrics."""

    config: MilterConfig
    scanner: Scanner
    log: EventLog
    deliverer: Deliverer | None = None  # None: delivery.mode queue
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=32, thread_name_prefix="lmtp")
    )
    metrics: MilterMetrics | None = None
    in_flight: InFlight = field(default_factory=InFlight)
    memo: ScanMemo | None = None  # None: made from the config's spam.memo_* settings
    _swap: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.memo is None:
            self.memo = new_memo(self.config)
        use_nameservers(self.config.auth.nameservers, self.config.auth.timeout)

    @property
    def policy(self) -> VerdictPolicy:
        return verdict_policy(self.config)

    def runtime(self) -> Runtime:
        with self._swap:
            assert self.memo is not None
            return Runtime(self.config, self.scanner, self.deliverer, self.memo)

    def emit(self, event: str, **fields: Any) -> None:
        self.log.emit(event, **fields)

    def emit_transaction(self, event: TransactionEvent) -> None:
        """Log a transaction and count it: the metrics are a projection of the same event."""
        self.log.emit("transaction", **event.to_json())
        if self.metrics is not None:
            self.metrics.observe(event)

    def reload(self) -> bool:
        """Re-read and re-validate the config file (SIGHUP); a bad one is refused, logged,
        and the running config stays. Transactions already past MAIL FROM finish with the
        config they sampled; the old scanner and LMTP pool are released one budget later."""
        old = self.runtime()
        try:
            config = load_config(old.config.source)
        except ConfigError as exc:
            self.emit("config_reload_failed", config=old.config.source, problems=exc.problems)
            if self.metrics is not None:
                self.metrics.reloads.labels("refused").inc()
            return False
        fixed = [
            key
            for key, before, after in (
                ("milter.listen", old.config.listen, config.listen),
                ("milter.metrics_listen", old.config.metrics_listen, config.metrics_listen),
            )
            if before != after
        ]
        if fixed:
            self.emit(
                "config_reload_warning",
                config=config.source,
                message=f"{', '.join(fixed)} change only at restart; keeping the old ones",
            )
            # What runs is what the config in force says: the sockets stay where they are.
            config = replace(
                config, listen=old.config.listen, metrics_listen=old.config.metrics_listen
            )
        if config.log_file != old.config.log_file:
            self.log = EventLog(config.log_file)  # the old one is closed when unreferenced
        scanner, deliverer = Scanner(config), make_deliverer(config, self.log)
        memo = old.memo
        if (config.spam.memo_ttl, config.spam.memo_entries) != (memo.ttl, memo.max_entries):
            memo = new_memo(config)
        with self._swap:
            self.config, self.scanner, self.deliverer = config, scanner, deliverer
            self.memo = memo
            use_nameservers(config.auth.nameservers, config.auth.timeout)
        later = threading.Timer(old.config.time_budget + 5, release, (old,))
        later.daemon = True
        later.start()
        if self.metrics is not None:
            self.metrics.reloads.labels("ok").inc()
        self.emit("config_reloaded", config=config.source, shadow=config.shadow)
        return True


def new_memo(config: MilterConfig) -> ScanMemo:
    return ScanMemo(config.spam.memo_ttl, config.spam.memo_entries)


def release(old: Runtime) -> None:
    """Stop an old runtime's scanner threads and close its LMTP connections."""
    old.scanner.shutdown()
    if old.deliverer is not None:
        old.deliverer.close()
