"""SPEC §3 "a standby Scheduler can take over through ZooKeeper leader
election": a leader cut off from ZooKeeper must assume its session (and
leadership) gone before ZooKeeper could expire it and elect the standby, even
though kazoo only says LOST on reconnect."""

from __future__ import annotations

import threading

from kazoo.protocol.states import KazooState

from gridmesh.adapters.zookeeper import ZooKeeper, suspension_allowance
from gridmesh.config import ZooKeeperConfig

SESSION_S = 0.2


def watched() -> tuple[ZooKeeper, threading.Event]:
    zk = ZooKeeper(ZooKeeperConfig(hosts="127.0.0.1:9", session_timeout_s=SESSION_S), "/t", "secret")
    lost = threading.Event()
    zk.on_session_lost.append(lost.set)
    return zk, lost


def test_suspended_past_the_allowance_counts_as_a_lost_session():
    zk, lost = watched()
    zk._on_state(KazooState.SUSPENDED)  # what kazoo tells its listeners
    assert not lost.is_set()
    assert lost.wait(SESSION_S * 10)


def test_the_allowance_ends_before_zookeeper_can_expire_the_session():
    # kazoo says SUSPENDED up to 2/3 of a session timeout after ZooKeeper last heard from it.
    for session_s in (4.0, 10.0, 30.0):
        assert 0 < 2 / 3 * session_s + suspension_allowance(session_s) <= 0.9 * session_s


def test_a_reconnect_within_the_session_timeout_loses_nothing():
    zk, lost = watched()
    zk._on_state(KazooState.SUSPENDED)
    zk._on_state(KazooState.CONNECTED)
    assert not lost.wait(SESSION_S * 3)


def test_a_lost_session_is_told_at_once():
    zk, lost = watched()
    zk._on_state(KazooState.LOST)
    assert lost.is_set()


def test_a_scheduler_is_known_dead_only_on_its_own_machine(monkeypatch):
    """Its pid is gone here: dead if it ran on this host, unknown if it ran on
    another host of the same kernel (containers, network namespaces with
    their own host names share a boot id but not a process table)."""
    from gridmesh.scheduler import app

    monkeypatch.setattr(app, "_running", lambda pid: False)
    here = app.election_identifier(50051)
    name, port, pid, boot = here.split(":")
    assert app.dead_on_this_machine(here)
    assert not app.dead_on_this_machine(f"{name}-elsewhere:{port}:{pid}:{boot}")
    assert not app.dead_on_this_machine(f"{name}:{port}:{pid}:another-boot")
