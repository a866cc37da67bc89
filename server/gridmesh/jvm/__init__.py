"""Java programs gridmesh runs, with their jars from Maven Central.

Each :class:`JarSet` is a small pom next to this module. :meth:`JarSet.ensure`
copies the pom's runtime dependencies with ``mvn dependency:copy-dependencies``
into a cache directory of their own (named after the pom's content, so a
changed pom fetches again and an unchanged one never does) and returns it.
The copy goes to a temporary directory first and is renamed into place, so a
half-finished download is never used and two processes may race harmlessly.

Maven itself comes from Debian's ``maven`` package where it is missing.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gridmesh.core.errors import Unavailable

__all__ = ["KAFKA_BROKER", "SPARK_KAFKA", "JarSet"]

log = logging.getLogger(__name__)

MVN_TIMEOUT_S = 900.0
"""Longest one ``mvn`` download may take."""


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
        return (self.directory(cache) / ".complete").is_file()

    def jars(self, cache: Path) -> list[Path]:
        """The jars, sorted by name; empty if not fetched yet."""
        if not self.present(cache):
            return []
        return sorted(self.directory(cache).glob("*.jar"))

    def ensure(self, cache: Path, progress: Callable[[str], None], install_maven: Callable[[], None]) -> bool:
        """Fetch the jars unless they are there; return whether it fetched.

        ``install_maven`` is called when ``mvn`` is not on ``PATH``. Raises
        :class:`Unavailable` with Maven's last lines when the download fails.
        """
        target = self.directory(cache)
        if self.present(cache):
            return False
        if shutil.which("mvn") is None:
            install_maven()
        mvn = shutil.which("mvn")
        if mvn is None:
            raise Unavailable("Maven (mvn) is needed to fetch the Java dependencies and was not found")
        target.parent.mkdir(parents=True, exist_ok=True)
        progress(f"fetching {self.pom.removesuffix('.pom.xml')} jars from Maven Central (once)")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            argv = [
                mvn,
                "--batch-mode",
                "--quiet",
                "--file",
                str(self.pom_path),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]
            log.info("running %s", " ".join(argv))
            try:
                done = subprocess.run(
                    argv,
                    cwd=staging,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=MVN_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                raise Unavailable(f"mvn failed: {e}") from None
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise Unavailable(f"mvn could not fetch {self.pom}:\n{tail}")
            (staging / ".complete").write_text("")
            try:
                os.rename(staging, target)
            except OSError:
                if not self.present(cache):  # another process finished first: keep its copy
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True


KAFKA_BROKER = JarSet("kafka-broker.pom.xml")
"""Apache Kafka's broker (KRaft) and its log4j2 binding."""

SPARK_KAFKA = JarSet("spark-kafka.pom.xml")
"""Spark's Kafka source (``spark-sql-kafka-0-10``) and what it needs."""
