"""Prometheus metrics of one gateway.

Each gateway owns a :class:`Metrics` with its own ``CollectorRegistry`` so that
several gateways in one process (tests, the demo) do not collide. Labels carry
agency ids, department ids, outcomes and reasons: never a subject identifier,
a token or anything personal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.errors import ConfigError

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The gateway's Prometheus metrics, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queries = Counter(
            "credit_gateway_queries",
            "Queries answered or refused, by agency, method and outcome.",
            ["agency", "method", "outcome"],
            registry=r,
        )
        # Harvesting alarms (deploy/prometheus/credit-gateway-rules.yml) read these with
        # queries_total: labels name the agency only, never a subject.
        self.queries_without_case_reference = Counter(
            "credit_gateway_queries_without_case_reference",
            "Admitted queries that named no case reference, by agency.",
            ["agency"],
            registry=r,
        )
        self.subjects_without_case_reference = Counter(
            "credit_gateway_subjects_without_case_reference",
            "Subjects an agency queried without a case reference for the first time today "
            "(local day; a bounded per-process set, so an overcount at most).",
            ["agency"],
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
        self.department_state = Gauge(
            "credit_gateway_department_state",
            "1 for the state each department is in (serving, unavailable: not reached, "
            "refused: kept out, its certificate or Describe disagrees), 0 for the others.",
            ["department", "state"],
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
            "Fields withheld from answers, by tier and reason.",
            ["tier", "reason"],
            registry=r,
        )
        self.aged_out_records = Counter(
            "credit_gateway_records_aged_out",
            "Negative records not returned because they are five or more years old (Art. 16).",
            ["department"],
            registry=r,
        )
        self.audit_records = Counter(
            "credit_gateway_audit_records",
            "Records appended durably to the audit log, by kind.",
            ["kind"],
            registry=r,
        )
        self.audit_append_latency = Histogram(
            "credit_gateway_audit_append_duration_seconds",
            "Time from handing a record to the audit log until it is durable (group commit).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_checkpoint_size = Gauge(
            "credit_gateway_audit_checkpoint_size",
            "Tree size of the latest signed checkpoint.",
            registry=r,
        )
        self.audit_checkpoint_age = Gauge(
            "credit_gateway_audit_checkpoint_age_seconds",
            "Seconds since the latest checkpoint was signed.",
            registry=r,
        )
        # Under --workers (multiprocess mode) the page shows the least fresh live worker.
        self.live_fresh = Gauge(
            "credit_gateway_live_state_fresh",
            "1 while the policy and live controls shared on PostgreSQL are confirmed within "
            "[storage] stale_after_s (or nothing is shared), 0 while queries are refused.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.policy_version = Info(
            "credit_gateway_policy", "The active policy version.", registry=r
        )
        self._cache_info: Callable[[], Mapping[str, int]] | None = None
        r.register(_DecisionCacheCollector(self))
        self.charges = Counter(
            "credit_gateway_charged_fen",
            "Fen charged for paid queries, by agency.",
            ["agency"],
            registry=r,
        )
        # Objections (Decree 631 Art. 25), set by the objection desk's poller from the store
        # every gateway process shares: labelled by department only, never a subject.
        self.objections_overdue = Gauge(
            "credit_gateway_objections_overdue",
            "Objections and repair applications unanswered after their 20-day due day,"
            " by department.",
            ["department"],
            registry=r,
        )
        self.objections_open = Gauge(
            "credit_gateway_objections_open",
            "Objections and repair applications not yet answered, by department.",
            ["department"],
            registry=r,
        )
        self.build = Info("credit_gateway_build", "Version of the running gateway.", registry=r)

    def watch_decisions(self, cache_info: Callable[[], Mapping[str, int]]) -> None:
        """Report the decider's cache hits and misses at scrape time."""
        self._cache_info = cache_info

    def serve_http(self, listen: str) -> tuple[str, Callable[[], None]]:
        """Serve ``/metrics`` on ``listen`` (HOST:PORT, port 0 picks one) in a
        thread; returns the URL and a function that stops it. Raises ConfigError
        when the address cannot be bound."""
        host, _, port = listen.rpartition(":")
        try:
            httpd, thread = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                "gateway.metrics_listen", f"cannot listen on {listen}: {exc.strerror}"
            ) from None

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)

        return f"http://{host}:{httpd.server_port}/metrics", stop


class _DecisionCacheCollector(Collector):
    """Decision cache hits and misses, read from the decider when scraped, so
    the query path pays nothing for them."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "credit_gateway_decision_cache",
            "Policy decisions served from the compiled cache (hit) or computed (miss).",
            labels=["result"],
        )
        info = self._metrics._cache_info() if self._metrics._cache_info else {}
        family.add_metric(["hit"], info.get("decision_hits", 0))
        family.add_metric(["miss"], info.get("decision_misses", 0))
        yield family
