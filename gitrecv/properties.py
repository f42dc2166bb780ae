"""The git stage's settings, declared once (`git:set`, `git:report` come from these)."""

from __future__ import annotations

import re

from dulwich.refs import check_ref_format

from dockyard.properties import BadValue, Level, PropertyGroup, whole_number

SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE_RE = re.compile(r"^\s*(\d{1,15})\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
DAY = 24 * 3600


def parse_size(text: str) -> int:
    """`1048576`, `512K`, `100M`, `1G`, `2GiB` → bytes (binary multiples, as git does)."""
    match = SIZE_RE.match(text)
    if not match or int(match.group(1)) == 0:
        raise BadValue("takes a positive size with K, M or G, like 100M")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).upper()]


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= SIZE_UNITS[unit] and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)


def _branch(value: str) -> str:
    if not check_ref_format(b"refs/heads/" + value.encode()):
        raise BadValue("takes a branch name in git's ref format")
    return value


GIT = PropertyGroup("git")
DEPLOY_BRANCH = GIT.declare(
    "deploy-branch", _branch,
    help="the branch whose pushes deploy (unset: the first branch pushed, main or master)",
)  # fmt: skip
MAX_PUSH_SIZE = GIT.declare(
    "max-push-size", lambda v: format_size(parse_size(v)), parse_size, default="1G",
    levels=Level.GLOBAL, help="the largest pack a push may send",
)  # fmt: skip
MAX_OBJECT_SIZE = GIT.declare(
    "max-object-size", lambda v: format_size(parse_size(v)), parse_size, default="100M",
    levels=Level.GLOBAL,
    help="the largest single file (object) a push may carry, inflated: a push's memory bound",
)  # fmt: skip
GC_INTERVAL = GIT.declare(
    "gc-interval", whole_number(1, 366 * DAY), int, default=str(DAY), levels=Level.GLOBAL,
    help="seconds between scheduled repacks of each repository",
)  # fmt: skip


HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252}[A-Za-z0-9])?$")


def _hosts(value: str) -> str:
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    if not hosts or not all(HOST_RE.fullmatch(h) for h in hosts):
        raise BadValue("takes host names or addresses, separated by commas")
    return ",".join(hosts)


SUBMODULE_PRIVATE_HOSTS = GIT.declare(
    "submodule-private-hosts", _hosts, lambda v: [h for h in v.split(",") if h],
    levels=Level.GLOBAL,
    help="hosts on private networks that submodules may be fetched from (an internal git)",
)  # fmt: skip
