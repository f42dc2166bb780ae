"""Validation of every user-supplied name before it reaches a path, a container or a file."""

from __future__ import annotations

import re

from dockyard.errors import UsageError

APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# Procfile process types: part of container names (`APP.TYPE.N`) and of `DYNO`.
PROCESS_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Environment variable names as POSIX shells and Docker accept them.
CONFIG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")


def check_app_name(name: str) -> str:
    """Return `name` if it is a valid app name, else raise a clear UsageError."""
    if not APP_NAME_RE.fullmatch(name):
        raise UsageError(
            f"Invalid app name {name!r}: use 1-63 lowercase letters, digits and dashes, "
            "starting with a letter or digit"
        )
    return name


def check_key_name(name: str) -> str:
    if not KEY_NAME_RE.fullmatch(name):
        raise UsageError(
            f"Invalid key name {name!r}: use up to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_config_key(key: str) -> str:
    if not CONFIG_KEY_RE.fullmatch(key):
        raise UsageError(
            f"Invalid config key {key!r}: use letters, digits and '_', not starting with a digit"
        )
    return key


def is_whole_number(text: str, max_digits: int = 12) -> bool:
    """ASCII digits only, and not too many: `str.isdigit` also takes `²` and `٣`, which
    `int()` refuses or reads, and ten thousand digits would overflow what stores them."""
    return re.fullmatch(rf"[0-9]{{1,{max_digits}}}", text) is not None
