"""Ports for the embedded services: every port a stack needs is distinct and free (a broker whose listener and
controller got one port fails its storage format: a whole test session errored on it once)."""

from __future__ import annotations

import socket

from mmfeat.cli.services import PORT_SETTINGS, free_ports, with_free_ports
from mmfeat.settings import load_settings


def test_free_ports_are_distinct_and_bindable() -> None:
    for _ in range(300):
        ports = free_ports(len(PORT_SETTINGS))
        assert len(set(ports)) == len(ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_stack_gets_one_port_per_service() -> None:
    s = with_free_ports(load_settings())
    ports = [s.value(name) for name in PORT_SETTINGS]
    assert len(set(ports)) == len(PORT_SETTINGS)
