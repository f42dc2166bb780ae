"""pkt-lines, read strictly and written in large blocks.

git frames its protocol as pkt-lines: four hex digits giving the length (header included),
then the payload. Three lengths are special: `0000` (flush), `0001` (delimiter, protocol
v2), `0002` (response end, protocol v2). A length of 3, or one above 65520, or anything but
four hex digits, is a protocol error here (C git dies on them too). End of input between
lines is a hang-up.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from dulwich.errors import GitProtocolError, HangupException

MAX_PKT_LENGTH = 65520  # C git's LARGE_PACKET_MAX
MAX_PKT_PAYLOAD = MAX_PKT_LENGTH - 4
SIDEBAND_64K_PAYLOAD = MAX_PKT_PAYLOAD - 1  # one byte names the band
SIDEBAND_PAYLOAD = 1000 - 5  # the old `side-band`: 1000-byte packets
BAND_DATA, BAND_PROGRESS, BAND_ERROR = 1, 2, 3
ERR_PREFIX = b"ERR "
SEND_BLOCK = 256 * 1024  # bytes handed to the channel at once


class Marker(enum.Enum):
    FLUSH = "0000"
    DELIM = "0001"
    RESPONSE_END = "0002"


Packet = bytes | Marker
_MARKERS = {0: Marker.FLUSH, 1: Marker.DELIM, 2: Marker.RESPONSE_END}
_HEX = frozenset(b"0123456789abcdefABCDEF")


class PktLineReader:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read

    def read(self) -> Packet:
        """The next payload (one trailing newline removed), or a marker."""
        header = self._read(4)
        if len(header) < 4:
            raise HangupException()
        if not all(c in _HEX for c in header):
            raise GitProtocolError(f"invalid pkt-line length {header!r}")
        length = int(header, 16)
        if length in _MARKERS:
            return _MARKERS[length]
        if length < 4 or length > MAX_PKT_LENGTH:
            raise GitProtocolError(f"invalid pkt-line length {header!r}")
        payload = self._read(length - 4)
        if len(payload) < length - 4:
            raise HangupException()
        return payload[:-1] if payload.endswith(b"\n") else payload


def pkt(payload: bytes) -> bytes:
    if len(payload) > MAX_PKT_PAYLOAD:
        raise ValueError("pkt-line payload too long")
    return b"%04x" % (len(payload) + 4) + payload


def line(text: bytes) -> bytes:
    return pkt(text + b"\n")


FLUSH = b"0000"
DELIM = b"0001"


class SidebandSink:
    """Writes a byte stream as side-band packets on one band, gathering small writes and
    handing the channel blocks of `SEND_BLOCK` bytes. Without side-band (`band=None`) the
    bytes go as they are."""

    def __init__(
        self, write: Callable[[bytes], object], band: int | None, payload: int
    ) -> None:
        self._write = write
        self._band = None if band is None else bytes([band])
        self._payload = payload
        self._out = bytearray()
        self._open_at = -1  # where the open packet's header is in _out
        self._open_len = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self._band is None:
            self._out += view
            if len(self._out) >= SEND_BLOCK:
                self._send()
            return
        while len(view):
            if self._open_at < 0:
                self._open_at = len(self._out)
                self._out += b"0000" + self._band
                self._open_len = 0
            take = min(self._payload - self._open_len, len(view))
            self._out += view[:take]
            self._open_len += take
            view = view[take:]
            if self._open_len == self._payload:
                self._close_packet()
            if len(self._out) >= SEND_BLOCK:
                self._send()

    def _close_packet(self) -> None:
        if self._open_at >= 0:
            header = b"%04x" % (self._open_len + 5)
            self._out[self._open_at : self._open_at + 4] = header
            self._open_at = -1

    def _send(self) -> None:
        self._close_packet()
        if self._out:
            self._write(bytes(self._out))
            self._out.clear()

    def flush(self) -> None:
        self._send()
