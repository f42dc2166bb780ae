"""The app the services tests deploy: stdlib only, so the image is `dockyard-base/python:3` as
it is (no package install at build time, nothing fetched while testing).

It talks to PostgreSQL with a minimal hand-written client of the wire protocol (startup,
SCRAM-SHA-256 as the server asks for it, simple queries) and to Redis with RESP, both
through the URLs Dockyard sets (DATABASE_URL, REDIS_URL, …). Hand-written rather than
`psql` in the image: installing postgresql-client at build time would tie every test run to
the Debian mirror and add tens of seconds; the protocol subset needed is small, and real
SCRAM authentication against the real server is part of what is tested.

Routes (GET): /env/NAME, /pg/VAR/init, /pg/VAR/add/VALUE, /pg/VAR/count, /redis/VAR/set/K/V,
/redis/VAR/get/K, /file/write/NAME/TEXT, /file/read/NAME, /probe/HOST/PORT.
"""

import base64
import hashlib
import hmac
import http.server
import os
import socket
import struct
import urllib.parse

DATA = os.environ.get("DATA_DIR", "/data")


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def _message(s):
    kind = _recv_exact(s, 1)
    (length,) = struct.unpack("!i", _recv_exact(s, 4))
    return kind, _recv_exact(s, length - 4)


def _send(s, kind, body):
    s.sendall(kind + struct.pack("!i", len(body) + 4) + body)


def pg_query(url, sql):
    u = urllib.parse.urlsplit(url)
    user, password = urllib.parse.unquote(u.username), urllib.parse.unquote(u.password)
    s = socket.create_connection((u.hostname, u.port or 5432), timeout=10)
    try:
        params = b"user\0" + user.encode() + b"\0database\0" + u.path[1:].encode() + b"\0\0"
        s.sendall(struct.pack("!ii", len(params) + 8, 196608) + params)
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = "n=,r=" + nonce
        signature = b""
        while True:
            kind, body = _message(s)
            if kind == b"E":
                raise RuntimeError(body.decode(errors="replace"))
            if kind == b"Z":
                break
            if kind != b"R":
                continue
            (code,) = struct.unpack("!i", body[:4])
            if code == 10:  # SASL: SCRAM-SHA-256
                first = ("n,," + first_bare).encode()
                _send(s, b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
            elif code == 11:
                server_first = body[4:].decode()
                fields = dict(item.split("=", 1) for item in server_first.split(","))
                salted = hashlib.pbkdf2_hmac(
                    "sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
                )
                client_key = hmac.new(salted, b"Client Key", "sha256").digest()
                stored = hashlib.sha256(client_key).digest()
                without_proof = "c=biws,r=" + fields["r"]
                auth = ",".join((first_bare, server_first, without_proof)).encode()
                client_sig = hmac.new(stored, auth, "sha256").digest()
                proof = bytes(a ^ b for a, b in zip(client_key, client_sig, strict=True))
                server_key = hmac.new(salted, b"Server Key", "sha256").digest()
                signature = hmac.new(server_key, auth, "sha256").digest()
                _send(s, b"p", (without_proof + ",p=" + base64.b64encode(proof).decode()).encode())
            elif code == 12:
                final = dict(item.split("=", 1) for item in body[4:].decode().split(","))
                if base64.b64decode(final["v"]) != signature:
                    raise RuntimeError("server signature mismatch")
            elif code != 0:
                raise RuntimeError(f"unsupported authentication {code}")
        _send(s, b"Q", sql.encode() + b"\0")
        rows = []
        while True:
            kind, body = _message(s)
            if kind == b"E":
                raise RuntimeError(body.decode(errors="replace"))
            if kind == b"D":
                (count,) = struct.unpack("!h", body[:2])
                pos, row = 2, []
                for _ in range(count):
                    (n,) = struct.unpack("!i", body[pos : pos + 4])
                    pos += 4
                    row.append(None if n < 0 else body[pos : pos + n].decode())
                    pos += max(n, 0)
                rows.append(row)
            if kind == b"Z":
                return rows
    finally:
        s.close()


def redis_command(url, *words):
    u = urllib.parse.urlsplit(url)
    s = socket.create_connection((u.hostname, u.port or 6379), timeout=10)
    f = s.makefile("rb")

    def call(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        line = f.readline()
        if line[:1] == b"-":
            raise RuntimeError(line.decode().strip())
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        return line[1:].decode().strip()

    try:
        if u.password:
            call("AUTH", urllib.parse.unquote(u.password))
        return call(*words)
    finally:
        s.close()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        parts = [urllib.parse.unquote(p) for p in self.path.split("/")[1:]]
        try:
            body = self.route(parts)
            status = 200
        except Exception as exc:  # the test reads the reason
            body, status = f"error: {exc}", 500
        data = str(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self, p):
        if p[0] == "env":
            return os.environ.get(p[1], "<unset>")
        if p[0] == "pg":
            url = os.environ[p[1]]
            if p[2] == "init":
                pg_query(url, "CREATE TABLE IF NOT EXISTS items (v text)")
                return "ok"
            if p[2] == "add":
                value = p[3].replace("'", "''")
                pg_query(url, f"INSERT INTO items VALUES ('{value}')")
                return "ok"
            if p[2] == "count":
                return pg_query(url, "SELECT count(*) FROM items")[0][0]
        if p[0] == "redis":
            url = os.environ[p[1]]
            if p[2] == "set":
                return redis_command(url, "SET", p[3], p[4])
            if p[2] == "get":
                return redis_command(url, "GET", p[3])
        if p[0] == "file":
            path = os.path.join(DATA, os.path.basename(p[2]))
            if p[1] == "write":
                with open(path, "w") as f:
                    f.write(p[3])
                return "ok"
            with open(path) as f:
                return f.read()
        if p[0] == "probe":
            try:
                socket.create_connection((p[1], int(p[2])), timeout=3).close()
                return "open"
            except OSError as exc:
                return f"closed: {exc}"
        return "unknown route"

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
