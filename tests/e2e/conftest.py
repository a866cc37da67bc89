"""Every test here runs against the machine's real backing services."""

from __future__ import annotations

import pytest

from gridmesh.config import MeshConfig


@pytest.fixture(autouse=True, scope="session")
def _backing_services_up(backing_services: MeshConfig) -> None:
    """MariaDB, RabbitMQ, ZooKeeper and Kafka answer before the first test
    here, installed and started as ``gridmesh up`` would on a fresh machine."""
