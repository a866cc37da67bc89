"""Ports of this host (of its network namespace), told without connecting.

Probing a port by connecting to it is unsafe while nothing listens there:
the mesh's ports lie in Linux's ephemeral range (32768-60999), and so do the
tests' free ports, so the kernel may pick the very port as the probe's
source and connect the socket to itself (TCP "simultaneous open"). That
connection then holds the port, and the process starting on it fails to
bind. So a free port is told by binding it, and a local service is probed
only once something listens on its port.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_LISTEN = "0A"


def in_use(host: str, port: int) -> bool:
    """Whether a process holds ``host:port``: binding it fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT does not count
        try:
            sock.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
        return False


def is_local(host: str) -> bool:
    """Whether ``host`` is an address of this host (it can be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
        return True


def listening(port: int) -> bool:
    """Whether a socket of this host listens on ``port``, read from the
    kernel's tables (True where they cannot be read: then only a connection
    can tell)."""
    try:
        rows = [line.split() for table in _TABLES if table.exists() for line in table.read_text().splitlines()[1:]]
    except OSError:
        return True
    if not rows:
        return True
    # Each row: sl, local "ADDR:PORT" (hex), remote, state, ...
    return any(row[3] == _LISTEN and int(row[1].rsplit(":", 1)[1], 16) == port for row in rows)


def nothing_listens(host: str, port: int) -> bool:
    """True when ``host`` is this host's and nothing listens on ``port``:
    a connection there could only reach itself."""
    return is_local(host) and not listening(port)
