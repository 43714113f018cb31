"""Run inside a throw-away namespace by test_checks_netns: hostile HTTP/TCP servers on loopback
and the check runner against each; prints {case: [ok, detail, seconds]} as JSON."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from ipaddress import IPv4Address

from iprotate.cluster.model import Check
from iprotate.engine.checks import run_once

VIP = (IPv4Address("203.0.113.10"),)


def serve(port: int, answer: bytes | None, endless: bool = False) -> None:
    """Accept forever; send `answer` (None: say nothing), or an endless line."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)

    def loop() -> None:
        conns = []
        while True:
            c, _ = s.accept()
            conns.append(c)  # keep them open
            if endless:
                threading.Thread(target=_flood, args=(c,), daemon=True).start()
            elif answer is not None:
                c.sendall(answer)
                c.close()

    threading.Thread(target=loop, daemon=True).start()


def _flood(c: socket.socket) -> None:
    try:
        while True:
            c.sendall(b"X" * 65536)
    except OSError:
        pass


def http(port: int, expect: int | None = None) -> Check:
    return Check(name="h", kind="http", target=f"http://127.0.0.1:{port}/x", vips=VIP,
                 expect=expect, interval=1.0, timeout=0.5)  # fmt: skip


async def main() -> dict[str, list[object]]:
    serve(9001, None)
    serve(9002, None, endless=True)
    serve(9003, b"\x00\xffgarbage\r\n")
    serve(9004, b"HTTP/1.1 404 Not Found\r\n\r\n")
    serve(9005, b"HTTP/1.1 301 Moved\r\nLocation: /\r\n\r\n")
    serve(9006, b"HTTP/1.0 204 No Content\r\n\r\n")
    serve(9007, b"")
    serve(9009, b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n")  # latin-1 superscript digits
    time.sleep(0.1)
    cases = {
        "silent": http(9001),
        "endless": http(9002),
        "garbage": http(9003),
        "404": http(9004),
        "301": http(9005),
        "204_expect_200": http(9006, expect=200),
        "204_expect_204": http(9006, expect=204),
        "closed": http(9007),
        "superscript": http(9009),
        "refused": http(9008),
        "tcp_ok": Check(name="t", kind="tcp", target="127.0.0.1:9001", vips=VIP),
        "tcp_refused": Check(name="t", kind="tcp", target="127.0.0.1:9008", vips=VIP),
    }
    out = {}
    # Every case at once: none may hold up another, or the loop.
    results = await asyncio.gather(*(run_once(c) for c in cases.values()))
    for name, r in zip(cases, results, strict=True):
        out[name] = [r.ok, r.detail, round(r.seconds, 3)]
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
