"""`run APP CMD…`: a one-off container from the current release, attached to the client.

With a pty (`ssh -t`) the container gets a tty and the raw stream is pumped both ways.
Without one, the engine's multiplexed stream is split so that the client's stdout carries
only the command's stdout and its stderr only the command's stderr; stdin is forwarded
until the client closes it, then the container's stdin is closed too.
"""

from __future__ import annotations

import socket
import threading
from typing import BinaryIO

import docker
import docker.errors

from deployer import containers as docker_ops
from deployer.containers import ProcessSpec
from dockyard.attach import CHUNK, copy_raw, demux
from dockyard.output import ERROR

CANCEL_POLL = 0.25


class OneOff:
    """One `run` container: made by `containers.create` like every container of the app
    (same limits, pids cap, networks and mounts), attached before it starts."""

    def __init__(self, spec: ProcessSpec, name: str, argv: list[str], tty: bool) -> None:
        self.spec = spec
        self.name = name
        self.argv = argv
        self.tty = tty

    def run(
        self, stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO, cancelled: threading.Event
    ) -> int:
        api = docker_ops.client().api
        container_id = docker_ops.create(
            self.spec, self.name, self.argv, tty=self.tty, stdin_open=True, restart=False
        )
        try:
            attached = api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            sock: socket.socket = attached._sock
            api.start(container_id)
            pump = threading.Thread(
                target=_pump_stdin, args=(stdin, sock, not self.tty), daemon=True
            )
            pump.start()
            finished = threading.Event()
            watcher = threading.Thread(
                target=_kill_on_cancel,
                args=(api, container_id, cancelled, finished),
                daemon=True,
            )
            watcher.start()
            try:
                if self.tty:
                    copy_raw(sock, stdout)
                else:
                    demux(sock, stdout, stderr)
                status = int(api.wait(container_id).get("StatusCode", 1))
                # A command that could not even start (not found) leaves its reason here.
                error = (api.inspect_container(container_id).get("State") or {}).get("Error")
                if error:
                    stderr.write(f"{ERROR}{error}\n".encode("utf-8", "replace"))
                return status
            finally:
                finished.set()
        finally:
            try:
                api.remove_container(container_id, force=True)
            except docker.errors.APIError:
                pass


def _pump_stdin(stdin: BinaryIO, sock: socket.socket, forward_eof: bool) -> None:
    """Client input to the container. Without a terminal, the client's EOF closes the
    container's stdin. On a terminal, EOF travels in-band (^D through the pty); closing the
    attach stream there hangs up the tty and can lose output the program has not yet
    written, so the container ends by itself, or is killed when the session goes."""
    try:
        while True:
            read = getattr(stdin, "read1", None) or stdin.read
            data = read(CHUNK)
            if not data:
                break
            sock.sendall(data)
        if forward_eof:
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _kill_on_cancel(
    api: docker.APIClient, container_id: str, cancelled: threading.Event, finished: threading.Event
) -> None:
    """The client went away: the one-off container must not outlive it."""
    while not finished.wait(CANCEL_POLL):
        if cancelled.is_set():
            break
    else:
        return
    try:
        api.kill(container_id)
    except docker.errors.APIError:
        pass  # already gone: the normal end of a command
