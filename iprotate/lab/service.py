"""The lab's service: a tiny HTTP server a lab host runs, answering every GET with its name.

`python -m iprotate.lab.service --name alpha --port 8080`, started in the host's namespace by the
lab (stopped by its PID). The lab's `[[checks]]` entry checks it on 127.0.0.1 and the client
asks it on each VIP, so the client sees which host *serves* an address, not only which one
answers ARP: `break HOST` stops it, and the addresses follow the service to the next host.
"""

from __future__ import annotations

import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

import click

DEFAULT_PORT = 8080


def handler_for(name: str) -> type[BaseHTTPRequestHandler]:
    """A request handler answering `NAME\\n` to GET and HEAD, quietly."""
    body = f"{name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        timeout = 5.0  # a client that connects and sends nothing holds a thread this long only

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def _answer(self, with_body: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request every 0.2 s from the check would drown the lab's logs

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never keeps the server from exiting
    allow_reuse_address = True  # `fix` right after `break` binds again at once
    address_family = socket.AF_INET6  # dual-stack: the lab's IPv6 VIPs are served too

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@click.command()
@click.option("--name", required=True, help="What every answer says (the host's name).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
def serve(name: str, port: int) -> None:
    """Answer HTTP on every address of this namespace with NAME, until SIGTERM."""
    signal.signal(signal.SIGTERM, _exit)
    with Server(("::", port), handler_for(name)) as server:
        print(f"{name}: serving HTTP on port {port}", file=sys.stderr, flush=True)
        server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    serve()
