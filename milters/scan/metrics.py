"""The scan milter's Prometheus metrics, derived from the same events the JSON log gets.

Each daemon already writes one event per transaction (milter) or decision (policy) carrying
everything worth counting; the metrics are a projection of those events. So a dashboard can
never disagree with the log, and the daemons' decision code knows nothing about Prometheus.

Every collector lives in a registry of its own (not prometheus_client's global one), so a test
can build a fresh set and read exact values, and a reload never registers twice.

Metric names (all prefixed `mailglue_`):

milter
- `milter_transactions_total{action}`: transactions by the action taken (`delivered`, `accept`,
  `reject`, `tempfail`)
- `milter_shadow_would_total{would_action}`: shadow mode, refusals that were not applied
- `milter_spam_score`: histogram of spamd scores of scored messages
- `milter_backend_duration_seconds{backend}`: histogram per backend (`spamd`, `clamd`, `lmtp`)
- `milter_backend_errors_total{backend}`: a backend failed (down, timed out, broken reply)
- `milter_budget_exhausted_total`: a scan still running when the time budget ran out
- `milter_internal_errors_total`: a transaction ended in an unexpected exception (451)
- `milter_in_flight`: transactions between MAIL FROM and their reply
- `milter_config_reloads_total{result}`: SIGHUP reloads (`ok`, `refused`)

"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from milters.common.prometheus import LATENCY_BUCKETS, as_number
from milters.scan.event import Skipped, SpamResult, TransactionEvent

SCORE_BUCKETS = (-5.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 50.0, 100.0)
BACKENDS = ("spamd", "clamd", "lmtp")


class MilterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.transactions = Counter(
            "mailglue_milter_transactions", "Transactions by action taken", ["action"], registry=r
        )
        self.shadow_would = Counter(
            "mailglue_milter_shadow_would",
            "Shadow mode: refusals not applied, by the action that was not taken",
            ["would_action"],
            registry=r,
        )
        self.spam_score = Histogram(
            "mailglue_milter_spam_score", "spamd scores", buckets=SCORE_BUCKETS, registry=r
        )
        self.backend_duration = Histogram(
            "mailglue_milter_backend_duration_seconds",
            "Time spent in each backend per transaction",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "mailglue_milter_backend_errors",
            "Backend failures (down, timed out, broken reply)",
            ["backend"],
            registry=r,
        )
        self.budget_exhausted = Counter(
            "mailglue_milter_budget_exhausted",
            "Scans still running when the time budget ran out",
            registry=r,
        )
        self.internal_errors = Counter(
            "mailglue_milter_internal_errors", "Transactions ended by an exception", registry=r
        )
        self.in_flight = Gauge(
            "mailglue_milter_in_flight", "Transactions between MAIL FROM and reply", registry=r
        )
        self.reloads = Counter(
            "mailglue_milter_config_reloads", "SIGHUP config reloads", ["result"], registry=r
        )
        for backend in BACKENDS:
            self.backend_errors.labels(backend)  # present (at 0) before the first error
        for result in ("ok", "refused"):
            self.reloads.labels(result)

    def observe(self, event: TransactionEvent) -> None:
        """Count one `transaction` event."""
        self.transactions.labels(event.action or "unknown").inc()
        if event.would is not None:
            self.shadow_would.labels(event.would.action).inc()
        if event.internal_error:
            self.internal_errors.inc()
        if isinstance(event.spam, SpamResult):
            self.spam_score.observe(float(event.spam.score))
        for backend, check in (("spamd", event.spam), ("clamd", event.virus)):
            if isinstance(check, Skipped) and check.failed:
                self.backend_errors.labels(backend).inc()
                if check.out_of_time:
                    self.budget_exhausted.inc()
        if event.lmtp_failed:
            self.backend_errors.labels("lmtp").inc()
        for backend, ms in event.timings_ms.items():
            spent = as_number(ms)
            if backend in BACKENDS and spent is not None:
                self.backend_duration.labels(backend).observe(spent / 1000)
