"""Stable per-app addresses that the kernel forwards to the app's live containers.

nginx is never reloaded for a routine deploy, scale, config change or Dockyard restart: a
reload closes idle client keep-alive connections under clients about to reuse them. So an
app's nginx upstream is a set of addresses that does not change from deploy to deploy:
SLOTS ports on one address, its VIP. nginx balances requests over the slots, round robin
as over any upstream servers, and a chain of DNAT rules in the nat table's OUTPUT path
turns each new connection to slot i into a connection to live container i mod n.
Switching an app to new containers is one `iptables-restore` of that app's chain. (With a
number of containers that does not divide SLOTS, some get one slot more: 3 of 12 is even,
5 of 12 is 3/3/2/2/2.)

Invariants:
- Everything Dockyard adds lives in chains named after its home: `DY-<home>` (jumped to
  from nat OUTPUT for TCP to local addresses) and `DYA-<home>-<app id>` per app. Nothing
  else in the tables is touched, so several Dockyards and Docker share one kernel.
- An app's chain is replaced whole in one transaction: a new connection sees the old
  targets or the new ones, never none. Connection tracking keeps each established
  connection on the container it was sent to, so requests in flight finish where they
  started.
- A VIP is a local address: the host's own address toward the targets (the app network's
  bridge gateway), or for targets on the host itself an address in 127/8 derived from the
  app's identity. Traffic to a VIP never leaves the machine, even without the rules.
- Only IP literals and port numbers reach a rule; host names are resolved before (so no
  user input reaches iptables as text).
- Ids are app ids, not names: a rename keeps the app's VIP and chain.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog

from dockyard.errors import DockyardError

log = structlog.get_logger("proxy.dnat")

RESTORE_TIMEOUT = 20.0
# Ports per app: divisible by 1, 2, 3, 4 and 6 containers.
SLOTS = 12
# VIP ports: within a home, apps on one address get distinct blocks of SLOTS ports (the app
# id picks the block); below the kernel's ephemeral range, so no outgoing connection holds
# one.
VIP_PORT_SPAN = 30000
LOOPBACK_VIP_NET = ipaddress.ip_network("127.64.0.0/10")
_CHAIN_RULE = re.compile(
    r"^-A (?P<chain>\S+) -d (?P<vip>[0-9.]+)/32 -p tcp (?:-m tcp )?--dport (?P<port>\d+)"
    r"(?::(?P<last>\d+))? -j (?:DNAT --to-destination (?P<target>[0-9.]+:\d+)|(?P<jump>\S+))"
    r"\s*$"
)
_lock = threading.Lock()  # one iptables transaction at a time from this process


class DnatError(DockyardError):
    """The kernel refused a rule change; the previous rules stay in force."""


@dataclass(frozen=True)
class Vip:
    """`address`, ports `port` … `port + SLOTS - 1`."""

    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"

    def slots(self) -> list[str]:
        return [f"{self.address}:{self.port + i}" for i in range(SLOTS)]


@dataclass(frozen=True)
class AppRules:
    """What one app's chain says: a connection to slot i of `vip` goes to `slots[i]`."""

    vip: Vip
    slots: tuple[str, ...]

    @classmethod
    def spread(cls, vip: Vip, targets: Sequence[str]) -> AppRules:
        return cls(vip, tuple(targets[i % len(targets)] for i in range(SLOTS)))

    @property
    def targets(self) -> set[str]:
        return set(self.slots)


def home_tag(home: str) -> str:
    return hashlib.sha256(home.encode()).hexdigest()[:8]


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = f"/usr/sbin/{name}"
    return candidate if os.access(candidate, os.X_OK) else None


@functools.cache
def available() -> bool:
    """DNAT needs root, the iptables tools and a nat table they may read (not a container
    without NET_ADMIN); without them routes are written into the nginx config and every
    change reloads (the `static` way). Asked once per process."""
    save = _binary("iptables-save")
    if os.geteuid() != 0 or not save or not _binary("iptables-restore"):
        return False
    try:
        probe = subprocess.run([save, "-t", "nat"], capture_output=True, timeout=RESTORE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if probe.returncode != 0:
        error = probe.stderr.decode(errors="replace").strip()[:200]
        log.warning("iptables unusable: routes go into nginx's files, a reload each", error=error)
    return probe.returncode == 0


def ipv4_target(target: str) -> tuple[str, int] | None:
    """(`a.b.c.d`, port) for an IPv4 `host:port`, else None (IPv6 or a name)."""
    host, _, port = target.rpartition(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version != 4 or not port.isdigit():
        return None
    return str(ip), int(port)


def _source_address(ip: str) -> str:
    """The local address the kernel picks to reach `ip` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, 9))
        return s.getsockname()[0]


def vip_for(home: str, app_id: int, targets: Sequence[str]) -> Vip | None:
    """The app's VIP for these targets, or None when they cannot be reached by DNAT."""
    parsed = [ipv4_target(t) for t in targets]
    if not parsed or any(p is None for p in parsed):
        return None
    first = parsed[0][0]  # type: ignore[index]
    digest = hashlib.sha256(f"{home}\0{app_id}".encode()).digest()
    blocks = VIP_PORT_SPAN // SLOTS
    port = 1 + ((int.from_bytes(digest[:4], "big") + app_id) % blocks) * SLOTS
    try:
        source = _source_address(first)
    except OSError:
        return None
    if ipaddress.ip_address(source).is_loopback:
        # Targets on the host itself: any 127/8 address is ours; one per app keeps apps apart.
        offset = int.from_bytes(digest[4:8], "big") % (LOOPBACK_VIP_NET.num_addresses - 2)
        return Vip(str(LOOPBACK_VIP_NET.network_address + 1 + offset), port)
    return Vip(source, port)


class Dnat:
    """This home's chains in the nat table."""

    def __init__(self, home: str) -> None:
        self.tag = home_tag(home)
        self.home_chain = f"DY-{self.tag}"

    def app_chain(self, app_id: int) -> str:
        return f"DYA-{self.tag}-{app_id}"

    # -- reading ------------------------------------------------------------------------
    def installed(self) -> tuple[dict[int, AppRules], bool]:
        """Every app chain of this home as the kernel has it (reached through the home
        chain), and whether nat OUTPUT jumps to the home chain."""
        out = _run([_need("iptables-save"), "-t", "nat"], None)
        jump = any(_is_output_jump(line, self.home_chain) for line in out.splitlines())
        jumps: dict[str, Vip] = {}
        slots: dict[str, dict[int, str]] = {}
        addresses: dict[str, str] = {}
        prefix = f"DYA-{self.tag}-"
        for line in out.splitlines():
            m = _CHAIN_RULE.match(line)
            if not m:
                continue
            port = int(m["port"])
            if m["chain"] == self.home_chain and m["jump"] and m["jump"].startswith(prefix):
                if m["last"] and int(m["last"]) == port + SLOTS - 1:
                    jumps[m["jump"]] = Vip(m["vip"], port)
            elif m["chain"].startswith(prefix) and m["target"]:
                slots.setdefault(m["chain"], {})[port] = m["target"]
                addresses[m["chain"]] = m["vip"]
        found = {}
        for chain, vip in jumps.items():
            by_port = slots.get(chain, {})
            wanted = [vip.port + i for i in range(SLOTS)]
            if addresses.get(chain) == vip.address and sorted(by_port) == wanted:
                slots_of = tuple(by_port[p] for p in wanted)
                found[int(chain[len(prefix) :])] = AppRules(vip, slots_of)
        return found, jump

    # -- writing ------------------------------------------------------------------------
    def switch(
        self, app_id: int, new: AppRules | None, old: AppRules | None, widened: bool = False
    ) -> None:
        """Move one app from `old` (what this home routed) to `new` in one transaction that
        touches only that app's chain and its one jump: the cost is the same with one app
        or a hundred. Raises DnatError if the kernel's rules were not what `old` says (the
        caller then repairs with `replace_all`). `widened`: `widen` mapped `new` already."""
        if new == old:
            return
        chain = self.app_chain(app_id)
        lines: list[str] = []
        if new is not None:
            lines += [f":{chain} - [0:0]", *self._app_rules(chain, new)]
        if old is not None and (new is None or new.vip != old.vip):
            lines.append(f"-D {self._jump_rule(app_id, old)}")
        if new is not None and (old is None or new.vip != old.vip) and not widened:
            lines.append(f"-A {self._jump_rule(app_id, new)}")
        if new is None:
            lines += [f":{chain} - [0:0]", f"-X {chain}"]
        self._restore(lines, ensure_jump=False)

    def widen(self, app_id: int, new: AppRules, old: AppRules) -> None:
        """Map `new`'s VIP as well as `old`'s, while nginx moves from one to the other (an
        app's network was made again); `switch(app_id, new, old)` then drops the old."""
        chain = self.app_chain(app_id)
        lines = [f":{chain} - [0:0]", *self._app_rules(chain, old), *self._app_rules(chain, new)]
        lines.append(f"-A {self._jump_rule(app_id, new)}")
        self._restore(lines, ensure_jump=False)

    def replace_all(self, apps: dict[int, AppRules], stale: Iterable[int] = ()) -> None:
        """Make the kernel say exactly `apps` for this home (start-up, the watchdog's
        repair, changes of every app at once)."""
        lines = [f":{self.home_chain} - [0:0]"]
        for app_id, rules in sorted(apps.items()):
            chain = self.app_chain(app_id)
            lines += [f":{chain} - [0:0]", *self._app_rules(chain, rules)]
        lines += [f"-A {self._jump_rule(app_id, r)}" for app_id, r in sorted(apps.items())]
        # Chains of apps no longer routed, `stale` or found in the kernel (a crash between
        # a jump's removal and its chain's, a local CLI's change).
        present = {
            int(ln.split()[0][len(f":DYA-{self.tag}-") :])
            for ln in _run([_need("iptables-save"), "-t", "nat"], None).splitlines()
            if ln.startswith(f":DYA-{self.tag}-")
        }
        for app_id in sorted((set(stale) | present) - set(apps)):
            lines += [f":{self.app_chain(app_id)} - [0:0]", f"-X {self.app_chain(app_id)}"]
        self._restore(lines, ensure_jump=True)

    def remove_home(self) -> None:
        """Take every chain of this home out of the kernel (tests, uninstall)."""
        if not available():
            return
        apps, _ = self.installed()
        out = _run([_need("iptables-save"), "-t", "nat"], None)
        prefix = f":DYA-{self.tag}-"
        chains = {ln.split()[0][1:] for ln in out.splitlines() if ln.startswith(prefix)}
        chains |= {self.app_chain(a) for a in apps}
        has_home = any(ln.startswith(f":{self.home_chain} ") for ln in out.splitlines())
        lines = [f":{self.home_chain} - [0:0]"] if has_home else []
        lines += [item for c in sorted(chains) for item in (f":{c} - [0:0]", f"-X {c}")]
        with _lock:
            while self._output_jump_present():
                _run([_need("iptables"), "-w", "-t", "nat", "-D", "OUTPUT", *self._jump_args()],
                     None)  # fmt: skip
            if has_home:
                lines.append(f"-X {self.home_chain}")
            if lines:
                _run([_need("iptables-restore"), "--noflush"], _restore_text(lines))

    # -- helpers ------------------------------------------------------------------------
    def _jump_args(self) -> list[str]:
        return ["-p", "tcp", "-m", "addrtype", "--dst-type", "LOCAL", "-j", self.home_chain]

    def _output_jump_present(self) -> bool:
        proc = subprocess.run(
            [_need("iptables"), "-w", "-t", "nat", "-C", "OUTPUT", *self._jump_args()],
            capture_output=True, timeout=RESTORE_TIMEOUT,
        )  # fmt: skip
        return proc.returncode == 0

    def _app_rules(self, chain: str, rules: AppRules) -> list[str]:
        if len(rules.slots) != SLOTS:
            raise DnatError(f"{SLOTS} slots expected, not {len(rules.slots)}")
        lines = []
        for i, target in enumerate(rules.slots):
            checked = ipv4_target(target)
            if checked is None:
                raise DnatError(f"not an IPv4 address and port: {target!r}")
            lines.append(
                f"-A {chain} -d {rules.vip.address}/32 -p tcp --dport {rules.vip.port + i} "
                f"-j DNAT --to-destination {checked[0]}:{checked[1]}"
            )
        return lines

    def _jump_rule(self, app_id: int, rules: AppRules) -> str:
        last = rules.vip.port + SLOTS - 1
        return (
            f"{self.home_chain} -d {rules.vip.address}/32 -p tcp --dport {rules.vip.port}:{last} "
            f"-j {self.app_chain(app_id)}"
        )

    def _restore(self, lines: list[str], ensure_jump: bool) -> None:
        with _lock:
            _run([_need("iptables-restore"), "--noflush"], _restore_text(lines))
            if ensure_jump and not self._output_jump_present():
                # First in OUTPUT: Docker's own jump there matches published host ports on
                # every local address.
                _run([_need("iptables"), "-w", "-t", "nat", "-I", "OUTPUT", "1",
                      *self._jump_args()], None)  # fmt: skip


def _is_output_jump(line: str, chain: str) -> bool:
    return line.startswith("-A OUTPUT ") and line.endswith(f"-j {chain}")


def _restore_text(lines: list[str]) -> str:
    return "*nat\n" + "\n".join(lines) + "\nCOMMIT\n"


def _need(name: str) -> str:
    found = _binary(name)
    if found is None:
        raise DnatError(f"{name} is not installed (apt-get install iptables)")
    return found


def _run(argv: list[str], stdin: str | None) -> str:
    last = ""
    for _attempt in range(3):  # nf_tables refuses a transaction that raced another: retry
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=RESTORE_TIMEOUT
        )
        if proc.returncode == 0:
            return proc.stdout
        last = "\n".join(
            ln for ln in (proc.stderr or proc.stdout).splitlines() if "Warning:" not in ln
        )
    raise DnatError(f"{os.path.basename(argv[0])} failed: {last.strip() or 'no message'}")
