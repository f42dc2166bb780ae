"""Strict checks for every user-supplied value that ends up inside an nginx config.

nginx has no quoting we could rely on for hostile input, so nothing reaches a config file
unless it matches one of these narrow shapes.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from dockyard.errors import UsageError
from dockyard.names import is_whole_number

MAX_DOMAIN_LENGTH = 253
LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# nginx's size syntax: a number with an optional k/m/g unit; 0 disables the limit.
BODY_SIZE_RE = re.compile(r"^[0-9]{1,9}[kKmMgG]?$")
CONF_DIR_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,255}$")
# A unix socket upstream (the swarm edge proxy's, under the data dir): an absolute path of
# plain characters, no `..` component.
UNIX_UPSTREAM_RE = re.compile(r"^unix:(/[A-Za-z0-9._/-]{1,200})$")


def check_domain(domain: str, allow_wildcard: bool = True) -> str:
    """Return the domain lower-cased, or raise a UsageError saying what is wrong with it."""
    value = domain.strip().lower()
    problem = _domain_problem(value, allow_wildcard)
    if problem:
        raise UsageError(f"Invalid domain {domain!r}: {problem}")
    return value


def _domain_problem(value: str, allow_wildcard: bool) -> str | None:
    if not value:
        return "it is empty"
    if "://" in value:
        return "give a bare host name, without a scheme such as http://"
    if "/" in value:
        return "give a bare host name, without a path"
    if ":" in value:
        return "give a bare host name, without a port"
    if any(c.isspace() for c in value):
        return "it contains whitespace"
    if len(value) > MAX_DOMAIN_LENGTH:
        return f"it is longer than {MAX_DOMAIN_LENGTH} characters"
    labels = value.split(".")
    if labels[0] == "*":
        if not allow_wildcard:
            return "a wildcard is not allowed here"
        if len(labels) < 3:
            return "a wildcard needs at least two labels after it (*.example.com)"
        labels = labels[1:]
    for label in labels:
        if not LABEL_RE.fullmatch(label):
            return (
                "each dot-separated label must be 1-63 letters, digits or dashes, "
                "not starting or ending with a dash"
            )
    return None


def check_upstream(address: str) -> str:
    """`host:port` of a live container: an IP address or host name, and a port; or
    `unix:/path` of a socket that forwards to them."""
    unix = UNIX_UPSTREAM_RE.fullmatch(address)
    if unix is not None:
        if ".." in Path(unix.group(1)).parts:
            raise UsageError(f"Invalid upstream {address!r}: no '..' in a socket path")
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not is_whole_number(port, 5) or not 0 < int(port) < 65536:
        raise UsageError(f"Invalid upstream {address!r}: expected HOST:PORT")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        check_domain(bare, allow_wildcard=False)
        return f"{bare.lower()}:{int(port)}"
    return f"[{ip}]:{int(port)}" if ip.version == 6 else f"{ip}:{int(port)}"


def check_body_size(value: str) -> str:
    if not BODY_SIZE_RE.fullmatch(value):
        raise UsageError(
            f"Invalid client-max-body-size {value!r}: use a number with an optional k, m or g "
            "unit (for example 10m; 0 means no limit)"
        )
    return value.lower()


def check_conf_dir(value: str) -> Path:
    if not CONF_DIR_RE.fullmatch(value) or "/../" in value + "/" or value.endswith("/.."):
        raise UsageError(
            f"Invalid nginx conf dir {value!r}: use an absolute path of letters, digits, "
            "'.', '_', '-' and '/'"
        )
    return Path(value)


MAX_HSTS_MAX_AGE = 2 * 365 * 24 * 3600  # two years: what the preload list asks for, at most


def check_bool(key: str, value: str) -> str:
    if value not in ("true", "false"):
        raise UsageError(f"Invalid {key} {value!r}: use true or false")
    return value


def check_int(key: str, value: str, low: int, high: int) -> int:
    """A decimal integer within [low, high]; nothing else (no sign, no spaces, no 1e3)."""
    digits = is_whole_number(value)
    if not digits or not low <= int(value) <= high:
        raise UsageError(f"Invalid {key} {value!r}: use a whole number from {low} to {high}")
    return int(value)
