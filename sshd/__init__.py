"""The front door: Dockyard's own SSH server (asyncssh). No shell, one command per session."""

from sshd import checks  # noqa: F401  (registers its doctor check)
from sshd.server import FrontDoorLimits, start_server

__all__ = ["FrontDoorLimits", "start_server"]
