"""Per-app traffic from nginx's access log: requests, status classes and latency per minute.

nginx writes one JSON object per request (`proxy.render.ACCESS_LOG_FORMAT`). The collector
reads what was appended since its last read, counts it per (app, minute) and adds the counts
to `dashboard_http` in one transaction together with the new read position.

Invariants:
- Bounded cost: each step reads at most `MAX_READ` bytes; lines are matched by one compiled
  pattern over the whole chunk (`re.findall`, in C) and identical (second, app, status
  class, latency) tuples are counted before any Python code looks at them. Only complete
  lines are consumed; a partial last line waits for the next step.
- Exactly once: the read position (inode, offset) is committed with the counts, so a crash
  or restart neither loses nor double-counts a line (but for the last second of a file just
  rotated, which is read once more after the switch and not tracked).
- Only the leading fields, fixed in order and form by the proxy, are read; the rest of a
  line (paths, agents) is never parsed, kept or logged. Requests no app served (the default
  404 server, the dashboard itself) are not counted: their upstream name is not an app's.
- Bounded size: rows older than `RETAIN_SECONDS` are pruned; the log file is rotated (once,
  to `access.log.1`) past `ROTATE_BYTES`, and the old file is read to its end first.
- Latency is kept as a histogram with logarithmic bins (×1.25 from 1 ms), so p50/p95 over
  any range merge exactly from per-minute rows; a reported quantile is within one bin
  (±12 %) of the true one.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from dashboard import tables  # noqa: F401  (the dashboard's tables)
from dockyard.state import StateStore
from proxy.render import upstream_name

MAX_READ = 8 * 1024 * 1024
ROTATE_BYTES = 256 * 1024 * 1024
RETAIN_SECONDS = 25 * 3600
BIN_BASE = 1.25
BIN_COUNT = 64  # 1.25**63 ms is far beyond any proxy timeout

_PREFIX = re.escape(upstream_name("").encode())
# One group per line, from the app's name to the time: identical (app, status, latency,
# second) keys are then counted by `Counter` in C before Python looks at them. A match
# takes its whole line, so the next search starts where the last line ended instead of
# being tried at every byte. A match cannot start inside a line: nginx's escape=json
# writes every `"` inside a value as `\"`.
LINE_RE = re.compile(
    rb'\{"app":"' + _PREFIX + rb'([a-z0-9][a-z0-9-]{0,62}","s":[1-5]\d\d,"rt":[0-9.]{1,12},'
    rb'"t":"[0-9T:+-]{19,25})",[^\n]*\n'
)


def latency_bin(seconds: float) -> int:
    """Bin i holds latencies in (1.25**(i-1), 1.25**i] ms; bin 0 everything up to 1 ms."""
    ms = seconds * 1000.0
    if ms <= 1.0:
        return 0
    return min(BIN_COUNT - 1, math.ceil(math.log(ms) / math.log(BIN_BASE) - 1e-9))


def bin_upper_ms(i: int) -> float:
    return BIN_BASE**i


def quantile_ms(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of a histogram in milliseconds, interpolated within its bin."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i in sorted(histogram):
        count = histogram[i]
        if seen + count >= rank:
            low = 0.0 if i == 0 else bin_upper_ms(i - 1)
            high = bin_upper_ms(i)
            fraction = (rank - seen) / count if count else 1.0
            return round(low + (high - low) * fraction, 2)
        seen += count
    return round(bin_upper_ms(max(histogram)), 2)


@dataclass
class Bucket:
    """One app's traffic in one minute."""

    requests: int = 0
    status: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])  # 1xx … 5xx
    latency: Counter[int] = field(default_factory=Counter)

    def add(self, other: Bucket) -> None:
        self.requests += other.requests
        self.status = [a + b for a, b in zip(self.status, other.status, strict=True)]
        self.latency.update(other.latency)


def aggregate(chunk: bytes) -> dict[tuple[str, int], Bucket]:
    """Count the complete lines of `chunk` per (app name, minute start)."""
    buckets: dict[tuple[str, int], Bucket] = {}
    minutes: dict[bytes, int] = {}
    for key, n in Counter(LINE_RE.findall(chunk)).items():
        # b'web","s":200,"rt":0.002,"t":"2026-12-01T04:27:31+00:00'
        app, _, rest = key.partition(b'","s":')
        status, _, rest = rest.partition(b',"rt":')
        rt, _, when = rest.partition(b',"t":"')
        minute = minutes.get(when)
        if minute is None:
            try:
                stamp = datetime.fromisoformat(when.decode()).timestamp()
            except ValueError:
                continue
            minute = minutes[when] = int(stamp) // 60 * 60
        bucket = buckets.get((app.decode(), minute))
        if bucket is None:
            bucket = buckets[(app.decode(), minute)] = Bucket()
        bucket.requests += n
        bucket.status[status[0] - ord("1")] += n
        bucket.latency[latency_bin(float(rt))] += n
    return buckets


def _encode_hist(hist: Counter[int]) -> str:
    return json.dumps({str(k): v for k, v in sorted(hist.items()) if v}, separators=(",", ":"))


def _decode_hist(text: str) -> Counter[int]:
    return Counter({int(k): v for k, v in json.loads(text).items()})


TABLES = (("dashboard_http", 60), ("dashboard_http_10m", 600))


def store_buckets(
    state: StateStore, buckets: dict[tuple[str, int], Bucket], cursor: tuple[int, int] | None
) -> int:
    """Add counts to both tables (and move the cursor) in one transaction; returns how
    many per-minute rows changed. Names no app has (destroyed meanwhile) are dropped."""
    coarse: dict[tuple[str, int], Bucket] = {}
    for (name, minute), bucket in buckets.items():
        key = (name, minute // 600 * 600)
        total = coarse.setdefault(key, Bucket())
        total.add(bucket)
    with state.transaction() as conn:
        ids = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM apps")}
        changed = _upsert(conn, "dashboard_http", ids, buckets)
        _upsert(conn, "dashboard_http_10m", ids, coarse)
        if cursor is not None:
            conn.execute(
                "INSERT OR REPLACE INTO dashboard_log_cursor (id, inode, offset) VALUES (1, ?, ?)",
                cursor,
            )
    return changed


def _upsert(
    conn: sqlite3.Connection, table: str, ids: dict[str, int],
    buckets: dict[tuple[str, int], Bucket],
) -> int:  # fmt: skip
    changed = 0
    for (name, minute), bucket in buckets.items():
        app_id = ids.get(name)
        if app_id is None:
            continue
        row = conn.execute(
            f"SELECT requests, s1, s2, s3, s4, s5, latency FROM {table} "  # noqa: S608
            "WHERE app_id = ? AND minute = ?",
            (app_id, minute),
        ).fetchone()
        merged = Bucket()
        merged.add(bucket)
        if row is not None:
            merged.add(Bucket(row["requests"], [row[f"s{i}"] for i in range(1, 6)],
                              _decode_hist(row["latency"])))  # fmt: skip
        conn.execute(
            f"INSERT OR REPLACE INTO {table} "  # noqa: S608
            "(app_id, minute, requests, s1, s2, s3, s4, s5, latency) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (app_id, minute, merged.requests, *merged.status, _encode_hist(merged.latency)),
        )
        changed += 1
    return changed


def prune(state: StateStore, now: float | None = None) -> None:
    cutoff = (now if now is not None else time.time()) - RETAIN_SECONDS
    with state.transaction() as conn:
        for table, _ in TABLES:
            conn.execute(f"DELETE FROM {table} WHERE minute < ?", (int(cutoff),))  # noqa: S608
        conn.execute("DELETE FROM dashboard_stats WHERE at < ?", (cutoff,))


class LogCollector:
    """Follows one access log file across rotations. Blocking; call `step` from a worker
    thread (`run_blocking`), one step at a time."""

    def __init__(
        self, state: StateStore, path: Path, reopen_logs: Callable[[], bool] | None = None,
        rotate_bytes: int = ROTATE_BYTES,
    ) -> None:  # fmt: skip
        self.state = state
        self.path = path
        self.reopen_logs = reopen_logs  # has nginx reopen its logs after a rename
        self.rotate_bytes = rotate_bytes
        self._file: BinaryIO | None = None
        self._inode = 0
        self._offset = 0
        self._draining: BinaryIO | None = None  # a rotated file, read once more then closed

    def _open_current(self, resume: bool) -> None:
        try:
            f: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (held across steps)
        except FileNotFoundError:
            return
        st = os.fstat(f.fileno())
        offset = st.st_size  # a first start does not import history
        if resume:
            row = self.state.query_one("SELECT inode, offset FROM dashboard_log_cursor")
            if row is not None and row["inode"] == st.st_ino and row["offset"] <= st.st_size:
                offset = row["offset"]
            elif row is not None:
                offset = 0  # a new file since we last read: all of it is new
        self._file, self._inode, self._offset = f, st.st_ino, offset
        f.seek(offset)

    def close(self) -> None:
        for f in (self._file, self._draining):
            if f is not None:
                f.close()
        self._file = self._draining = None

    def _read_lines(self, f: BinaryIO) -> tuple[bytes, int]:
        """Complete lines from `f`'s position (at most MAX_READ bytes); returns them and how
        many bytes they take. The position moves only past complete lines."""
        start = f.tell()
        data = f.read(MAX_READ)
        end = data.rfind(b"\n") + 1
        f.seek(start + end)
        return data[:end], end

    def step(self) -> int:
        """Read what is new and store it; returns the number of bytes consumed."""
        consumed = 0
        if self._draining is not None:
            chunk, n = self._read_lines(self._draining)
            store_buckets(self.state, aggregate(chunk), None)
            consumed += n
            self._draining.close()
            self._draining = None
        if self._file is None:
            self._open_current(resume=True)
            if self._file is None:
                return consumed
        chunk, n = self._read_lines(self._file)
        self._offset += n
        store_buckets(self.state, aggregate(chunk), (self._inode, self._offset))
        consumed += n
        self._follow_rotation()
        return consumed

    def _follow_rotation(self) -> None:
        """Rotate a large log ourselves; when the path names a new file (our rotation or
        someone else's), keep the old one to read once more (nginx flushes its buffer
        within a second) and start the new one from its beginning."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if st.st_ino == self._inode and st.st_size >= self.rotate_bytes and self.reopen_logs:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self.reopen_logs()
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                # nginx creates the new file when it reopens; until then, wait.
                self._draining, self._file = self._file, None
                return
        if st.st_ino != self._inode:
            self._draining = self._file
            f = open(self.path, "rb")  # noqa: SIM115 (held across steps)
            self._file, self._inode, self._offset = f, os.fstat(f.fileno()).st_ino, 0
            with self.state.transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO dashboard_log_cursor (id, inode, offset) "
                    "VALUES (1, ?, 0)",
                    (self._inode,),
                )


# ---------------------------------------------------------------- reading the table

# name: (span, step, table); a step is a whole number of the table's rows.
RANGES = {
    "1h": (3600, 60, "dashboard_http"),
    "6h": (6 * 3600, 600, "dashboard_http_10m"),
    "1d": (86400, 600, "dashboard_http_10m"),
}


def http_series(state: StateStore, app_id: int, range_name: str, now: float) -> dict:
    """Points at the start of each step over the range: requests/s, per status class/s,
    p50 and p95 (ms; null with no requests). Day-long ranges read the ten-minute table
    (144 rows); the per-step sums are SQLite's GROUP BY."""
    span, step, table = RANGES[range_name]
    last = int(now) // step * step
    first = last - span + step
    points = (last - first) // step + 1
    requests = [0] * points
    status = [[0] * points for _ in range(5)]
    hists: list[dict[int, int]] = [{} for _ in range(points)]
    where = "app_id = ? AND minute >= ? AND minute < ?"
    params = (first, step, app_id, first, last + step)
    for row in state.query(
        "SELECT (minute - ?) / ? AS i, SUM(requests) AS n, SUM(s1) AS s1, SUM(s2) AS s2, "
        f"SUM(s3) AS s3, SUM(s4) AS s4, SUM(s5) AS s5 FROM {table} WHERE {where} "
        "GROUP BY i",
        params,
    ):
        i = row["i"]
        requests[i] = row["n"]
        for c in range(5):
            status[c][i] = row[f"s{c + 1}"]
    for i, text in state.query(
        f"SELECT (minute - ?) / ? AS i, latency FROM {table} WHERE {where}", params
    ):
        hist = hists[i]
        for b, n in json.loads(text).items():
            b = int(b)
            hist[b] = hist.get(b, 0) + n
    # The last point's step is still running: rates are over the part already elapsed.
    widths = [float(step)] * points
    widths[-1] = max(1.0, min(step, now - last))
    return {
        "step": step,
        "t": [first + i * step for i in range(points)],
        "rps": [round(n / w, 3) for n, w in zip(requests, widths, strict=True)],
        "requests": requests,
        "status": {
            f"{c + 1}xx": [round(n / w, 3) for n, w in zip(status[c], widths, strict=True)]
            for c in range(1, 5)
        },
        "p50": [quantile_ms(h, 0.50) for h in hists],
        "p95": [quantile_ms(h, 0.95) for h in hists],
    }


def recent_traffic(state: StateStore, now: float, window: int = 300) -> dict[int, dict]:
    """Per app id: requests/s and 5xx count over the last `window` seconds (the list)."""
    since = int(now) - window
    # By the minute index: left to itself SQLite walks the whole table in app order.
    rows = state.query(
        "SELECT app_id, SUM(requests) AS n, SUM(s5) AS e FROM dashboard_http "
        "INDEXED BY dashboard_http_minute WHERE minute >= ? GROUP BY app_id",
        (since // 60 * 60,),
    )
    span = max(60.0, now - since // 60 * 60)
    return {r["app_id"]: {"rps": round(r["n"] / span, 3), "errors_5xx": r["e"]} for r in rows}
