"""`init`: make a freshly set-up server usable, as root on the server itself.

Three steps, then `doctor`:

1. The first admin key: the keys of a file (`--key FILE`, `-` for stdin), or else those in
   the invoking user's `~/.ssh/authorized_keys` (the sudo user's when run under sudo),
   which is how Dokku's installer finds the key the administrator logged in with.
2. The global domain (`--domain DOMAIN`, through `domains:set-global`), with a check that a
   random name under it resolves to an address of this machine, or the DNS record to add.
3. A systemd unit, when PID 1 is systemd: `systemd/dockyard.service` with this
   installation's paths, its environment file (written once, then the administrator's),
   enabled, and started unless a `dockyard serve` already runs for this data dir.
   `--systemd-root DIR` (or DOCKYARD_SYSTEMD_ROOT) installs into a tree instead (an image
   being built, a test): the tree says whether systemd runs (`run/systemd/system`), the
   unit is written and enabled there with `systemctl --root`, and nothing is started.

Invariants: running it again changes nothing that is already as asked (a key already
present is reported, never added twice; an unchanged unit is not rewritten; an existing
environment file is never overwritten); it refuses to run over SSH or as another user than
root; a failed step is reported and the remaining steps still run; the exit status is
non-zero when a step failed or `doctor` found something wrong.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dockyard import lifecycle
from dockyard.access import Access
from dockyard.commands.doctor import check_domain_resolution, format_listen
from dockyard.context import Context
from dockyard.errors import Conflict, DockyardError, UsageError
from dockyard.keys import parse_public_key, public_keys
from dockyard.registry import CommandParser, command, dispatch

MAX_KEYS_FILE = 256 * 1024
DEFAULT_KEY_NAME = "admin"
UNIT_NAME = "dockyard.service"
UNIT_DIR = "etc/systemd/system"
ENV_FILE = "etc/dockyard/dockyard.env"
# Where the shipped unit expects things; replaced by this installation's paths.
SHIPPED_EXEC = "/opt/dockyard/.venv/bin/dockyard"
SHIPPED_DOCS = "file:///opt/dockyard/README.md"
# The environment's way to say --systemd-root (an image build; the quick-start harness).
ENV_SYSTEMD_ROOT = "DOCKYARD_SYSTEMD_ROOT"
START_TIMEOUT = 60.0
SYSTEMCTL_TIMEOUT = 60.0


@dataclass
class Outcome:
    failed: list[str] = field(default_factory=list)


def repo_root() -> Path:
    """The checkout Dockyard runs from (setup installs it editable): systemd/ is there."""
    return Path(__file__).resolve().parents[2]


def invoking_home() -> Path:
    """The home of whoever ran the command: under sudo the sudo user's, else $HOME."""
    sudo_user = os.environ.get("SUDO_USER", "")
    if os.geteuid() == 0 and sudo_user and sudo_user != "root":
        try:
            return Path(pwd.getpwnam(sudo_user).pw_dir)
        except KeyError:
            pass
    return Path.home()


@command(
    "init",
    "Set up this server: first admin key, global domain, systemd unit; then doctor",
    "[--key FILE|-] [--name NAME] [--domain DOMAIN] [--no-systemd] [--systemd-root DIR]",
    access=Access.ADMIN,
)
def init(ctx: Context, argv: list[str]) -> int:
    parser = CommandParser("init")
    parser.add_argument("--key", metavar="FILE")
    parser.add_argument("--name", default=DEFAULT_KEY_NAME)
    parser.add_argument("--domain")
    parser.add_argument("--no-systemd", action="store_true")
    parser.add_argument("--systemd-root", metavar="DIR")
    if not ctx.local:
        raise UsageError("init runs on the server itself, as root: dockyard init")
    if os.geteuid() != 0:
        raise UsageError("Run init as root (sudo dockyard init): it installs a systemd unit")
    args = parser.parse_args(argv)
    systemd_root = args.systemd_root or os.environ.get(ENV_SYSTEMD_ROOT) or None
    outcome = Outcome()
    for title, step in (
        ("Admin key", lambda: _admin_keys(ctx, args.key, args.name)),
        ("Global domain", lambda: _domain(ctx, args.domain)),
        ("systemd", lambda: _systemd(ctx, args.no_systemd, systemd_root)),
    ):
        ctx.out.step(title)
        try:
            step()
        except DockyardError as exc:
            ctx.out.error(exc.message)
            outcome.failed.append(title)
    ctx.out.step("Checking the server (doctor)")
    status = dispatch(ctx, ["doctor"])
    ctx.event("init", None, " ".join(argv))
    if outcome.failed:
        ctx.out.error(f"init: {', '.join(outcome.failed)} failed (above); run init again")
        return 1
    return status


# --- 1. the first admin key ----------------------------------------------------------------


def _read_keys(ctx: Context, key: str | None) -> tuple[str, str | None]:
    """(where the keys came from, their text); text None when there is no such file."""
    if key == "-":
        return "stdin", ctx.stdin.read(MAX_KEYS_FILE).decode("utf-8", "replace")
    path = Path(key) if key else invoking_home() / ".ssh" / "authorized_keys"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEYS_FILE + 1)
    except FileNotFoundError:
        if key:
            raise UsageError(f"Cannot read {path}: no such file") from None
        return str(path), None
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_KEYS_FILE:
        raise UsageError(f"{path} is larger than {MAX_KEYS_FILE // 1024} KiB: not a key file")
    return str(path), data.decode("utf-8", "replace")


def _free_name(taken: set[str], base: str) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _admin_keys(ctx: Context, key: str | None, base_name: str) -> None:
    store = ctx.services.keys
    source, text = _read_keys(ctx, key)
    admins = [e for e in store.entries() if e.is_admin]
    if text is None:
        if admins:
            names = ", ".join(e.name for e in admins)
            ctx.out.detail(f"admin keys present ({names}); no {source} to add from")
            return
        raise UsageError(
            f"No admin key: {source} does not exist. Give one: dockyard init --key "
            "/path/to/your-key.pub (the public key you will push with)"
        )
    lines = public_keys(text)
    if not lines:
        if admins:
            ctx.out.detail(f"no public key in {source}; admin keys present: "
                           f"{', '.join(e.name for e in admins)}")  # fmt: skip
            return
        raise UsageError(f"No public key found in {source}")
    for keytext in lines:
        parsed = parse_public_key(keytext)
        existing = store.identify(parsed)
        label = keytext.split()[2] if len(keytext.split()) > 2 else parsed.get_fingerprint()
        if existing is not None:
            role = (
                "an admin" if existing.is_admin
                else "NOT an admin (ssh-keys:remove it, then run init again)"
            )  # fmt: skip
            ctx.out.detail(f"{label}: present as {existing.name}, {role}")
            continue
        name = _free_name({e.name for e in store.entries()}, base_name)
        try:
            entry = store.add(name, keytext, admin=True)
        except Conflict as exc:  # a concurrent add: report and go on
            ctx.out.detail(f"{label}: {exc.message}")
            continue
        ctx.out.detail(f"added key {entry.name}, an admin ({entry.fingerprint}), from {source}")
        ctx.event("ssh-keys:add", None, f"{entry.name} {entry.fingerprint} (init)")


# --- 2. the global domain --------------------------------------------------------------------


def _domain(ctx: Context, domain: str | None) -> None:
    if not domain:
        ctx.out.detail("unchanged (give one with --domain DOMAIN; doctor shows the current one)")
        return
    status = dispatch(ctx, ["domains:set-global", domain])
    if status != 0:
        raise DockyardError(f"The global domain was not set to {domain}")
    finding = check_domain_resolution(domain)
    if finding.ok:
        ctx.out.detail(finding.message)
        return
    ctx.out.detail(finding.message)
    ctx.out.detail(f"to fix: {finding.fix}")
    ctx.out.detail("(a server behind NAT sees its public address on no interface: doctor "
                   "below tries HTTP through it)")  # fmt: skip


# --- 3. systemd -------------------------------------------------------------------------------


def _systemd(ctx: Context, skip: bool, root_arg: str | None) -> None:
    if skip:
        ctx.out.detail("skipped (--no-systemd)")
        return
    root = Path(root_arg) if root_arg else Path("/")
    offline = root_arg is not None
    if not (root / "run/systemd/system").is_dir():
        ctx.out.detail(
            f"PID 1 is not systemd ({_pid1_name(root)}): no unit installed. Keep dockyard "
            "serve running yourself (a terminal, tmux, or your own supervisor)"
        )
        return
    unit_path = root / UNIT_DIR / UNIT_NAME
    changed = _install_unit(ctx, unit_path)
    _install_env_file(ctx, root / ENV_FILE)
    if offline:
        _systemctl(["--root", str(root), "enable", UNIT_NAME])
        ctx.out.detail(f"enabled in {root} (an offline tree: nothing was started)")
        return
    _systemctl(["daemon-reload"])
    _systemctl(["enable", UNIT_NAME])
    ctx.out.detail(f"{UNIT_NAME} enabled (starts at boot)")
    main_pid = _systemctl(["show", "--property", "MainPID", "--value", UNIT_NAME]).strip()
    running = lifecycle.running_server(ctx.services)
    if running is not None and str(running) != main_pid:
        ctx.out.detail(f"a dockyard serve already runs (pid {running}), not under systemd: the "
                       "unit takes over at the next boot; to switch now, stop that one and run "
                       "systemctl start dockyard")  # fmt: skip
        return
    if running is not None:
        if changed:
            ctx.out.detail("the unit changed: systemctl restart dockyard applies it (apps and "
                           "nginx keep serving through a restart)")  # fmt: skip
        else:
            ctx.out.detail(f"{UNIT_NAME} is running (pid {running})")
        return
    _systemctl(["start", UNIT_NAME])
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = lifecycle.running_server(ctx.services)
        if pid is not None:
            ctx.out.detail(f"{UNIT_NAME} started (pid {pid})")
            return
        time.sleep(0.2)
    raise DockyardError(
        f"{UNIT_NAME} did not come up within {START_TIMEOUT:.0f} s: journalctl -u dockyard"
    )


def _pid1_name(root: Path) -> str:
    try:
        return (root / "proc/1/comm").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def unit_text() -> str:
    """The shipped unit with this installation's paths."""
    template = repo_root() / "systemd" / UNIT_NAME
    try:
        text = template.read_text()
    except OSError as exc:
        raise DockyardError(f"Cannot read the unit template {template}: {exc.strerror}") from None
    dockyard = Path(sys.prefix) / "bin" / "dockyard"
    return text.replace(SHIPPED_EXEC, str(dockyard)).replace(
        SHIPPED_DOCS, f"file://{repo_root() / 'README.md'}"
    )


def _install_unit(ctx: Context, path: Path) -> bool:
    """Write the unit if it differs; True when it was written."""
    wanted = unit_text()
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current == wanted:
        ctx.out.detail(f"{path} unchanged")
        return False
    _write(path, wanted, 0o644)
    ctx.out.detail(f"{path} {'installed' if current is None else 'updated'}")
    return True


def _install_env_file(ctx: Context, path: Path) -> None:
    """Written once from systemd/dockyard.env with this data dir and listen addresses;
    afterwards it is the administrator's, only compared."""
    settings = ctx.services.settings
    if path.exists():
        values = _env_values(path.read_text(errors="replace"))
        named = values.get("DOCKYARD_DATA_DIR")
        if named and Path(named) != settings.data_dir:
            ctx.out.warn(f"{path} names data dir {named}, not {settings.data_dir} (the one "
                         "init set up): the service would use the other one")  # fmt: skip
        else:
            ctx.out.detail(f"{path} kept (yours to edit)")
        return
    lines = []
    for line in (repo_root() / "systemd" / "dockyard.env").read_text().splitlines():
        key = line.split("=", 1)[0]
        value = {
            "DOCKYARD_DATA_DIR": str(settings.data_dir),
            "DOCKYARD_SSH_LISTEN": format_listen(settings.ssh_listen),
            "DOCKYARD_HTTP_LISTEN": format_listen(settings.http_listen),
            "DOCKYARD_HTTPS_LISTEN": format_listen(settings.https_listen),
        }.get(key)
        lines.append(f"{key}={value}" if value is not None else line)
    _write(path, "\n".join(lines) + "\n", 0o644)
    ctx.out.detail(f"{path} written (data dir {settings.data_dir})")


def _env_values(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
    return values


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _systemctl(args: list[str]) -> str:
    try:
        proc = subprocess.run(
            ["systemctl", *args], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT
        )
    except FileNotFoundError:
        raise DockyardError("systemctl not found (apt-get install systemd)") from None
    except subprocess.TimeoutExpired:
        raise DockyardError(f"systemctl {' '.join(args)} did not finish") from None
    if proc.returncode != 0:
        raise DockyardError(
            f"systemctl {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout
