"""Prometheus metrics, derived from the same events the JSON log gets.

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

policy
- `policy_decisions_total{decision,reason}`: `pass`/`reject`/`defer` and the rule's reason
- `policy_decision_duration_seconds`: histogram of decision latency (LDAP and Cyrus lookups)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from milters.backend import InetAddress

SCORE_BUCKETS = (-5.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 50.0, 100.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BUDGET_EXHAUSTED = "time budget exhausted"
LMTP_FAILURES = ("not attempted: backend unreachable", "not attempted: backend timeout")


def _number(value: object) -> float | None:
    """A score or duration as logged: int, float, or the Decimal the milter scores in."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


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
        for backend in ("spamd", "clamd", "lmtp"):
            self.backend_errors.labels(backend)  # present (at 0) before the first error
        for result in ("ok", "refused"):
            self.reloads.labels(result)

    def observe(self, event: Mapping[str, Any]) -> None:
        """Count one `transaction` event, as logged."""
        self.transactions.labels(str(event.get("action", "unknown"))).inc()
        if event.get("would_action"):
            self.shadow_would.labels(str(event["would_action"])).inc()
        if event.get("reason") == "internal error":
            self.internal_errors.inc()
        spam = event.get("spam") or {}
        score = _number(spam.get("score"))
        if score is not None:
            self.spam_score.observe(score)
        for backend, check in (("spamd", spam), ("clamd", event.get("virus") or {})):
            if check.get("unscanned") == "failed":
                self.backend_errors.labels(backend).inc()
                if check.get("reason") == BUDGET_EXHAUSTED:
                    self.budget_exhausted.inc()
        recipients = event.get("recipients") or []
        if any(str(r.get("reply", "")).startswith(LMTP_FAILURES) for r in recipients):
            self.backend_errors.labels("lmtp").inc()
        for backend, ms in (event.get("timings_ms") or {}).items():
            spent = _number(ms)
            if backend in ("spamd", "clamd", "lmtp") and spent is not None:
                self.backend_duration.labels(backend).observe(spent / 1000)


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "mailglue_policy_decisions",
            "Policy decisions by outcome and reason",
            ["decision", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mailglue_policy_decision_duration_seconds",
            "Time to decide one policy request",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, event: Mapping[str, Any]) -> None:
        """Count one `policy_decision` event, as logged."""
        self.decisions.labels(str(event.get("decision")), str(event.get("reason"))).inc()
        latency = _number(event.get("latency_ms"))
        if latency is not None:
            self.duration.observe(latency / 1000)


def serve(address: InetAddress, registry: CollectorRegistry) -> threading.Thread:
    """Serve /metrics over HTTP in a daemon thread (prometheus_client's own server)."""
    _, thread = start_http_server(address.port, address.host, registry=registry)
    return thread
