#!/bin/bash
# Official-image contract: on first start (no mysql/ system schema) the data dir is
# initialised, root gets MARIADB_ROOT_PASSWORD (or MYSQL_ROOT_PASSWORD), MARIADB_DATABASE
# is created and MARIADB_USER/MARIADB_PASSWORD is granted everything on it. The temporary
# server used for that listens on no TCP port, so a TCP ping answers only the real one.
set -Eeo pipefail
if [ "${1:0:1}" = '-' ]; then set -- mariadbd "$@"; fi
if [ "$1" = 'mariadbd' ] || [ "$1" = 'mysqld' ]; then
    if [ "$(id -u)" = '0' ]; then
        find /var/lib/mysql /run/mysqld \! -user mysql -exec chown mysql:mysql '{}' +
        exec gosu mysql "$BASH_SOURCE" "$@"
    fi
    ROOT_PW=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
    DB=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
    USER_NAME=${MARIADB_USER:-${MYSQL_USER:-}}
    USER_PW=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
    if [ ! -d /var/lib/mysql/mysql ]; then
        if [ -z "$ROOT_PW" ]; then
            echo "error: MARIADB_ROOT_PASSWORD (or MYSQL_ROOT_PASSWORD) is not set" >&2
            exit 1
        fi
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
            --auth-root-authentication-method=normal >/dev/null
        sock=/run/mysqld/init.sock
        "$@" --skip-networking --socket="$sock" &
        pid=$!
        for _ in $(seq 60); do
            mariadb-admin --socket="$sock" -uroot ping >/dev/null 2>&1 && break
            sleep 0.5
        done
        sql_string() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }
        sql_ident() { printf '`%s`' "${1//\`/\`\`}"; }
        {
            echo "SET @@SESSION.SQL_LOG_BIN=0;"
            echo "DELETE FROM mysql.global_priv WHERE User='' OR (User='root' AND Host NOT IN ('localhost'));"
            echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $(sql_string "$ROOT_PW");"
            echo "CREATE USER 'root'@'%' IDENTIFIED BY $(sql_string "$ROOT_PW");"
            echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
            if [ -n "$DB" ]; then echo "CREATE DATABASE IF NOT EXISTS $(sql_ident "$DB");"; fi
            if [ -n "$USER_NAME" ] && [ -n "$USER_PW" ]; then
                echo "CREATE USER $(sql_string "$USER_NAME")@'%' IDENTIFIED BY $(sql_string "$USER_PW");"
                if [ -n "$DB" ]; then
                    echo "GRANT ALL ON $(sql_ident "$DB").* TO $(sql_string "$USER_NAME")@'%';"
                fi
            fi
            echo "FLUSH PRIVILEGES;"
        } | mariadb --socket="$sock" -uroot
        for f in /docker-entrypoint-initdb.d/*; do
            case "$f" in
                *.sql) mariadb --socket="$sock" -uroot -p"$ROOT_PW" "${DB:-mysql}" <"$f" ;;
            esac
        done
        kill "$pid"
        wait "$pid" || true
        echo "MariaDB init process done. Ready for start up."
    fi
fi
exec "$@"
