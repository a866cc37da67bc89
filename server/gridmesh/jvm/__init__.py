"""Java programs gridmesh runs, with their jars from Maven Central.

Each :class:`JarSet` is a small pom next to this module, whose runtime
dependencies are copied (``mvn dependency:copy-dependencies``, see
:func:`gridmesh.cli.backing.fetch_jars`) into a cache directory of their
own, named after the pom's content: a changed pom fetches again, an
unchanged one never does. A directory counts only once its ``.complete``
marker is there, so a half-finished download is never used.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMPLETE", "KAFKA_BROKER", "SPARK_KAFKA", "JarSet"]

COMPLETE = ".complete"
"""Marker file of a jar directory whose download finished."""


@dataclass(frozen=True)
class JarSet:
    """The runtime jars of one pom of this package."""

    pom: str
    """File name of the pom, next to this module."""

    @property
    def pom_path(self) -> Path:
        return Path(str(importlib.resources.files(__name__).joinpath(self.pom)))

    def directory(self, cache: Path) -> Path:
        """Where the jars are (or will be) under ``cache``."""
        digest = hashlib.sha256(self.pom_path.read_bytes()).hexdigest()[:12]
        return cache / "jars" / f"{self.pom.removesuffix('.pom.xml')}-{digest}"

    def present(self, cache: Path) -> bool:
        return (self.directory(cache) / COMPLETE).is_file()

    def jars(self, cache: Path) -> list[Path]:
        """The jars, sorted by name; empty if not fetched yet."""
        if not self.present(cache):
            return []
        return sorted(self.directory(cache).glob("*.jar"))


KAFKA_BROKER = JarSet("kafka-broker.pom.xml")
"""Apache Kafka's broker (KRaft) and its log4j2 binding."""

SPARK_KAFKA = JarSet("spark-kafka.pom.xml")
"""Spark's Kafka source (``spark-sql-kafka-0-10``) and what it needs."""
