"""gridmesh.cli.ports: free ports and listeners told without connecting (a
probe's connection to a free port in the ephemeral range can reach itself
and take the port from the service about to bind it)."""

import socket

from gridmesh.cli import ports


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_a_listening_port_is_in_use_and_listens():
    with bound_socket() as sock:
        sock.listen()
        port = sock.getsockname()[1]
        assert ports.in_use("127.0.0.1", port)
        assert ports.listening(port)
        assert not ports.nothing_listens("127.0.0.1", port)


def test_a_port_bound_without_listening_is_in_use_but_nothing_listens():
    with bound_socket() as sock:
        port = sock.getsockname()[1]
        assert ports.in_use("127.0.0.1", port)
        assert ports.nothing_listens("127.0.0.1", port)


def test_a_free_port_is_neither_and_stays_unconnected():
    with bound_socket() as sock:
        port = sock.getsockname()[1]
    assert not ports.in_use("127.0.0.1", port)
    assert ports.nothing_listens("127.0.0.1", port)


def test_another_hosts_address_is_not_local_so_it_is_probed_by_connecting():
    assert ports.is_local("127.0.0.1")
    assert not ports.is_local("192.0.2.1")  # TEST-NET-1: never this host's
    assert not ports.nothing_listens("192.0.2.1", 50070)
