"""A small, bounded HTTP/1.1 load generator for loopback targets.

N concurrent clients, each on its own keep-alive connection, send requests until a request
count or a time limit is reached (or `stop()` is called). Clients alternate between GET and
POST (a small body) unless told otherwise. Every request is counted once, as sent, and is
either answered (2xx/3xx: ok) or failed: a 4xx/5xx, a timeout, or a connection that breaks
at any point of the exchange, including a kept-alive connection the server closed while
it was idle. Nothing is retried: a client that loses its connection opens a new one for
its *next* request. Used by the proxy benchmarks and the zero-downtime test:

    python bench/loadgen.py --port 8080 --host-header web.localhost --duration 10

    with BackgroundLoad(port, "web.localhost") as load:   # from a test
        ...redeploy...
    assert load.result.failed == 0

Loopback only: it refuses any other address, so it can never load someone else's server.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

MAX_REQUESTS = 1_000_000
MAX_DURATION = 600.0
MAX_CONCURRENCY = 256
REQUEST_TIMEOUT = 10.0
# With count_bodies: bodies are keyed by their first bytes, and only so many distinct ones
# are kept, so a server answering something new each time cannot grow memory without bound.
BODY_KEY_BYTES = 200
MAX_DISTINCT_BODIES = 100
POST_BODY = b"dockyard-loadgen " * 4


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    by_method: Counter[str] = field(default_factory=Counter)  # sent, per method
    failed_by_method: Counter[str] = field(default_factory=Counter)
    reused: int = 0  # requests sent on a connection that had answered before
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    bodies: Counter[str] = field(default_factory=Counter)  # successful answers, if counted
    elapsed: float = 0.0

    def count_body(self, body: bytes) -> None:
        key = body[:BODY_KEY_BYTES].decode("utf-8", "replace").strip()
        if key in self.bodies or len(self.bodies) < MAX_DISTINCT_BODIES:
            self.bodies[key] += 1

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99) * 1000

    @property
    def rps(self) -> float:
        return (self.sent - self.failed) / self.elapsed if self.elapsed else 0.0

    def summary(self) -> str:
        methods = " ".join(
            f"{m}={n}/{self.failed_by_method[m]}failed" for m, n in sorted(self.by_method.items())
        )
        line = (
            f"sent={self.sent} failed={self.failed} ({methods}; {self.reused} on reused "
            f"connections, none retried) p50={self.p50_ms:.2f}ms p99={self.p99_ms:.2f}ms "
            f"rps={self.rps:.0f}"
        )
        if self.errors:
            line += " errors=" + ", ".join(f"{k}: {v}" for k, v in self.errors.most_common(5))
        return line


def _check_loopback(host: str) -> None:
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"loadgen only targets loopback addresses, not {host}")


class _ClosedBeforeResponse(ConnectionResetError):
    pass


class _Connection:
    """One client's keep-alive connection. `request` sends exactly once: if the connection
    breaks, the request has failed; the next one opens a new connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.answered = 0  # requests answered on the current connection

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None
        self.answered = 0

    async def request(self, raw: bytes) -> tuple[int, bytes, bool]:
        """(status, body, reused): one exchange, never repeated."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        reused = self.answered > 0
        self.writer.write(raw)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise _ClosedBeforeResponse("closed before a response")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise _ClosedBeforeResponse("closed inside the response headers")
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        body = b""
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                body += (await self.reader.readexactly(size + 2))[:size]
                if size == 0:
                    break
        elif length:
            body = await self.reader.readexactly(length)
        self.answered += 1
        if close:
            await self.close()
        return status, body, reused


def _request_bytes(method: str, path: str, host_header: str) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: dockyard-loadgen\r\n"
    if method == "POST":
        head += f"Content-Type: text/plain\r\nContent-Length: {len(POST_BODY)}\r\n"
        return (head + "\r\n").encode() + POST_BODY
    return (head + "\r\n").encode()


async def run_load_async(
    port: int,
    host_header: str,
    *,
    host: str = "127.0.0.1",
    path: str = "/",
    concurrency: int = 8,
    max_requests: int = 10_000,
    duration: float = 10.0,
    stop: threading.Event | None = None,
    count_bodies: bool = False,
    methods: tuple[str, ...] = ("GET", "POST"),
    result: LoadResult | None = None,
) -> LoadResult:
    """Run the load; `result`, if given, is filled in as requests complete, so another
    thread can watch the counts grow. Client i sends `methods[i % len(methods)]`."""
    _check_loopback(host)
    if not methods or any(m not in ("GET", "POST") for m in methods):
        raise ValueError(f"methods are GET and POST, not {methods!r}")
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    max_requests = min(max_requests, MAX_REQUESTS)
    duration = min(duration, MAX_DURATION)
    result = result if result is not None else LoadResult()
    start = time.perf_counter()
    deadline = start + duration

    def more() -> bool:
        return (
            result.sent < max_requests
            and time.perf_counter() < deadline
            and not (stop is not None and stop.is_set())
        )

    async def client(method: str) -> None:
        conn = _Connection(host, port)
        raw = _request_bytes(method, path, host_header)
        while more():
            result.sent += 1
            result.by_method[method] += 1
            t0 = time.perf_counter()
            try:
                status, body, reused = await asyncio.wait_for(conn.request(raw), REQUEST_TIMEOUT)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                result.failed += 1
                result.failed_by_method[method] += 1
                result.errors[f"{method} {type(e).__name__}"] += 1
                await conn.close()
                continue
            result.reused += reused
            if status >= 400:
                result.failed += 1
                result.failed_by_method[method] += 1
                result.errors[f"{method} HTTP {status}"] += 1
            else:
                result.latencies.append(time.perf_counter() - t0)
                if count_bodies:
                    result.count_body(body)
        await conn.close()

    await asyncio.gather(*(client(methods[i % len(methods)]) for i in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


def run_load(port: int, host_header: str, **kwargs: object) -> LoadResult:
    return asyncio.run(run_load_async(port, host_header, **kwargs))  # type: ignore[arg-type]


class BackgroundLoad:
    """Load in a background thread while the caller changes things; `result` after exit,
    `live` (the same object, still growing) while it runs."""

    def __init__(self, port: int, host_header: str, **kwargs: object) -> None:
        kwargs.setdefault("duration", MAX_DURATION)
        kwargs.setdefault("max_requests", MAX_REQUESTS)
        self._stop = threading.Event()
        self._args = (port, host_header)
        self.live = LoadResult()
        self._kwargs = {**kwargs, "stop": self._stop, "result": self.live}
        self._thread = threading.Thread(target=self._run, name="loadgen", daemon=True)
        self.result: LoadResult | None = None

    def _run(self) -> None:
        self.result = run_load(*self._args, **self._kwargs)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join()
        assert self.result is not None
        return self.result

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host-header", default="localhost")
    p.add_argument("--path", default="/")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--methods", default="GET,POST", help="comma-separated: GET, POST")
    a = p.parse_args()
    result = run_load(
        a.port, a.host_header, host=a.host, path=a.path, concurrency=a.concurrency,
        max_requests=a.requests, duration=a.duration, methods=tuple(a.methods.split(",")),
    )  # fmt: skip
    print(result.summary())
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
