"""The Docker engine's attach and exec streams, read into a command's own streams.

Without a terminal the engine multiplexes: each frame is an 8-byte header (stream id, three
pad bytes, length) and that many bytes, stdout (1) and stderr (2) apart; frames are copied
in chunks, never whole in memory (a database dump is one stream of frames). On a terminal
the stream is raw. Shared by `run`'s one-offs and the services' `connect`/`export`.
"""

from __future__ import annotations

import socket
import struct
from typing import BinaryIO

STREAM_HEADER = struct.Struct(">BxxxL")  # stream id, 3 pad bytes, frame length
STREAM_STDERR = 2
CHUNK = 65536


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def demux(sock: socket.socket, stdout: BinaryIO, stderr: BinaryIO) -> None:
    """Copy a multiplexed stream until it ends: stdout frames to `stdout`, stderr's apart."""
    while True:
        header = recv_exact(sock, STREAM_HEADER.size)
        if len(header) < STREAM_HEADER.size:
            return
        stream, length = STREAM_HEADER.unpack(header)
        target = stderr if stream == STREAM_STDERR else stdout
        while length:
            chunk = sock.recv(min(length, CHUNK))
            if not chunk:
                return
            target.write(chunk)
            length -= len(chunk)


def copy_raw(sock: socket.socket, stdout: BinaryIO) -> None:
    """Copy a terminal's raw stream until it ends."""
    while True:
        chunk = sock.recv(CHUNK)
        if not chunk:
            return
        stdout.write(chunk)
