"""The Grafana dashboard in docs/ is current, and every query in it names
only metrics the mesh exports (so it cannot rot as metrics change)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

from prometheus_client.metrics import MetricWrapperBase

from gridmesh.grpc_support import metrics as grpc_metrics
from gridmesh.observability import metrics

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboard", ROOT / "tools" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exported() -> set[str]:
    """Every sample name the mesh's processes export."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for module in (metrics, grpc_metrics):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                names |= {value._name + suffix for suffix in suffixes[str(value._type)]}
    return names


def test_the_dashboard_in_docs_is_current():
    tool = _tool()
    assert (ROOT / "docs" / "grafana-dashboard.json").read_text() == tool.render(), "run tools/dashboard.py"


def test_every_query_names_only_exported_metrics_and_every_panel_has_one():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exported = _exported()
    assert "gridmesh_task_events_total" in exported and "gridmesh_task_run_seconds_bucket" in exported
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\b(?:gridmesh|grpc_server)_[a-z_]+", target["expr"]))
            assert used and used <= exported, (panel["title"], used - exported)
