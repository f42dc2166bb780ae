"""`postgres:export | postgres:import` round trip of a 100,000-row database, against
`pg_dump | psql` run directly against the same servers.

A real `dockyard serve` (temp data dir, loopback ports) runs two PostgreSQL services,
`bench-src` (one table, 100,000 rows: id, text, numeric, timestamp, with a primary key) and
`bench-dst`. Dockyard's run is the real user's pipeline: `ssh … postgres:export bench-src |
ssh … postgres:import bench-dst` (two OpenSSH clients, our SSH server, `pg_dump -Fc` and
`pg_restore --clean` by `docker exec` in the service containers, the dump streamed through
both SSH channels). The clock stops when both clients have exited; the destination is then
checked to hold every row.

Baselines, on the same servers, from a client container on the host network reaching both
containers' bridge addresses (no SSH, no Dockyard): `pg_dump | psql` (plain SQL, what the
issue names) and, for information, `pg_dump -Fc | pg_restore --clean` (the same formats
Dockyard uses). Candidate and baselines alternate; medians of `--runs` (default 5).

    .venv/bin/python bench/bench_services.py [--runs 5] [--rows 100000]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import _provision, remove_leftovers_of, start_server, stop_server  # noqa: E402

IMAGE = os.environ.get("BENCH_POSTGRES_IMAGE", "dockyard-services/postgres:15")
CLIENT = "dockyard-bench-pgclient"
TIMEOUT = 600


def ssh(server, *words: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    line = " ".join(shlex.quote(w) for w in words)
    proc = subprocess.run(
        [*server.ssh_args(server.admin_key), line], input=input, capture_output=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{line} failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()}")
    return proc


def dockyard_round_trip(server) -> float:
    start = time.perf_counter()
    export = subprocess.Popen(
        [*server.ssh_args(server.admin_key), "postgres:export bench-src"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    imported = subprocess.run(
        [*server.ssh_args(server.admin_key), "postgres:import bench-dst"],
        stdin=export.stdout, capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    export.stdout.close()  # type: ignore[union-attr]
    status = export.wait(timeout=TIMEOUT)
    elapsed = time.perf_counter() - start
    if status != 0 or imported.returncode != 0:
        raise RuntimeError(f"round trip failed: export {status}, import {imported.stderr!r}")
    return elapsed


def client_exec(script: str, env: dict[str, str]) -> float:
    args = ["docker", "exec"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    start = time.perf_counter()
    proc = subprocess.run([*args, CLIENT, "bash", "-o", "pipefail", "-c", script],
                          capture_output=True, timeout=TIMEOUT)  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"baseline failed: {proc.stderr.decode()[-2000:]}")
    return elapsed


def count_rows(server, name: str) -> int:
    out = ssh(server, "postgres:connect", name, input=b"SELECT count(*) FROM items;\n")
    return int(out.stdout.decode().split("\n")[2].strip())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-bench-services-"))
    server = start_server(*_provision(tmp))
    try:
        ssh(server, "postgres:set", "--global", "image", IMAGE)
        for name in ("bench-src", "bench-dst"):
            ssh(server, "postgres:create", name)
        fill = (
            "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, "
            "amount numeric(12,2), created timestamptz NOT NULL DEFAULT now());\n"
            f"INSERT INTO items SELECT g, md5(g::text), g * 1.5, now() "
            f"FROM generate_series(1, {args.rows}) g;\n"
        )
        ssh(server, "postgres:connect", "bench-src", input=fill.encode())
        dsn = {n: ssh(server, "postgres:info", n, "--dsn").stdout.decode().strip()
               for n in ("bench-src", "bench-dst")}  # fmt: skip
        ip = {n: ssh(server, "postgres:info", n, "--internal-ip").stdout.decode().strip()
              for n in ("bench-src", "bench-dst")}  # fmt: skip
        password = {n: dsn[n].split(":")[2].split("@")[0] for n in dsn}
        subprocess.run(["docker", "rm", "-f", CLIENT], capture_output=True)
        subprocess.run(
            ["docker", "run", "-d", "--name", CLIENT, "--network", "host", "--entrypoint",
             "sleep", IMAGE, "infinity"], check=True, capture_output=True,
        )  # fmt: skip
        src = f"-h {ip['bench-src']} -U postgres"
        dst = f"-h {ip['bench-dst']} -U postgres"
        # One password file for both servers; the scripts name no secret.
        passfile = (f"{ip['bench-src']}:5432:*:postgres:{password['bench-src']}\n"
                    f"{ip['bench-dst']}:5432:*:postgres:{password['bench-dst']}\n")  # fmt: skip
        subprocess.run(["docker", "exec", "-i", CLIENT, "sh", "-c",
                        "cat > /tmp/pgpass && chmod 600 /tmp/pgpass"],
                       input=passfile.encode(), check=True)  # fmt: skip
        env = {"PGPASSFILE": "/tmp/pgpass"}
        plain = (f"psql -q {dst} bench_dst -c 'DROP TABLE IF EXISTS items' >/dev/null && "
                 f"pg_dump {src} bench_src | psql -q -v ON_ERROR_STOP=1 {dst} bench_dst "
                 ">/dev/null")  # fmt: skip
        custom = (f"pg_dump -Fc --no-owner --no-acl {src} bench_src | pg_restore --clean "
                  f"--if-exists --no-owner --no-acl --exit-on-error {dst} -d bench_dst")
        size = subprocess.run(
            ["docker", "exec", "-e", "PGPASSFILE=/tmp/pgpass", CLIENT, "sh", "-c",
             f"pg_dump -Fc --no-owner --no-acl {src} bench_src | wc -c"],
            capture_output=True, check=True,
        ).stdout.decode().strip()  # fmt: skip

        ours, base_plain, base_custom = [], [], []
        for _ in range(args.runs):
            ours.append(dockyard_round_trip(server))
            assert count_rows(server, "bench-dst") == args.rows
            base_plain.append(client_exec(plain, env))
            assert count_rows(server, "bench-dst") == args.rows
            base_custom.append(client_exec(custom, env))
            assert count_rows(server, "bench-dst") == args.rows
        version = subprocess.run(["docker", "exec", CLIENT, "postgres", "--version"],
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
        m_ours, m_plain, m_custom = (statistics.median(x) for x in (ours, base_plain, base_custom))
        print(f"conditions: {args.rows:,} rows ({int(size):,} bytes as pg_dump -Fc), "
              f"{version}, image {IMAGE}, {os.cpu_count()} cores, loopback SSH, "
              f"{args.runs} interleaved runs, medians")  # fmt: skip
        print(f"dockyard  ssh postgres:export | ssh postgres:import : {m_ours:.3f} s  "
              f"(runs: {', '.join(f'{x:.2f}' for x in ours)})")
        print(f"baseline  pg_dump | psql (direct)                   : {m_plain:.3f} s  "
              f"(runs: {', '.join(f'{x:.2f}' for x in base_plain)})")
        print(f"info      pg_dump -Fc | pg_restore (direct)         : {m_custom:.3f} s  "
              f"(runs: {', '.join(f'{x:.2f}' for x in base_custom)})")
        print(f"ratio dockyard / pg_dump|psql: {m_ours / m_plain:.2f}; "
              f"dockyard / pg_dump -Fc|pg_restore: {m_ours / m_custom:.2f}")
    finally:
        subprocess.run(["docker", "rm", "-f", CLIENT], capture_output=True)
        stop_server(server)
        remove_leftovers_of(server.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
