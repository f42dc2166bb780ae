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
    """The app.json object, `{}` when absent. `//` and `/* */` comments are allowed, as
    Dokku allows them; anything but a JSON object, or a `formation` that is not a whole
    number of processes per type, fails the build."""
    if data is None:
        return {}
    try:
        value = json.loads(strip_json_comments(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildFailed(f"app.json is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BuildFailed("app.json must contain a JSON object")
    _check_formation(value.get("formation"))
    return value


MAX_QUANTITY = 100


def _check_formation(formation: object) -> None:
    if formation is None:
        return
    if not isinstance(formation, dict):
        raise BuildFailed('app.json formation must be an object: {"web": {"quantity": 1}}')
    for process_type, entry in formation.items():
        quantity = entry.get("quantity", 1) if isinstance(entry, dict) else None
        if (
            not PROCESS_TYPE_RE.fullmatch(str(process_type))
            or type(quantity) is not int
            or not (0 <= quantity <= MAX_QUANTITY)
        ):
            raise BuildFailed(
                f"app.json formation.{process_type}: expected a process type with a "
                f"quantity from 0 to {MAX_QUANTITY}"
            )


def strip_json_comments(text: str) -> str:
    """JSON with `//` line and `/* */` block comments removed; text inside strings is kept
    as it is, and every comment becomes a space so error positions stay near."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            out.append(" ")
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise BuildFailed("app.json has a /* comment that is never closed")
            out.append(" ")
            i = end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)
