"""The front door: Dockyard's own SSH server (asyncssh). No shell, one command per session."""

from sshd.server import FrontDoorLimits, start_server

__all__ = ["FrontDoorLimits", "start_server"]
