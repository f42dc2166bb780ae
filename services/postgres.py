"""PostgreSQL (`postgres:*`): the official `postgres` image's contract.

The container gets POSTGRES_PASSWORD, POSTGRES_USER=postgres and POSTGRES_DB=<database>
(the service name with dashes as underscores, as dokku-postgres names it); data lives in
/var/lib/postgresql/data. The URL is Dokku's:
`postgres://postgres:PASSWORD@dokku-postgres-NAME:5432/DATABASE`. Export is `pg_dump -Fc`
(custom format, consistent: one snapshot, taken online), import is `pg_restore --clean
--if-exists`, as dokku-postgres does; the owner and grants are not carried
(`--no-owner --no-acl`), so a dump loads into any service.
"""

from __future__ import annotations

from services.base import Kind, Service

USER = "postgres"


class Postgres(Kind):
    name = "postgres"
    title = "Postgres"
    # Built from Debian packages by scripts/build-service-images.sh where nothing can be pulled.
    local_image = "dockyard-services/postgres:15"
    default_image = "postgres:16"
    port = 5432
    data_path = "/var/lib/postgresql/data"
    scheme = "postgres"
    default_alias = "DATABASE"
    variable = "POSTGRES"
    dump_name = "dump.pgcustom"

    def url(self, svc: Service, scheme: str | None = None) -> str:
        return (
            f"{scheme or self.scheme}://{USER}:{svc.password}@{self.host(svc)}:{self.port}/"
            f"{svc.database}"
        )

    def environment(self, svc: Service) -> dict[str, str]:
        return {"POSTGRES_PASSWORD": svc.password, "POSTGRES_USER": USER,
                "POSTGRES_DB": svc.database}  # fmt: skip

    def _client_env(self, svc: Service) -> dict[str, str]:
        return {"PGPASSWORD": svc.password, "PGCONNECT_TIMEOUT": "10"}

    def _target(self, svc: Service) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", USER]

    def ready_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        # TCP on 127.0.0.1: the server the image runs during first-start init listens on
        # no TCP port, so this answers only once the real server is up.
        return ["pg_isready", "-q", *self._target(svc), "-d", svc.database], {}

    def client_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return ["psql", *self._target(svc), svc.database], self._client_env(svc)

    def export_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return (
            ["pg_dump", "-Fc", "--no-owner", "--no-acl", *self._target(svc), "-w", svc.database],
            self._client_env(svc),
        )

    def import_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return (
            ["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-acl", "--exit-on-error",
             *self._target(svc), "-w", "-d", svc.database],
            self._client_env(svc),
        )  # fmt: skip
