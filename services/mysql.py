"""MySQL / MariaDB (`mysql:*`): the official `mysql` and `mariadb` images' contract.

The container gets MYSQL_ROOT_PASSWORD, MYSQL_DATABASE=<database>, MYSQL_USER=mysql and
MYSQL_PASSWORD (both official images read these; MariaDB also reads MARIADB_*); data lives
in /var/lib/mysql. The URL is dokku-mysql's:
`mysql://mysql:PASSWORD@dokku-mysql-NAME:3306/DATABASE`. Export is `mysqldump
--single-transaction` (one consistent snapshot of InnoDB tables, taken online), import
replays it with the client as root. MariaDB 11 ships its tools only as `mariadb*`, MySQL
only as `mysql*`: each tool is looked up under both names, in the container, with the
names passed as arguments (no user input is ever part of the script).
"""

from __future__ import annotations

from services.base import Kind, Service

USER = "mysql"
# The first name that exists in the image is run: `sh -c SCRIPT NAME1 NAME2 ARGS…`.
_EITHER = 'if command -v "$0" >/dev/null 2>&1; then t=$0; else t=$1; fi; shift; exec "$t" "$@"'


def _tool(mariadb: str, mysql: str, *args: str) -> list[str]:
    return ["sh", "-c", _EITHER, mariadb, mysql, *args]


class MySQL(Kind):
    name = "mysql"
    title = "MySQL"
    # Built from Debian packages by scripts/build-service-images.sh where nothing can be pulled.
    local_image = "dockyard-services/mariadb:10.11"
    default_image = "mysql:8"
    port = 3306
    data_path = "/var/lib/mysql"
    scheme = "mysql"
    default_alias = "DATABASE"
    variable = "MYSQL"
    dump_name = "dump.sql"
    needs_root_password = True

    def url(self, svc: Service, scheme: str | None = None) -> str:
        return (
            f"{scheme or self.scheme}://{USER}:{svc.password}@{self.host(svc)}:{self.port}/"
            f"{svc.database}"
        )

    def environment(self, svc: Service) -> dict[str, str]:
        return {
            "MYSQL_ROOT_PASSWORD": svc.root_password, "MYSQL_DATABASE": svc.database,
            "MYSQL_USER": USER, "MYSQL_PASSWORD": svc.password,
        }  # fmt: skip

    def _tcp(self) -> list[str]:
        return ["--protocol=tcp", "-h", "127.0.0.1", "-P", str(self.port)]

    def ready_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        # TCP: the server the images run during first-start init has networking off. A
        # real login, so "alive but refusing" does not count as ready.
        return (
            _tool("mariadb", "mysql", *self._tcp(), "-uroot", "-e", "SELECT 1"),
            {"MYSQL_PWD": svc.root_password},
        )

    def client_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return (
            _tool("mariadb", "mysql", *self._tcp(), f"-u{USER}", svc.database),
            {"MYSQL_PWD": svc.password},
        )

    def export_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return (
            _tool("mariadb-dump", "mysqldump", *self._tcp(), "-uroot", "--single-transaction",
                  "--quick", "--routines", "--triggers", "--no-tablespaces", svc.database),
            {"MYSQL_PWD": svc.root_password},
        )  # fmt: skip

    def import_argv(self, svc: Service) -> tuple[list[str], dict[str, str]]:
        return (
            _tool("mariadb", "mysql", *self._tcp(), "-uroot", svc.database),
            {"MYSQL_PWD": svc.root_password},
        )
