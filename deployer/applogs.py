"""`logs APP`: the app's container logs, prefixed as Heroku does (`TIME app[web.1]: line`).

Without `-t` the last N lines of every source are merged by time. With `-t` one thread
per source follows its log into a queue; the command writes from the queue until the
client disconnects (`ctx.cancelled`) or a write fails, then closes every stream. A source
is a container (`ContainerLogs`) or anything else with Docker-style logs that says which
dyno each line came from (a Swarm service's tasks: `deployer.schedulers.swarm`).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, BinaryIO

import docker.errors
from docker.models.containers import Container

from deployer import containers as docker_ops

POLL_INTERVAL = 0.25


def format_line(raw: bytes, dyno: str) -> tuple[str, str]:
    """Docker's `2026-…123456789Z text` → (sort key, `2026-…123456+00:00 app[web.1]: text`)."""
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    stamp, _, message = text.partition(" ")
    when = stamp
    if stamp.endswith("Z") and "." in stamp:
        seconds, _, fraction = stamp[:-1].partition(".")
        when = f"{seconds}.{fraction[:6].ljust(6, '0')}+00:00"
    return stamp, f"{when} app[{dyno}]: {message}"


def dyno_of(container: Container) -> str:
    process_type, instance = docker_ops.instance_of(container)
    return f"{process_type}.{instance}"


class ContainerLogs:
    """One container as a log source: every line is its own dyno's."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.name = dyno_of(container)

    def logs(self, **kwargs: Any) -> Any:
        return self.container.logs(**kwargs)

    def dyno(self, raw: bytes) -> tuple[str, bytes]:
        return self.name, raw


def _format(source: Any, raw: bytes) -> str:
    dyno, line = source.dyno(raw)
    return format_line(line, dyno)[1]


def recent(sources: list[Any], lines: int) -> list[str]:
    entries: list[tuple[str, str]] = []
    for c in sources:
        try:
            data = c.logs(stdout=True, stderr=True, timestamps=True, tail=lines)
        except docker.errors.APIError:
            continue
        for raw in data.splitlines():
            dyno, line = c.dyno(raw)
            entries.append(format_line(line, dyno))
    entries.sort(key=lambda e: e[0])
    return [line for _, line in entries[-lines:]]


class Follower:
    """Follows several sources' logs at once, until told to stop."""

    def __init__(self, containers: list[Any], lines: int) -> None:
        self.containers = containers
        self.lines = lines
        self.queue: queue.Queue[str] = queue.Queue(maxsize=10000)
        self.streams: list = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def _follow(self, container: Any) -> None:
        try:
            stream = container.logs(
                stdout=True, stderr=True, timestamps=True, stream=True, follow=True,
                tail=self.lines,
            )  # fmt: skip
        except docker.errors.APIError:
            return
        with self.lock:
            if self.stopped.is_set():
                stream.close()
                return
            self.streams.append(stream)
        buf = b""
        try:
            for chunk in stream:
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    if not self._offer(_format(container, raw)):
                        return
        except Exception:  # the stream was closed under us: that is how we stop
            return

    def _offer(self, line: str) -> bool:
        """Queue a line, waiting while the reader is behind; False once told to stop, so a
        follower blocked on a full queue still ends when the client goes away."""
        while not self.stopped.is_set():
            try:
                self.queue.put(line, timeout=POLL_INTERVAL)
                return True
            except queue.Full:
                continue
        return False

    def run(self, stdout: BinaryIO, cancelled: threading.Event) -> None:
        for c in self.containers:
            threading.Thread(target=self._follow, args=(c,), daemon=True).start()
        try:
            while not cancelled.is_set():
                try:
                    line = self.queue.get(timeout=POLL_INTERVAL)
                except queue.Empty:
                    continue
                stdout.write((line + "\n").encode("utf-8"))
        except OSError:
            pass  # the client went away mid-write
        finally:
            self.stop()

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()
            streams, self.streams = self.streams, []
        for stream in streams:
            try:
                stream.close()
            except Exception:  # closing a dead HTTP stream may raise anything
                pass
