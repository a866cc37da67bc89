"""SPEC §3 "a standby Scheduler can take over through ZooKeeper leader
election": a leader cut off from ZooKeeper for a whole session timeout must
assume its session (and leadership) gone, since ZooKeeper has expired it and
may have elected the standby, even though kazoo only says LOST on reconnect."""

from __future__ import annotations

import threading

from kazoo.protocol.states import KazooState

from gridmesh.adapters.zookeeper import ZooKeeper
from gridmesh.config import ZooKeeperConfig

SESSION_S = 0.2


def watched() -> tuple[ZooKeeper, threading.Event]:
    zk = ZooKeeper(ZooKeeperConfig(hosts="127.0.0.1:9", session_timeout_s=SESSION_S), "/t")
    lost = threading.Event()
    zk.on_session_lost.append(lost.set)
    return zk, lost


def test_suspended_for_a_whole_session_timeout_counts_as_a_lost_session():
    zk, lost = watched()
    zk._on_state(KazooState.SUSPENDED)  # what kazoo tells its listeners
    assert not lost.is_set()
    assert lost.wait(SESSION_S * 10)


def test_a_reconnect_within_the_session_timeout_loses_nothing():
    zk, lost = watched()
    zk._on_state(KazooState.SUSPENDED)
    zk._on_state(KazooState.CONNECTED)
    assert not lost.wait(SESSION_S * 3)


def test_a_lost_session_is_told_at_once():
    zk, lost = watched()
    zk._on_state(KazooState.LOST)
    assert lost.is_set()
