"""The kinds Dockyard builds in, by command prefix."""

from __future__ import annotations

from services.base import Kind
from services.mysql import MySQL
from services.postgres import Postgres
from services.redis import Redis

KINDS: dict[str, Kind] = {k.name: k for k in (Postgres(), Redis(), MySQL())}
