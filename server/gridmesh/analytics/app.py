"""Composition root of the analytics job: ``python -m gridmesh.analytics``.

Wires the MySQL sink and the Spark job from the mesh configuration and runs
until SIGTERM/SIGINT. The Spark driver runs in this process's JVM child
(local master by default), with Spark's Kafka source on its classpath
(jars fetched from Maven Central, see :mod:`gridmesh.jvm`); any Python
worker Spark starts uses this interpreter (``PYSPARK_PYTHON``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path

from gridmesh.adapters import kafka, prometheus
from gridmesh.adapters.kafka import EndOffsets
from gridmesh.adapters.mysql import MySQL
from gridmesh.analytics._sink import LifecycleSink, SinkSettings
from gridmesh.analytics.status import status_path
from gridmesh.common.errors import GridmeshError
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.access import PeerRole
from gridmesh.core.lifecycle import LifecycleKind
from gridmesh.jvm import SPARK_KAFKA
from gridmesh.observability import metrics
from gridmesh.observability.logs import configure_logging

log = logging.getLogger(__name__)


def sink_settings(config: MeshConfig) -> SinkSettings:
    a = config.analytics
    return SinkSettings(window_s=a.window_s, lateness_s=a.watermark_s, retention_s=a.retention_s)


def topics(config: MeshConfig) -> list[str]:
    """The life-cycle topics of the mesh, as the Scheduler and workers name them."""
    return [config.topic(kind.value) for kind in LifecycleKind]


def prepare_environment(config: MeshConfig, env: MutableMapping[str, str]) -> None:
    """What pyspark needs in the environment of the JVM it launches."""
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    if config.analytics.spark_master.startswith("local"):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def spark_kafka_jars(config: MeshConfig) -> list[Path]:
    """The jars of Spark's Kafka source that pyspark does not ship itself
    (pyspark's own copy of a shared library, e.g. lz4 or snappy, wins).
    Fetched from Maven Central first if missing (``gridmesh up`` fetches
    them before it starts the job; a job started by a supervisor of its own
    fetches them here)."""
    import pyspark

    from gridmesh.cli.backing import ensure_spark_kafka

    ensure_spark_kafka(config, lambda component, message: log.info("%s", message))
    jars = SPARK_KAFKA.jars(config.cache_path)
    shipped = {_artifact(jar.name) for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    return [jar for jar in jars if _artifact(jar.name) not in shipped]


def _artifact(jar_name: str) -> str:
    """``kafka-clients-3.9.2.jar`` → ``kafka-clients``."""
    return re.sub(r"-\d+\.[^-]*(-.*)?\.jar$", "", jar_name)


def kafka_source_tls(config: MeshConfig) -> dict[str, str]:
    """The Kafka source's (a Java client's) mutual TLS as the ``analytics``
    role: PEM files, which the driver and the executors read (shared
    storage on a cluster, as the checkpoint)."""
    if not config.kafka_tls:
        return {}
    settings = {"security.protocol": "SSL", **kafka.java_tls_settings(config.tls_path, PeerRole.ANALYTICS)}
    return {f"kafka.{name}": value for name, value in settings.items()}


def run(config: MeshConfig, stop: threading.Event) -> int:
    from gridmesh.analytics._job import AnalyticsJob, JobSettings  # imports pyspark

    a = config.analytics
    sink = LifecycleSink(MySQL(config.mysql_login("analytics"), config.database("analytics")), sink_settings(config))
    sink.setup()
    settings = JobSettings(
        bootstrap_servers=config.kafka.bootstrap_servers,
        topics=topics(config),
        checkpoint=config.analytics_checkpoint,
        scratch=config.analytics_dir,
        status_path=status_path(config),
        master=a.spark_master,
        driver_memory=a.driver_memory,
        trigger_interval_s=a.trigger_interval_s,
        max_batch_messages=a.max_batch_messages,
        app_name=f"gridmesh-analytics-{config.namespace}" if config.namespace else "gridmesh-analytics",
        jars=tuple(spark_kafka_jars(config)),
        stall_after_s=a.stall_after_s,
        kafka_options=kafka_source_tls(config),
    )
    ends = EndOffsets(kafka.client_settings(config, PeerRole.ANALYTICS), topics(config))
    metrics.serve(metrics.ANALYTICS)
    endpoint = prometheus.start(config, "analytics", os.getpid())
    try:
        return AnalyticsJob(settings, sink, ends.read).run(stop)
    finally:
        if endpoint is not None:
            asyncio.run(endpoint.close())
        ends.close()
        sink.close()


def main(argv: list[str] | None = None) -> None:
    config = load_config(os.environ)
    configure_logging(config.log_level, config.log_format, "analytics")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    prepare_environment(config, os.environ)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: stopping the streaming query", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = run(config, stop)
    except GridmeshError as e:
        log.error("analytics job cannot run: %s", e.message)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
