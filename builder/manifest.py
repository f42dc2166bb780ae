"""The app's own declarations: `Procfile` (process types) and `app.json` (Heroku's manifest).

Both are parsed from the source at the pushed revision, never from a built image, so the
deployer learns an app's formation and health checks without starting a container.
"""

from __future__ import annotations

import json

from builder.errors import BuildFailed
from dockyard.names import PROCESS_TYPE_RE

PROCFILE = "Procfile"
APP_JSON = "app.json"


def parse_procfile(data: bytes | None) -> dict[str, str]:
    """`type: command` lines, in file order; blank lines and `#` comments are skipped.

    A repeated type keeps its last command, as Heroku does. A malformed line fails the build:
    silently dropping a process type would deploy an app without it.
    """
    if data is None:
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BuildFailed("Procfile is not valid UTF-8") from None
    processes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name, command = name.strip(), command.strip()
        if not sep or not command:
            raise BuildFailed(f"Procfile line {number}: expected `type: command`, got {raw!r}")
        if not PROCESS_TYPE_RE.fullmatch(name):
            raise BuildFailed(
                f"Procfile line {number}: invalid process type {name!r} "
                "(use lowercase letters, digits, '_' and '-', starting with a letter or digit)"
            )
        processes[name] = command
    return processes


def parse_app_json(data: bytes | None) -> dict:
    """The app.json object, `{}` when absent; anything but a JSON object fails the build."""
    if data is None:
        return {}
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildFailed(f"app.json is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BuildFailed("app.json must contain a JSON object")
    return value
