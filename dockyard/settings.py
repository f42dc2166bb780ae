"""Where Dockyard keeps its data and where it listens: flags, then environment, then defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.errors import UsageError
from dockyard.names import is_whole_number

ENV_DATA_DIR = "DOCKYARD_DATA_DIR"
ENV_SSH_LISTEN = "DOCKYARD_SSH_LISTEN"
ENV_HTTP_LISTEN = "DOCKYARD_HTTP_LISTEN"
ENV_HTTPS_LISTEN = "DOCKYARD_HTTPS_LISTEN"

DEFAULT_SSH_LISTEN = "0.0.0.0:2222"
DEFAULT_HTTP_LISTEN = "0.0.0.0:80"
DEFAULT_HTTPS_LISTEN = "0.0.0.0:443"


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/dockyard")
    return Path.home() / ".local" / "share" / "dockyard"


def parse_listen(value: str) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 as `[::1]:PORT`) into host and port."""
    host, sep, port = value.rpartition(":")
    if not sep or not is_whole_number(port, 5) or not 0 <= int(port) <= 65535:
        raise UsageError(f"Invalid listen address {value!r}: expected HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    ssh_listen: tuple[str, int] = field(default_factory=lambda: parse_listen(DEFAULT_SSH_LISTEN))
    http_listen: tuple[str, int] = field(default_factory=lambda: parse_listen(DEFAULT_HTTP_LISTEN))
    https_listen: tuple[str, int] = field(
        default_factory=lambda: parse_listen(DEFAULT_HTTPS_LISTEN)
    )

    @classmethod
    def resolve(
        cls,
        data_dir: str | None = None,
        ssh_listen: str | None = None,
        http_listen: str | None = None,
        https_listen: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            data_dir=Path(data_dir or env.get(ENV_DATA_DIR) or default_data_dir()).absolute(),
            ssh_listen=parse_listen(ssh_listen or env.get(ENV_SSH_LISTEN) or DEFAULT_SSH_LISTEN),
            http_listen=parse_listen(
                http_listen or env.get(ENV_HTTP_LISTEN) or DEFAULT_HTTP_LISTEN
            ),
            https_listen=parse_listen(
                https_listen or env.get(ENV_HTTPS_LISTEN) or DEFAULT_HTTPS_LISTEN
            ),
        )

    # The layout of the data dir, named once so no stage builds these paths by hand.
    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.db"

    @property
    def authorized_keys(self) -> Path:
        return self.data_dir / "authorized_keys"

    @property
    def host_keys_dir(self) -> Path:
        return self.data_dir / "host_keys"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def builds_dir(self) -> Path:
        return self.data_dir / "builds"

    @property
    def nginx_dir(self) -> Path:
        return self.data_dir / "nginx"

    @property
    def letsencrypt_dir(self) -> Path:
        return self.data_dir / "letsencrypt"

    @property
    def locks_dir(self) -> Path:
        return self.data_dir / "locks"

    def ensure_layout(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (self.host_keys_dir, self.repos_dir, self.builds_dir, self.locks_dir):
            d.mkdir(exist_ok=True, mode=0o700)
