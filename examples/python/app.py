"""The Python example: a web app on $PORT, with the standard library only.

Detected as Python by requirements.txt (empty: nothing to install); `python3 app.py` is the
default web process when app.py exists. It greets with $GREETING when that is set
(`config:set hello GREETING="'Good morning'"`).
"""

import http.server
import os
import platform


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        greeting = os.environ.get("GREETING", "Hello")
        body = f"{greeting} from Python {platform.python_version()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# The PORT contract: listen on all interfaces, on the port Dockyard gives (5000 by default).
port = int(os.environ.get("PORT", "5000"))
http.server.ThreadingHTTPServer(("", port), Hello).serve_forever()
