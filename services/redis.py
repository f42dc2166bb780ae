"""Redis (`redis:*`): the official `redis` image's contract.

The server runs as `redis-server --requirepass PASSWORD --dir /data` (the official image
takes its settings as arguments or a config file) with RDB snapshots at the image's
defaults, so a stop (SIGTERM) saves first. The URL is Dokku's:
`redis://:PASSWORD@dokku-redis-NAME:6379` (redis-cli 7.0 itself refuses an empty user
name in a URL, so Dockyard's own tools pass the password as REDISCLI_AUTH instead).
Export is an RDB snapshot taken online over the replication protocol (`redis-cli --rdb
-`); import stops the server, puts the RDB file in place of the data and starts it again,
as dokku-redis does.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, BinaryIO

from services.base import Kind, Service

if TYPE_CHECKING:
    from services.runtime import Runtime

RDB = "dump.rdb"
CHUNK = 65536
# Constant script: the password reaches redis-cli only through REDISCLI_AUTH.
_PING = 'test "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG'


class Redis(Kind):
    name = "redis"
    title = "Redis"
    # Built from Debian packages by scripts/build-service-images.sh where nothing can be pulled.
    local_image = "dockyard-services/redis:7"
    default_image = "redis:7"
    port = 6379
    data_path = "/data"
    scheme = "redis"
    default_alias = "REDIS"
    variable = "REDIS"
    dump_name = "dump.rdb"

    def url(self, svc: Service, scheme: str | None = None) -> str:
        return f"{scheme or self.scheme}://:{svc.password}@{self.host(svc)}:{self.port}"

    def command(self, svc: Service) -> list[str] | None:
        return ["redis-server", "--requirepass", svc.password, "--dir", self.data_path]

    def _env(self, svc: Service) -> dict[str, str]:
        return {"REDISCLI_AUTH": svc.password}

    def ready_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return ["sh", "-c", _PING], self._env(svc)

    def client_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)], self._env(svc)

    def export_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--rdb", "-"], self._env(svc)

    def import_stream(self, runtime: Runtime, svc: Service, source: object) -> None:
        """Stop, replace the RDB file (streamed to a temporary file, then renamed), drop
        any append-only files that would win over it, start, wait until it answers."""
        from services.runtime import ServiceError

        data = runtime.data_dir(svc)
        tmp = data / f".{RDB}.import"
        stream: BinaryIO = source  # type: ignore[assignment]
        read = getattr(stream, "read1", None) or stream.read
        # The directory is writable from inside the container: never follow a link
        # planted there, and create the file afresh.
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        head = b""
        with os.fdopen(fd, "wb") as f:
            owner = os.stat(data, follow_symlinks=False)
            os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                if len(head) < 5:
                    head += chunk[:5]
                f.write(chunk)
        if not head.startswith(b"REDIS"):
            tmp.unlink()
            raise ServiceError("Not a Redis RDB dump (it does not start with REDIS)")
        runtime.stop(svc)
        os.replace(tmp, data / RDB)
        shutil.rmtree(data / "appendonlydir", ignore_errors=True)
        (data / "appendonly.aof").unlink(missing_ok=True)
        found = runtime.container(svc)
        if found is not None:
            found.start()
        runtime.wait_ready(svc)
