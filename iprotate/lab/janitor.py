"""The lab's janitor: removes a segment's namespaces and processes when its owner dies.

A `Segment` cleans up after itself on every way out that runs Python code (return, exception,
Ctrl-C, SIGTERM, SIGHUP from a closed terminal). A SIGKILL, or an interpreter that dies hard,
runs no code, and named namespaces outlive their creator. So each segment starts this small
process in a session of its own (a closing terminal does not reach it): it waits for the owner's
PID to end, then kills whatever still runs inside the namespaces whose names start with the
segment's run-unique prefix and deletes them. When the owner cleaned up itself, there is nothing
left to do and the janitor exits.

    python -m iprotate.lab.janitor --pid OWNER --prefix ipr1a2b3c
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import time


def namespaces(prefix: str) -> list[str]:
    """The namespaces on this machine whose names start with `prefix-`."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{prefix}-")]


def sweep(prefix: str) -> list[str]:
    """Kill every process inside the segment's namespaces (by PID) and delete them."""
    gone = namespaces(prefix)
    for ns in gone:
        for _ in range(3):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            found = [int(p) for p in pids.stdout.split()]
            if not found:
                break
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return gone


def wait_for_exit(pid: int) -> None:
    """Block until process `pid` has ended (at once if it has already)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    if not args.prefix.startswith("ipr") or len(args.prefix) < 6:
        parser.error("the prefix must be a segment's run-unique prefix (ipr...)")
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)  # only the owner's death (or SIGTERM) ends us
    wait_for_exit(args.pid)
    sweep(args.prefix)


if __name__ == "__main__":
    main()
