#!/usr/bin/env python3
"""Record real ucarp advertisements as JSON fixtures for tests/test_codec.py.

Two network namespaces joined by a veth pair: Debian's ucarp runs in one, and a raw IPPROTO 112
socket in the other (the way iprotate receives) prints every packet it gets. Needs root, iproute2
and ucarp. Everything created is named ``ipr<pid>...`` and removed on exit.

This file deliberately does not import iprotate: the fixtures must not depend on the codec they
check. test_codec.py imports it for its live tests.

    sudo python3 tests/record_ucarp_adverts.py --out tests/fixtures/ucarp_adverts.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

GROUP = "224.0.0.18"
HOST_A = "198.51.100.1"  # where ucarp runs
HOST_B = "198.51.100.2"  # where packets are captured (or injected)
PREFIX_LEN = 24

# Runs inside the capture namespace: join the group on the interface (CARP.md: joining without
# an ifindex fails in a namespace with no default route), then print each packet as hex.
RECEIVER = r"""
import select, socket, struct, sys, time
ifname, seconds = sys.argv[1], float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
mreq = socket.inet_aton(sys.argv[3]) + bytes(4) + struct.pack("@i", socket.if_nametoindex(ifname))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
print("ready", flush=True)
deadline = time.monotonic() + seconds
while (left := deadline - time.monotonic()) > 0:
    if select.select([sock], [], [], left)[0]:
        print(sock.recv(65535).hex(), flush=True)
"""

# /usr/sbin may be missing from a non-root PATH.
UCARP = shutil.which("ucarp") or ("/usr/sbin/ucarp" if Path("/usr/sbin/ucarp").exists() else None)

_serial = itertools.count()


@dataclass(frozen=True)
class Preset:
    """ucarp's settings for one vhid."""

    vhid: int
    password: str
    vip: str
    advbase: int
    advskew: int


# The presets recorded into the fixture file: vhid edges, sub-second advbase, skew 255, the
# longest password ucarp takes and a non-ASCII one (its UTF-8 bytes are the HMAC key).
PRESETS = [
    Preset(vhid=1, password="secret", vip="203.0.113.1", advbase=1, advskew=0),
    Preset(vhid=42, password="0123456789abcdefghi", vip="203.0.113.42", advbase=0, advskew=100),
    Preset(vhid=255, password="pässwörd", vip="203.0.113.254", advbase=2, advskew=255),
]


def ucarp_argv(preset: Preset, interface: str, srcip: str, *extra: str) -> list[str]:
    """The ucarp command line for preset, logging to stdout/stderr only."""
    return [
        UCARP or "ucarp",
        f"--interface={interface}",
        f"--srcip={srcip}",
        f"--vhid={preset.vhid}",
        f"--pass={preset.password}",
        f"--addr={preset.vip}",
        f"--advbase={preset.advbase}",
        f"--advskew={preset.advskew}",
        "--facility=none",  # keep the host's syslog out of it
        *extra,
    ]


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


class Segment:
    """Two fresh namespaces, ``a`` (HOST_A) and ``b`` (HOST_B), joined by a veth pair."""

    def __init__(self) -> None:
        tag = f"ipr{os.getpid()}x{next(_serial)}"  # unique, and IFNAMSIZ-safe with a suffix
        self.ns_a, self.ns_b = f"{tag}a", f"{tag}b"
        self.if_a, self.if_b = f"{tag}a", f"{tag}b"
        self._created: list[str] = []

    def __enter__(self) -> Segment:
        try:
            for ns in (self.ns_a, self.ns_b):
                _run("ip", "netns", "add", ns)
                self._created.append(ns)
            _run("ip", "-n", self.ns_a, "link", "add", self.if_a, "type", "veth",
                 "peer", "name", self.if_b, "netns", self.ns_b)  # fmt: skip
            for ns, ifname, addr in (
                (self.ns_a, self.if_a, HOST_A),
                (self.ns_b, self.if_b, HOST_B),
            ):
                _run("ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", ifname)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                _run("ip", "-n", ns, "link", "set", ifname, "up")
            self._wait_running()
            return self
        except BaseException:
            self.close()
            raise

    def _wait_running(self) -> None:
        # ucarp sleeps 10 s when its interface is not RUNNING yet: wait for the carrier first.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["ip", "-n", self.ns_a, "-o", "link", "show", self.if_a],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if "LOWER_UP" in out and "state UP" in out:
                return
            time.sleep(0.02)
        raise TimeoutError(f"{self.if_a} did not come up")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Delete the namespaces (their veth ends go with them); safe to call twice."""
        while self._created:
            subprocess.run(["ip", "netns", "del", self._created.pop()], capture_output=True)

    def spawn(self, ns: str, argv: Sequence[str], *, stream: str = "stdout") -> Proc:
        """Start argv inside ns, reading its stdout or stderr line by line."""
        return Proc(["ip", "netns", "exec", ns, *argv], stream=stream)


class Proc:
    """A child process whose stdout or stderr lines are collected by a thread."""

    def __init__(self, argv: Sequence[str], *, stream: str) -> None:
        pipes = {
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
            stream: subprocess.PIPE,
        }
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", **pipes
        )
        self.lines: queue.Queue[str] = queue.Queue()
        source = self.popen.stdout if stream == "stdout" else self.popen.stderr
        assert source is not None
        threading.Thread(target=self._pump, args=(source,), daemon=True).start()

    def _pump(self, source: Iterable[str]) -> None:
        for line in source:
            self.lines.put(line.rstrip("\n"))

    def expect(self, match: Callable[[str], bool], timeout: float) -> str:
        """The first line (from now on) for which match is true; TimeoutError after timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if match(line):
                return line
        raise TimeoutError(f"no matching line from {self.popen.args!r} in {timeout} s")

    def stop(self) -> None:
        """Terminate the process by its PID (ip netns exec execs it: same PID), then kill."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=3)

    def drain(self) -> list[str]:
        """The lines collected and not yet consumed."""
        out: list[str] = []
        while True:
            try:
                out.append(self.lines.get_nowait())
            except queue.Empty:
                return out


def _vhid_of(packet: bytes) -> int:
    # Just enough parsing to sort packets by vhid, without the codec under test.
    return packet[(packet[0] & 0x0F) * 4 + 1]


def capture(presets: Sequence[Preset], count: int, timeout: float) -> list[dict[str, object]]:
    """Run one ucarp per preset side by side and collect ``count`` adverts of each.

    Returns one record per preset: its settings, the ucarp command line, the packets (hex of the
    whole IPv4 packet as a raw socket returns it) and ucarp's stderr lines.
    """
    if len({p.vhid for p in presets}) != len(presets):
        raise ValueError("presets need distinct vhids")
    with Segment() as seg:
        receiver = seg.spawn(
            seg.ns_b, [sys.executable, "-c", RECEIVER, seg.if_b, f"{timeout}", GROUP]
        )
        ucarps: dict[int, tuple[list[str], Proc]] = {}
        try:
            receiver.expect(lambda line: line == "ready", timeout=10)
            for preset in presets:
                argv = ucarp_argv(preset, seg.if_a, HOST_A)
                ucarps[preset.vhid] = (argv, seg.spawn(seg.ns_a, argv, stream="stderr"))
            got: dict[int, list[str]] = {p.vhid: [] for p in presets}
            deadline = time.monotonic() + timeout
            while any(len(packets) < count for packets in got.values()):
                line = receiver.expect(
                    lambda _: True, timeout=max(0.0, deadline - time.monotonic())
                )
                packets = got.get(_vhid_of(bytes.fromhex(line)))
                if packets is not None and len(packets) < count:
                    packets.append(line)
        finally:
            for _, proc in ucarps.values():
                proc.stop()
            receiver.stop()
    return [
        {
            **asdict(preset),
            "srcip": HOST_A,
            "group": GROUP,
            "ucarp_argv": ucarps[preset.vhid][0],
            "ucarp_stderr": ucarps[preset.vhid][1].drain(),
            "packets": got[preset.vhid],
        }
        for preset in presets
    ]


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Turn SIGTERM/SIGHUP into SystemExit so the finally blocks tear everything down.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="-", help="JSON file to write (default: stdout)")
    parser.add_argument("--count", type=int, default=3, help="adverts per preset")
    parser.add_argument("--timeout", type=float, default=40.0, help="give up after (seconds)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, raw sockets)")
    if UCARP is None:
        parser.error("ucarp is not installed")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)

    captures = capture(PRESETS, args.count, args.timeout)
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "ucarp"], capture_output=True, text=True
    ).stdout
    document = {
        "comment": (
            "Adverts sent by Debian's ucarp (as master) on a veth pair between two network "
            "namespaces, received by a raw AF_INET/SOCK_RAW/112 socket in the peer namespace. "
            "Each packet is the hex of the whole IPv4 packet. Passwords are the UTF-8 bytes of "
            "the strings given."
        ),
        "command": " ".join(["python3", *sys.argv]) + "  # as root",
        "ucarp_version": version,
        "kernel": platform.release(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "captures": captures,
    }
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
