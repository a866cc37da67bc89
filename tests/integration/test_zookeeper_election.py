"""The Scheduler's leader election on the real ZooKeeper: whether this
process holds the lead is read from ZooKeeper itself (its node, of its
current session), not from what a callback said earlier."""

from __future__ import annotations

import threading
import uuid

from gridmesh.adapters.zookeeper import ZooKeeper
from gridmesh.config import MeshConfig


def test_a_contender_holds_the_lead_while_it_leads_and_not_once_its_node_is_gone(
    backing_services: MeshConfig,
) -> None:
    config = backing_services
    root = f"{config.zk_root}-election-{uuid.uuid4().hex[:8]}"
    zk = ZooKeeper(config.zookeeper, root, config.zookeeper_password)
    zk.start()
    election = zk.election("scheduler/election", "me")
    seen: list[bool] = []
    leading, done = threading.Event(), threading.Event()

    def lead() -> None:
        seen.append(election.held())
        leading.set()
        done.wait(30)
        seen.append(election.held())

    thread = threading.Thread(target=election.run, args=(lead,), daemon=True)
    try:
        assert not election.held()  # not contending yet
        thread.start()
        assert leading.wait(30)
        # Its node vanishes (as when its session expires): another session evicts it.
        other = ZooKeeper(config.zookeeper, root, config.zookeeper_password)
        other.start()
        try:
            assert other.election("scheduler/election", "other").evict(lambda identifier: identifier == "me") == ["me"]
        finally:
            other.stop()
        done.set()
        thread.join(30)
        assert seen == [True, False]
    finally:
        done.set()
        election.cancel()
        zk.stop()
