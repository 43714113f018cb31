"""A tiny HTTP service for the health-check tests: `check_service.py PORT [ADDRESS]` answers every
GET with 200 on ADDRESS:PORT (default 127.0.0.1) until it is stopped (by its PID)."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    address = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    ThreadingHTTPServer((address, int(sys.argv[1])), Handler).serve_forever()
