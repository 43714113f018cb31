"""The service benchmark's two ends, each run in a namespace of the lab (bench/service.py).

    service_io.py serve --name alpha [--port 8080] [--hold 0.1]
    service_io.py client --out FILE [--port 8080] [--every 0.01] VIP...

`serve` is the service behind the VIPs: every TCP connection gets the host's name and a newline at
once, then, `--hold` seconds later, `bye` and the close. A connection is therefore open for a
while, as real ones are, and one that the service's death or a VIP's move cuts can be told from
one that ended well.

`watch` is keepalived's check at a sub-second interval (its scripts run at most once a second):
the same check as bench/service-check, every `--interval`, with fall/rise, its state written to
a file that keepalived's `track_file` follows.

`client` opens a new connection to every VIP every `--every` seconds (each its own, all
concurrent) and writes one line per connection when it ends:

    VIP_INDEX T_START T_SERVED T_END HOST OUTCOME

times from time.monotonic() (the same clock in every namespace of one machine), T_SERVED -1 if no
name came; HOST the name that answered or `-`; OUTCOME `ok` (name, bye, close), `cut` (a name,
then closed or reset before bye: the connection was open when something broke), or why it was
never served: `refused`, `reset`, `eof`, `timeout` or an errno name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import resource
import signal
import sys
import time

CONNECT_TIMEOUT = 1.0  # a SYN nobody answers (no host holds the VIP) counts as failed after this
READ_TIMEOUT = 2.0


async def serve(name: str, port: int, hold: float) -> None:
    body = f"{name}\n".encode()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(body)
            await writer.drain()
            await asyncio.sleep(hold)
            writer.write(b"bye\n")
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(one, "0.0.0.0", port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"{name}: serving on port {port}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno)).lower()
    return type(e).__name__


async def attempt(i: int, vip: str, port: int, out: list[str]) -> None:
    t_start = time.monotonic()
    t_served = -1.0
    host = "-"
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(vip, port), CONNECT_TIMEOUT)
        line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        if not line:
            outcome = "eof"
        else:
            t_served = time.monotonic()
            host = line.decode(errors="replace").strip() or "?"
            try:
                rest = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                outcome = "ok" if rest == b"bye\n" else "cut"
            except (OSError, TimeoutError):
                outcome = "cut"
    except (OSError, TimeoutError) as e:
        outcome = _why(e)
    finally:
        if writer is not None:
            writer.close()
    out.append(f"{i} {t_start:.6f} {t_served:.6f} {time.monotonic():.6f} {host} {outcome}\n")


async def client(vips: list[str], port: int, every: float, path: str) -> None:
    # Connections that wait for a VIP nobody holds live up to CONNECT_TIMEOUT: hundreds at once.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    out: list[str] = []
    tasks: set[asyncio.Task[None]] = set()
    with open(path, "a", buffering=1 << 16) as f:
        tick = time.monotonic()
        while not stop.is_set():
            for i, v in enumerate(vips):
                t = asyncio.create_task(attempt(i, v, port, out))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            if out:
                f.write("".join(out))
                f.flush()
                out.clear()
            tick += every
            # A late tick (a busy machine) is not made up for: the next round starts now.
            tick = max(tick, time.monotonic())
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), tick - time.monotonic())
        for t in list(tasks):
            t.cancel()
        f.write("".join(out))


async def watch(state: str, flag: str, port: int, interval: float, fall: int, rise: int) -> None:
    """The check at `interval` (the flag, then a TCP connect to 127.0.0.1:PORT within the
    interval), `fall`/`rise` counted, the state written to `state` for keepalived's track_file:
    0 up, 1 down. It starts down, as an iprotate check does, until `rise` passes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    up, streak = False, 0

    def write(value: str) -> None:
        with open(state, "w") as f:  # in place: keepalived reads it on IN_CLOSE_WRITE
            f.write(value + "\n")

    write("1")
    tick = time.monotonic()
    while not stop.is_set():
        ok = not os.path.exists(flag)
        if ok:
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), interval)
                w.close()
            except (OSError, TimeoutError):
                ok = False
        streak = streak + 1 if ok != up else 0
        if streak >= (rise if ok else fall):
            up, streak = ok, 0
            write("0" if up else "1")
        tick = max(tick + interval, time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick - time.monotonic())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--hold", type=float, default=0.1)
    c = sub.add_parser("client")
    c.add_argument("--out", required=True)
    c.add_argument("--port", type=int, default=8080)
    c.add_argument("--every", type=float, default=0.01)
    c.add_argument("vips", nargs="+")
    w = sub.add_parser("watch")
    w.add_argument("--state", required=True)
    w.add_argument("--flag", required=True)
    w.add_argument("--port", type=int, default=8080)
    w.add_argument("--interval", type=float, default=0.2)
    w.add_argument("--fall", type=int, default=2)
    w.add_argument("--rise", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "watch":
        asyncio.run(watch(args.state, args.flag, args.port, args.interval, args.fall, args.rise))
    elif args.cmd == "serve":
        asyncio.run(serve(args.name, args.port, args.hold))
    else:
        asyncio.run(client(args.vips, args.port, args.every, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
