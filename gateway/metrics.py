"""Prometheus metrics of one gateway.

Each gateway owns a :class:`Metrics` with its own ``CollectorRegistry`` so that
several gateways in one process (tests, the demo) do not collide. Labels carry
agency ids, department ids, outcomes and reasons: never a subject identifier,
a token or anything personal.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queries = Counter(
            "credit_gateway_queries",
            "Queries answered or refused, by agency and outcome.",
            ["agency", "outcome"],
            registry=r,
        )
        self.query_latency = Histogram(
            "credit_gateway_query_duration_seconds",
            "End-to-end query latency inside the gateway.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.department_requests = Counter(
            "credit_gateway_department_requests",
            "Lookups sent to departments, by department and section status.",
            ["department", "status"],
            registry=r,
        )
        self.department_latency = Histogram(
            "credit_gateway_department_duration_seconds",
            "Department lookup latency as seen by the gateway.",
            ["department"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker_state = Gauge(
            "credit_gateway_department_circuit_state",
            "Circuit breaker state per department: 0 closed, 1 open, 2 half open.",
            ["department"],
            registry=r,
        )
        self.unrequested_fields = Counter(
            "credit_gateway_unrequested_fields_dropped",
            "Fields a department returned without being asked; dropped before disclosure.",
            ["department"],
            registry=r,
        )
        self.withheld_fields = Counter(
            "credit_gateway_fields_withheld",
            "Fields withheld from answers, by reason.",
            ["reason"],
            registry=r,
        )
        self.aged_out_records = Counter(
            "credit_gateway_records_aged_out",
            "Negative records not returned because they are five or more years old (Art. 16).",
            ["department"],
            registry=r,
        )
        self.build = Info("credit_gateway_build", "Version of the running gateway.", registry=r)
