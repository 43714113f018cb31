"""A client for the health-check tests: `check_client.py SECONDS PORT VIP...` opens a connection
to every VIP every 20 ms and GETs /, for SECONDS; prints {vip: failed requests} as JSON."""

from __future__ import annotations

import json
import socket
import sys
import time


def get(vip: str, port: int) -> bool:
    try:
        with socket.create_connection((vip, port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


if __name__ == "__main__":
    seconds, port, vips = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    failed = dict.fromkeys(vips, 0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for v in vips:
            failed[v] += 0 if get(v, port) else 1
        time.sleep(0.02)
    print(json.dumps(failed))
