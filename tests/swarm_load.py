"""A bounded load of GETs and POSTs through Dockyard's nginx, for the zero-downtime checks.

Each worker thread holds one keep-alive connection (http.client) and alternates GET and POST
requests. A request is counted exactly once: a connection error, a timeout or any status
other than 200 is a failure, and the request is never retried (the next one opens a new
connection). Requests go to 127.0.0.1 only, and the load stops by itself after
`max_seconds` or `max_requests`.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

MAX_SECONDS = 600.0
MAX_REQUESTS = 500_000
TIMEOUT = 15.0


@dataclass
class Tally:
    sent: int = 0
    failed: int = 0
    by_method: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    bodies: Counter = field(default_factory=Counter)
    max_latency: float = 0.0
    first_failure: float | None = None
    last_failure: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> str:
        errors = ", ".join(f"{k}: {v}" for k, v in self.errors.most_common(4))
        return (
            f"sent={self.sent} failed={self.failed} ({dict(self.by_method)}) "
            f"max-latency={self.max_latency * 1000:.0f}ms"
            + (f" errors: {errors}" if errors else "")
        )


class Load:
    """`with Load(port, "app.localhost") as load: …` — the tally is in `load.tally`."""

    def __init__(
        self, port: int, host: str, workers: int = 4, pause: float = 0.01,
        max_seconds: float = MAX_SECONDS, max_requests: int = MAX_REQUESTS,
    ) -> None:  # fmt: skip
        self.port = port
        self.host = host
        self.workers = workers
        self.pause = pause
        self.deadline = time.monotonic() + min(max_seconds, MAX_SECONDS)
        self.max_requests = min(max_requests, MAX_REQUESTS)
        self.tally = Tally()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True)
                        for i in range(workers)]  # fmt: skip

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Tally:
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=TIMEOUT + 5)
        return self.tally

    def _more(self) -> bool:
        return (not self.stopped.is_set() and time.monotonic() < self.deadline
                and self.tally.sent < self.max_requests)  # fmt: skip

    def _work(self, index: int) -> None:
        conn: http.client.HTTPConnection | None = None
        n = 0
        while self._more():
            n += 1
            method = "POST" if (n + index) % 2 else "GET"
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
            started = time.monotonic()
            ok, what, body = False, "", b""
            try:
                if method == "POST":
                    payload = f"n={n}&w={index}".encode()
                    conn.request("POST", "/cgi-bin/post", body=payload, headers={
                        "Host": self.host, "Content-Type": "application/x-www-form-urlencoded"})
                else:
                    conn.request("GET", "/", headers={"Host": self.host})
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200
                what = f"HTTP {resp.status}"
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                what = type(exc).__name__
                conn.close()
                conn = None
            elapsed = time.monotonic() - started
            with self.tally.lock:
                t = self.tally
                t.sent += 1
                t.by_method[method] += 1
                t.max_latency = max(t.max_latency, elapsed)
                if ok:
                    t.bodies[body[:80].decode("utf-8", "replace").strip()] += 1
                else:
                    t.failed += 1
                    t.errors[f"{method} {what}"] += 1
                    now = time.monotonic()
                    t.first_failure = t.first_failure or now
                    t.last_failure = now
            time.sleep(self.pause)
        if conn is not None:
            conn.close()
