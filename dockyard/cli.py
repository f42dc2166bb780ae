"""The entry point: `dockyard serve` and `dockyard [--data-dir DIR] COMMAND …`.

This is the one module that imports every stage, so that their commands and start-up
hooks register into the core.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog

import dockyard.commands  # noqa: F401  (registers apps:*, ssh-keys:*, acl:*, help)
from dockyard import lifecycle
from dockyard.access import LOCAL_ADMIN
from dockyard.context import Context
from dockyard.errors import DockyardError
from dockyard.logs import configure_logging
from dockyard.output import ERROR, Output
from dockyard.registry import dispatch
from dockyard.services import Services
from dockyard.settings import Settings

# Each stage's commands module registers its commands (and hooks) on import.
STAGE_MODULES = ("sshd", "gitrecv", "builder", "deployer", "proxy", "services", "dashboard")

log = structlog.get_logger("dockyard")


def _load_stages() -> None:
    import importlib

    for name in STAGE_MODULES:
        importlib.import_module(name)


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dockyard serve", description="Run the Dockyard server")
    p.add_argument("--data-dir")
    p.add_argument("--ssh-listen", metavar="HOST:PORT")
    p.add_argument("--http-listen", metavar="HOST:PORT")
    p.add_argument("--https-listen", metavar="HOST:PORT")
    p.add_argument("--log-format", choices=("auto", "console", "json"), default="auto")
    return p


async def _serve(settings: Settings) -> None:
    from sshd import start_server

    services = Services(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await lifecycle.run_start_hooks(services)
    server = await start_server(services)
    await asyncio.to_thread(lifecycle.record_server, services)
    log.info("dockyard serving", data_dir=str(settings.data_dir))
    await stop.wait()
    log.info("stopping")
    server.close()
    await server.wait_closed()
    await lifecycle.run_stop_hooks(services)
    await asyncio.to_thread(lifecycle.forget_server, services)
    log.info("stopped")


def serve(argv: list[str]) -> int:
    args = _serve_parser().parse_args(argv)
    configure_logging(args.log_format)
    try:
        settings = Settings.resolve(
            args.data_dir, args.ssh_listen, args.http_listen, args.https_listen
        )
    except DockyardError as exc:
        sys.stderr.write(f"{ERROR}{exc.message}\n")
        return 2
    asyncio.run(_serve(settings))
    return 0


def run_local(argv: list[str]) -> int:
    """Run one command as the local admin, on this machine's stdin/stdout."""
    data_dir = None
    if argv[:1] == ["--data-dir"] and len(argv) >= 2:
        data_dir, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--data-dir="):
        data_dir, argv = argv[0].split("=", 1)[1], argv[1:]
    configure_logging("console")
    try:
        services = Services(Settings.resolve(data_dir))
    except DockyardError as exc:
        sys.stderr.write(f"{ERROR}{exc.message}\n")
        return 1
    stdout, stderr = sys.stdout.buffer, sys.stderr.buffer
    ctx = Context(
        services=services,
        identity=LOCAL_ADMIN,
        stdin=sys.stdin.buffer,
        stdout=stdout,
        stderr=stderr,
        out=Output(stdout, stderr),
        interactive=sys.stdin.isatty(),
        local=True,
    )
    status = dispatch(ctx, argv)
    stdout.flush()
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _load_stages()
    # `serve` may come after `--data-dir DIR` too.
    if "serve" in argv[:3] and argv[: argv.index("serve")] in ([], ["--data-dir", *argv[1:2]]):
        i = argv.index("serve")
        return serve(argv[:i] + argv[i + 1 :])
    return run_local(argv)


if __name__ == "__main__":
    sys.exit(main())
