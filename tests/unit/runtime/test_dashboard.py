"""The Grafana dashboard only queries metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.runtime.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "credit-gateway.json"


def test_dashboard_queries_exported_metrics() -> None:
    exported = set()
    for family in Metrics().registry.collect():
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
    # Histograms and counters show their samples only once observed; add the suffixes.
    exported |= {f"{n}_{s}" for n in list(exported) for s in ("bucket", "count", "sum", "total")}
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    used = {
        name
        for p in panels
        for t in p["targets"]
        for name in re.findall(r"\b(credit_gateway_[a-z_]+)", t["expr"])
    }
    assert used, "the dashboard queries nothing"
    assert used <= exported, sorted(used - exported)
