"""The Prometheus server ``gridmesh up`` runs (Debian's ``prometheus``,
installed once): its configuration, built as data from :class:`MeshConfig`.

It scrapes every gridmesh process through the file_sd targets they publish
while they run (``<state_dir>/metrics/targets/*.json``, see
:mod:`gridmesh.adapters.prometheus`), so worker nodes that join or leave are
picked up within ``refresh_interval``, and Envoy's own
``/stats/prometheus``. It evaluates the shipped alert rules
(:func:`alert_rules_path`); ``promtool check rules`` checks them in the tests.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gridmesh.config import MeshConfig

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
SCRAPE_INTERVAL = "5s"
RETENTION = "15d"


def enabled(config: MeshConfig) -> bool:
    """Whether ``up`` runs this Prometheus server."""
    return config.metrics.enabled and config.metrics.prometheus


def alert_rules_path() -> Path:
    """The shipped alert rules (``observability/alerts.yml``)."""
    return Path(str(resources.files("gridmesh.observability") / "alerts.yml"))


def rules_in_use(config: MeshConfig) -> Path:
    """``metrics.alert_rules`` if given, else the shipped rules."""
    given = config.metrics.alert_rules
    return Path(given).expanduser().resolve() if given else alert_rules_path()


def build_config(config: MeshConfig) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules_in_use(config))],
        "scrape_configs": [
            {
                "job_name": "gridmesh",
                "file_sd_configs": [{"files": [str(config.metrics_targets / "*.json")], "refresh_interval": "5s"}],
            },
            {
                "job_name": "envoy",
                "metrics_path": "/stats/prometheus",
                "static_configs": [
                    {
                        "targets": [f"{config.envoy.host}:{config.envoy.admin_port}"],
                        "labels": {"component": "envoy"},
                    }
                ],
            },
        ],
    }


def render(config: MeshConfig) -> str:
    return yaml.safe_dump(build_config(config), sort_keys=False)


def data_dir(config: MeshConfig) -> Path:
    return config.state_path / "data" / "prometheus"


def argv(config: MeshConfig) -> list[str]:
    """How ``up`` runs it: its config and time series under the state directory."""
    m = config.metrics
    return [
        PROMETHEUS,
        f"--config.file={data_dir(config) / 'prometheus.yml'}",
        f"--storage.tsdb.path={data_dir(config) / 'tsdb'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={m.host}:{m.prometheus_port}",
    ]


def url(config: MeshConfig) -> str:
    return f"http://{config.metrics.host}:{config.metrics.prometheus_port}"
