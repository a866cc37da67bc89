"""Hosts made of Linux network namespaces: each has its own address, ports
and loopback, joined to the others by a veth pair on one bridge, as machines
on one switch. Processes of a host run under ``ip netns exec``; they share
this machine's file system, CPUs and process table, nothing of the network.

What real hosts suffer, done for real:

- :meth:`Host.cut` takes its cable out (its veth down on the bridge side):
  nothing reaches it, nothing leaves it, its processes run on;
- :meth:`Host.cut_from` cuts it off from some hosts only (blackhole routes
  both ways), e.g. a Scheduler's host from the ZooKeeper ensemble;
- :meth:`Host.kill` is the power cord: SIGKILL to every process in it.

Needs root (``ip netns``, veth, bridges). Nothing here is gridmesh's.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "gmh"
"""Names of the bridge, the namespaces and the veth ends start with it."""
SUBNET = "10.77.0"
"""The hosts' /24; the bridge (this machine's own namespace) is .1."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    """One host: a namespace ``<prefix>-<name>`` at ``address``."""

    name: str
    address: str
    prefix: str = PREFIX
    cut_from_hosts: dict[str, Host] = field(default_factory=dict)
    """Hosts :meth:`cut_from` cut this one off from, by name."""

    @property
    def netns(self) -> str:
        return f"{self.prefix}-{self.name}"

    @property
    def veth(self) -> str:
        """The bridge-side end of its cable (at most 15 characters)."""
        return f"{self.prefix}v-{self.name}"[:15]

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on this host: in its network namespace, with its
        own host name (a UTS namespace of its own)."""
        named = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', self.name]
        return ["ip", "netns", "exec", self.netns, *named, *argv]

    def run(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float, check: bool = True, given: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on this host to its end, ``given`` on its standard input."""
        done = subprocess.run(
            self.argv(argv), env=dict(env), input=given, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise RuntimeError(f"on {self.name}: {' '.join(argv)} exited with {done.returncode}:\n{tail}")
        return done

    def popen(self, argv: Sequence[str], env: Mapping[str, str], log_file: Path) -> subprocess.Popen[bytes]:
        """Start a long-running process on this host, in a session of its own."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            return subprocess.Popen(
                self.argv(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def pids(self) -> list[int]:
        """Every process running in this host's namespace."""
        done = _ip("netns", "pids", self.netns, check=False)
        return [int(p) for p in done.stdout.split()]

    def kill(self) -> int:
        """Power off: SIGKILL to every process of the host; returns how many."""
        killed = 0
        for _ in range(10):  # a dying supervisor may still start something
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        return killed

    def cut(self) -> None:
        """Take the host off the network (both ways, silently: no reset)."""
        _ip("link", "set", self.veth, "down")

    def heal(self) -> None:
        """Put the host back on the network, and undo :meth:`cut_from`."""
        _ip("link", "set", self.veth, "up")
        for other in list(self.cut_from_hosts.values()):
            self._route("del", other.address, check=False)
            other._route("del", self.address, check=False)
            other.cut_from_hosts.pop(self.name, None)
        self.cut_from_hosts.clear()

    def cut_from(self, others: Sequence[Host]) -> None:
        """Cut this host off from ``others`` only, both ways (packets between
        them are dropped by blackhole routes on both sides)."""
        for other in others:
            self._route("add", other.address)
            other._route("add", self.address)
            self.cut_from_hosts[other.name] = other
            other.cut_from_hosts[self.name] = self

    def _route(self, verb: str, address: str, check: bool = True) -> None:
        _ip("-n", self.netns, "route", verb, "blackhole", f"{address}/32", check=check)


@dataclass
class Network:
    """The bridge and the hosts on it."""

    prefix: str = PREFIX
    subnet: str = SUBNET
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def create(self) -> None:
        """The bridge, with this machine's address on it (so tests reach the
        hosts); whatever a crashed run left is removed first."""
        if os.geteuid() != 0:
            raise PermissionError("hosts as network namespaces need root (ip netns, veth, bridges)")
        self.destroy()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add(self, name: str, last_octet: int) -> Host:
        host = Host(name, f"{self.subnet}.{last_octet}", self.prefix)
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def destroy(self) -> None:
        """Kill every process of every host of this prefix and remove them all."""
        listed = _ip("netns", "list", check=False).stdout.split("\n")
        for line in listed:
            netns = line.split(" ")[0]
            if netns.startswith(f"{self.prefix}-"):
                Host(netns[len(self.prefix) + 1 :], "", self.prefix).kill()
                _ip("netns", "del", netns, check=False)
        links = _ip("-o", "link", "show", check=False).stdout.splitlines()
        for line in links:
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(f"{self.prefix}v-") or name == self.bridge:
                _ip("link", "del", name, check=False)
        self.hosts.clear()
