"""Ports for test servers: free ones, chosen where no outgoing connection can take them.

``free_ports`` is what ``ProcessCluster`` and the kit's engines use; test authors may call it
for servers of their own.
"""

from __future__ import annotations

import random
import socket

__all__ = ["LISTEN_PORTS_LOW", "free_ports"]


EPHEMERAL_RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range"
LISTEN_PORTS_LOW = 10_000
"""Ports for test servers are drawn from [LISTEN_PORTS_LOW, start of the ephemeral range)."""


def _ephemeral_low() -> int:
    try:
        with open(EPHEMERAL_RANGE_PATH) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound together, then released).

    They are drawn at random from *below* the kernel's ephemeral range. A port the kernel
    hands out for ``bind(port 0)`` comes from that range, and so does the local port of every
    outgoing connection on the machine: on a busy machine one of those can take the port
    between this pick and the server's own bind (seen: "address already in use" under a full
    test run). Below the range only another listener can take it, which the bind here
    checks; the random draw keeps concurrent test processes apart."""
    low = _ephemeral_low()
    if low - LISTEN_PORTS_LOW < 1_000:  # an unusual range: fall back to the kernel's pick
        return _kernel_picked_ports(count, host)
    draw = random.SystemRandom()
    sockets: list[socket.socket] = []
    try:
        for _ in range(100 * count):
            if len(sockets) == count:
                break
            sock = socket.socket()
            try:
                sock.bind((host, draw.randrange(LISTEN_PORTS_LOW, low)))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        if len(sockets) < count:
            raise OSError(f"no {count} free ports below {low} on {host}")
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _kernel_picked_ports(count: int, host: str) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
