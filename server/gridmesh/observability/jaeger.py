"""The trace store ``gridmesh up --tracing`` runs: Jaeger v2, built once
from the Go module proxy (``jaeger_build/go.mod`` pins every module), with
its traces in memory.

It takes OTLP/gRPC on ``tracing.otlp_port`` and serves its UI and query API
(``/api/traces/<trace id>``) on ``tracing.ui_port``; its configuration is
built as data from :class:`MeshConfig`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gridmesh.common.errors import Unavailable
from gridmesh.config import MeshConfig

VERSION = "v1.75.0"
PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
MAX_TRACES = 100_000
"""Traces kept in memory; the oldest go first."""


def binary(config: MeshConfig) -> Path:
    return config.cache_path / "jaeger" / VERSION / "jaeger"


def ensure(config: MeshConfig, progress: Any) -> Path:
    """Jaeger's binary, built the first time (minutes: it is the
    OpenTelemetry Collector with Jaeger's storage and UI)."""
    path = binary(config)
    if path.exists():
        return path
    go = shutil.which("go")
    if go is None:
        raise Unavailable(
            "tracing needs Jaeger, which is built with Go 1.24 or newer: install Go, or set tracing.endpoint"
        )
    progress("jaeger", f"building Jaeger {VERSION} from the Go module proxy (once; a few minutes)")
    path.parent.mkdir(parents=True, exist_ok=True)
    sources = resources.files("gridmesh.observability") / "jaeger_build"
    with tempfile.TemporaryDirectory(prefix="gridmesh-jaeger-") as work:
        for name in ("go.mod", "go.sum"):
            (Path(work) / name).write_bytes((sources / name).read_bytes())
        built = path.parent / f".jaeger.{os.getpid()}"
        done = subprocess.run(
            [go, "build", "-o", str(built), PACKAGE], cwd=work, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            built.unlink(missing_ok=True)
            raise Unavailable(f"building Jaeger {VERSION} failed: {done.stderr.strip()[-2000:]}")
        os.replace(built, path)  # atomic: a build running beside this one finds a whole binary
    return path


def build_config(config: MeshConfig) -> dict[str, Any]:
    t = config.tracing
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
            },
            "telemetry": {"resource": {"service.name": "jaeger"}, "metrics": {"level": "none"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": MAX_TRACES}}}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": f"{t.host}:{t.ui_port}"},
                "grpc": {"endpoint": f"{t.host}:0"},  # its gRPC query API: unused, on any free port
            },
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"{t.host}:{t.otlp_port}"}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


def config_path(config: MeshConfig) -> Path:
    return config.state_path / "jaeger" / "jaeger.yaml"


def write_config(config: MeshConfig) -> None:
    path = config_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(build_config(config), sort_keys=False))


def argv(config: MeshConfig) -> list[str]:
    return [str(binary(config)), f"--config=file:{config_path(config)}"]


def process_env(config: MeshConfig) -> dict[str, str]:
    """Jaeger traces its own queries to an OTLP endpoint (localhost:4317
    unless told): never, here."""
    t = config.tracing
    return {"OTEL_TRACES_SAMPLER": "always_off", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{t.host}:{t.otlp_port}"}


def url(config: MeshConfig) -> str:
    """Jaeger's UI and query API."""
    return f"http://{config.tracing.host}:{config.tracing.ui_port}"


def runs_jaeger(config: MeshConfig) -> bool:
    """Whether ``up`` runs Jaeger: tracing on, to no collector of the operator's."""
    return config.tracing.enabled and config.tracing.jaeger and not config.tracing.endpoint
