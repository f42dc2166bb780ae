"""TCP tuning for the SSH handshake: acknowledge every received segment at once.

OpenSSH's client leaves Nagle's algorithm on until a session is interactive, and its
handshake sends small messages back to back (KEXINIT then KEX_ECDH_INIT; NEWKEYS then
SERVICE_REQUEST). Nagle holds the second message until the first is acknowledged, and the
Linux server side, having nothing to send yet, delays that ACK by ~40 ms. Two such stalls
made up most of a 55 ms `ssh … apps:list` round trip on loopback; with quick ACKs it takes
about 12 ms. Linux leaves quick-ACK mode on its own, so it is re-armed on every read.
"""

from __future__ import annotations

import socket
from typing import Any

import asyncssh

TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def acknowledge_promptly(conn: asyncssh.SSHServerConnection) -> None:
    """Make `conn` ACK each segment as it reads it (no-op where TCP_QUICKACK is missing)."""
    sock = conn.get_extra_info("socket")
    if TCP_QUICKACK is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    received = conn.data_received

    # asyncio looks `data_received` up on the protocol object for every read, so an
    # instance attribute wraps asyncssh's handler without subclassing its connection.
    def data_received(data: bytes, datatype: Any = None) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
        except OSError:
            pass  # the socket is closing; the data still goes to asyncssh
        received(data, datatype)

    conn.data_received = data_received  # type: ignore[method-assign]
