"""The one bridge between the asyncio edge (SSH, proxy, logs) and blocking work.

Blocking work (SQLite, dulwich, the docker SDK) runs in `run_blocking`'s worker pool. A
command running there talks to its SSH channel through `BlockingReader` and
`BlockingWriter`, which are ordinary blocking file objects on the thread side:

- the writer coalesces: writes append to a buffer and at most one drain task per burst
  moves everything accumulated to the channel, so a pkt-line stream costs one loop hop per
  burst, not one per line; a high-water mark blocks the writer while the client is slow;
- the reader fetches one chunk per loop hop and serves small reads from it, and reads
  nothing ahead, so SSH flow control (the channel window) is the back-pressure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from dockyard.errors import DockyardError

T = TypeVar("T")

# Long-lived commands (a push waiting on its app lock, `logs -t`) each hold a thread, so the
# pool is sized for the connection cap, not for the CPU count.
MAX_WORKERS = 256
_executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="dockyard-work")


async def run_blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, functools.partial(fn, *args, **kwargs))


class AsyncSource(Protocol):
    def read(self, n: int = -1) -> Awaitable[bytes]: ...


class AsyncSink(Protocol):
    def write(self, data: bytes) -> None: ...
    def drain(self) -> Awaitable[None]: ...


class ChannelClosed(BrokenPipeError):
    """The client went away while a command was still writing."""


class InputTimeout(DockyardError):
    """The client sent nothing for longer than the command allows."""


READ_CHUNK = 256 * 1024


class BlockingReader:
    def __init__(self, loop: asyncio.AbstractEventLoop, source: AsyncSource) -> None:
        self._loop = loop
        self._source = source
        self._buf = bytearray()
        self._eof = False
        # Seconds a read may wait for the client; None waits for ever (an interactive `run`).
        # A command that holds a lock while it reads (a push) sets a bound.
        self.idle_timeout: float | None = None

    def _fill(self) -> bool:
        if self._eof:
            return False
        fut = asyncio.run_coroutine_threadsafe(self._read_chunk(), self._loop)
        try:
            data = fut.result(self.idle_timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            self._eof = True
            raise InputTimeout(
                f"No data from the client for {self.idle_timeout:.0f} s; giving up"
            ) from None
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def _read_chunk(self) -> bytes:
        try:
            return await self._source.read(READ_CHUNK)
        except (asyncio.CancelledError, ConnectionError, OSError):
            return b""

    def read(self, n: int = -1) -> bytes:
        """Read exactly n bytes (fewer only at EOF); n < 0 reads to EOF."""
        if n < 0:
            while self._fill():
                pass
            data, self._buf = bytes(self._buf), bytearray()
            return data
        while len(self._buf) < n and self._fill():
            pass
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def recv(self, n: int) -> bytes:
        """Read what is available, at most n bytes, blocking only when nothing is."""
        if not self._buf:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    read1 = recv

    def readline(self) -> bytes:
        while b"\n" not in self._buf and self._fill():
            pass
        end = self._buf.find(b"\n")
        end = len(self._buf) if end < 0 else end + 1
        data = bytes(self._buf[:end])
        del self._buf[:end]
        return data

    def close(self) -> None:
        self._eof = True


class BlockingWriter:
    HIGH_WATER = 1024 * 1024

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: AsyncSink) -> None:
        self._loop = loop
        self._sink = sink
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        with self._cond:
            while len(self._buf) >= self.HIGH_WATER and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise ChannelClosed("the client closed the connection")
            self._buf += data
            if not self._draining:
                self._draining = True
                self._loop.call_soon_threadsafe(self._start_drain)
        return len(data)

    def _start_drain(self) -> None:
        # Held here: the loop keeps only a weak reference to a running task.
        self._drain_task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self._cond:
                if not self._buf or self._error is not None:
                    self._draining = False
                    self._cond.notify_all()
                    return
                chunk = bytes(self._buf)
                self._buf.clear()
                self._cond.notify_all()
            try:
                self._sink.write(chunk)
                await self._sink.drain()
            except Exception as exc:  # any failure means the channel is gone
                with self._cond:
                    self._error = exc
                    self._buf.clear()
                    self._draining = False
                    self._cond.notify_all()
                return

    def flush(self) -> None:
        """Block until everything written so far has been handed to the channel."""
        with self._cond:
            while (self._buf or self._draining) and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise ChannelClosed("the client closed the connection")

    def fail(self, exc: BaseException) -> None:
        """Called from the loop when the channel closes: wake and fail any writer."""
        with self._cond:
            self._error = exc
            self._buf.clear()
            self._cond.notify_all()

    def close(self) -> None:
        try:
            self.flush()
        except ChannelClosed:
            pass

    @property
    def closed(self) -> bool:
        return self._error is not None
