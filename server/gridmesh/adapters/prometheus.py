"""Prometheus, both ways: a process's ``/metrics`` endpoint, published as a
file_sd target while the process runs, and reading the targets back (for
``gridmesh status`` and the bench).

Each process serves prometheus-client's registry on a free port of
``metrics.host`` and writes ``<targets dir>/<name>.json`` (Prometheus's
file_sd format: ``[{"targets": ["host:port"], "labels": {...}}]``) once the
port is known, atomically; a clean shutdown removes it. A target file left
behind by a killed process names a port nothing answers on: Prometheus shows
that target down (its ``up`` is 0), which is what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from gridmesh.config import MeshConfig

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Target:
    """One process's metrics endpoint, as its target file names it."""

    name: str
    address: str
    labels: Mapping[str, str]

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"


class MetricsEndpoint:
    """The ``/metrics`` endpoint of this process and its target file."""

    def __init__(self, config: MeshConfig, component: str, instance: str) -> None:
        """``component`` (``scheduler``, ``worker``, …) and ``instance``
        (e.g. the gRPC port) name the target file ``<component>-<instance>``."""
        self.name = f"{component}-{instance}"
        self._dir = config.metrics_targets
        self._file = self._dir / f"{self.name}.json"
        server, thread = start_http_server(0, addr=config.metrics.host)
        self._server, self._thread = server, thread
        self.address = f"{config.metrics.host}:{server.server_port}"
        labels = {"component": component, "gridmesh_instance": self.name}
        if config.namespace:
            labels["namespace"] = config.namespace
        _write_atomic(self._file, [{"targets": [self.address], "labels": labels}])
        log.info("metrics on http://%s/metrics", self.address)

    async def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file.unlink()
        await asyncio.to_thread(self._server.shutdown)  # waits for the serving thread's next poll
        self._server.server_close()


def start(config: MeshConfig, component: str, instance: str | int) -> MetricsEndpoint | None:
    """This process's endpoint, or ``None`` when metrics are turned off."""
    return MetricsEndpoint(config, component, str(instance)) if config.metrics.enabled else None


def _write_atomic(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def targets(config: MeshConfig) -> list[Target]:
    """Every target file under the targets directory (unreadable ones are skipped)."""
    found = []
    for path in sorted(config.metrics_targets.glob("*.json")):
        try:
            groups = json.loads(path.read_text())
            for group in groups:
                for address in group["targets"]:
                    found.append(Target(path.stem, address, dict(group.get("labels", {}))))
        except (OSError, ValueError, KeyError, TypeError):
            log.debug("skipping unreadable target file %s", path, exc_info=True)
    return found


def scrape(target: Target) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    """``(sample name, sorted labels) -> value`` of one endpoint, or ``None``
    when it does not answer."""
    try:
        with urllib.request.urlopen(target.url, timeout=SCRAPE_TIMEOUT_S) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def summed(
    scrapes: Iterable[Mapping[tuple[str, tuple[tuple[str, str], ...]], float] | None], name: str, by: str
) -> dict[str, float]:
    """Samples called ``name`` across ``scrapes``, summed by the label ``by``."""
    totals: dict[str, float] = {}
    for samples in scrapes:
        for (sample, labels), value in (samples or {}).items():
            if sample == name:
                key = dict(labels).get(by, "")
                totals[key] = totals.get(key, 0.0) + value
    return totals
