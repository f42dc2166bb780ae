"""The front door's part in `doctor`: does the running server answer SSH where it listens?

`start_server` records the address it listens on under `sshd.listen` once the socket is
bound, so a local `doctor` (which has none of the server's flags or environment) checks
the address the server really uses. Until a server has started with this data dir, the
address the settings name is checked to be free instead.
"""

from __future__ import annotations

from dockyard.commands.doctor import Finding, format_listen, port_state, probe, register_check
from dockyard.services import Services
from dockyard.settings import parse_listen

LISTEN_KEY = "sshd.listen"
# asyncssh's server identification string, which Dockyard's front door keeps.
BANNER_PREFIX = b"SSH-2.0-AsyncSSH"
START_FIX = "start it: systemctl start dockyard (after dockyard init), or dockyard serve"


def record_listen(services: Services, addr: tuple[str, int]) -> None:
    services.properties.set(None, LISTEN_KEY, format_listen(addr))


def recorded_listen(services: Services) -> tuple[str, int] | None:
    stored = services.properties.get(None, LISTEN_KEY)
    return parse_listen(stored) if stored else None


@register_check
def check_ssh_listen(services: Services) -> Finding:
    recorded = recorded_listen(services)
    addr = recorded or services.settings.ssh_listen
    shown = format_listen(addr)
    banner = probe(*addr, read=255)
    if banner is not None and banner.startswith(BANNER_PREFIX):
        return Finding("ssh", True, f"{shown} answers (dockyard serve)")
    if banner is not None:
        first = banner.split(b"\r\n", 1)[0].decode("ascii", "replace")[:80] or "no banner"
        return Finding("ssh", False, f"{shown} is held by another program ({first})",
                       "stop it, or give dockyard serve another --ssh-listen")  # fmt: skip
    if recorded is not None:
        return Finding("ssh", False, f"dockyard serve is not running (it listened on {shown})",
                       START_FIX)  # fmt: skip
    state = port_state(*addr)
    if state == "free":
        return Finding("ssh", False, f"no server has started with this data dir yet ({shown} "
                       "is free)", START_FIX)  # fmt: skip
    return Finding("ssh", False, f"{shown} {state} and no Dockyard answers there",
                   "run as root, or give dockyard serve another --ssh-listen")  # fmt: skip
