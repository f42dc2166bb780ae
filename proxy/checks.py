"""The proxy's part in `doctor`: the HTTP and HTTPS listeners of the running server, and
whether the global domain's names lead here.

The addresses are the ones `dockyard serve` recorded at its start (`Router.record_listen`),
so a local `doctor` checks what the server really uses, not this process's defaults. The
HTTPS listener exists only once an app has a certificate (nginx is not asked to listen
there before): until then its port is only checked not to be taken by another program.
"""

from __future__ import annotations

import secrets

from dockyard.commands.doctor import (
    Finding,
    check_domain_resolution,
    format_listen,
    port_state,
    probe,
    register_check,
)
from dockyard.services import Services
from proxy.properties import MODE_SYSTEM
from proxy.render import NOT_FOUND_TEXT
from proxy.router import HTTP_LISTEN, Router

# What the default server answers for a name no app has: how a probe knows our nginx.
NOT_FOUND_MARK = NOT_FOUND_TEXT.replace("\\n", "").encode()
START_FIX = "start Dockyard (systemctl start dockyard, or dockyard serve): it starts nginx"


def _answers_as_dockyard(host: str, port: int, name: str) -> bool:
    request = (
        f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n"
        "User-Agent: dockyard-doctor\r\n\r\n"
    ).encode()
    answer = probe(host, port, send=request, read=4096)
    return answer is not None and NOT_FOUND_MARK in answer


@register_check
def check_listeners(services: Services) -> list[Finding]:
    router = Router(services)
    if router.mode() == MODE_SYSTEM:
        return [Finding("http", True, "proxy mode system: the system nginx listens for apps")]
    recorded = services.properties.get(None, HTTP_LISTEN) is not None
    pid = router.master.pid()
    http, https = router.http_listen(), router.https_listen()
    tls = router.listen().https is not None
    found = [_listener("http", http, pid, recorded, serving=True)]
    found.append(_listener("https", https, pid, recorded, serving=tls))
    return found


def _listener(
    label: str, addr: tuple[str, int], pid: int | None, recorded: bool, serving: bool
) -> Finding:
    shown = format_listen(addr)
    if not serving:
        state = port_state(*addr)
        note = "no listener until the first certificate (letsencrypt:enable APP, certs:add)"
        if state == "in use" and pid is None:
            return Finding(label, False, f"{shown}: {note}, and another program holds it",
                           f"stop that program, or give dockyard serve another "
                           f"--{label}-listen")  # fmt: skip
        return Finding(label, True, f"{shown}: {note}")
    if pid is not None:
        if probe(*addr) is not None:
            return Finding(label, True, f"{shown} answers (Dockyard's nginx, pid {pid})")
        return Finding(label, False, f"Dockyard's nginx (pid {pid}) runs but {shown} does "
                       "not accept connections", "see DATA_DIR/nginx/logs/error.log")  # fmt: skip
    if recorded:
        return Finding(label, False, f"Dockyard's nginx is not running (it listened on "
                       f"{shown})", START_FIX)  # fmt: skip
    state = port_state(*addr)
    if state == "free":
        return Finding(label, True, f"{shown} is free (nginx starts with dockyard serve)")
    fix = (
        "stop that program (the system nginx: systemctl disable --now nginx), or give "
        f"dockyard serve another --{label}-listen"
        if state == "in use"
        else "run dockyard serve as root, or pick a port above 1023"
    )
    return Finding(label, False, f"{shown} {state}: another program holds it", fix)


@register_check
def check_global_domain(services: Services) -> Finding:
    router = Router(services)
    http = router.http_listen()
    probe_name = f"dockyard-check-{secrets.token_hex(4)}.{router.global_domain()}"

    def reaches_us(address: str) -> bool:
        return router.master.pid() is not None and _answers_as_dockyard(
            address, http[1], probe_name
        )

    return check_domain_resolution(router.global_domain(), reaches_us)
