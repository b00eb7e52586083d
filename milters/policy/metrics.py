"""The policy service's Prometheus metrics, a projection of its `policy_decision` events.

Metric names:
- `policy_decisions_total{decision,reason}`: `pass`/`reject`/`defer` and the rule's reason
- `policy_decision_duration_seconds`: histogram of decision latency (LDAP and Cyrus lookups)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from milters.common.prometheus import LATENCY_BUCKETS, as_number


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
        latency = as_number(event.get("latency_ms"))
        if latency is not None:
            self.duration.observe(latency / 1000)
