"""`iprotate lab`, the first command a newcomer runs: it works, and it leaves nothing behind on
any way out (the scripted demo, a closed terminal, SIGKILL)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time

import pytest
from labtools import wait_for

from iprotate.lab.janitor import namespaces

pytestmark = pytest.mark.netns

LAB = [sys.executable, "-m", "iprotate", "lab", "--hosts", "3", "--vips", "6"]


def _prefix(text: str) -> str:
    m = re.search(r"lab (ipr[0-9a-f]+):", text)
    assert m, text
    return m.group(1)


def _leftovers(prefix: str) -> list[str]:
    """Namespaces of the lab, and processes whose command line names its files."""
    return namespaces(prefix)


def test_demo_settles_every_step_and_removes_everything() -> None:
    r = subprocess.run([*LAB, "--demo"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("settled in") == 6, r.stdout  # start, break, fix, fail, restore, stop
    # Dual-stack by default: IPv6 VIPs beside the IPv4 ones, probed by the client too (every
    # step settled, so each one was answered by its planned host).
    assert "6 IPv4 and 3 IPv6 VIPs" in r.stdout
    assert "2001:db8:113::10/64" in r.stdout and "2001:db8:113::12/64" in r.stdout
    assert "lab removed" in r.stdout
    assert _leftovers(_prefix(r.stdout)) == []


class _Terminal:
    """The lab in a pseudo-terminal of its own, as a user's shell runs it."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            LAB, stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty
        )
        os.close(slave)
        self.seen = ""

    def read_until(self, pattern: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            left = end - time.monotonic()
            assert left > 0, f"no {pattern!r} in: {self.seen[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the terminal is gone
                    break
        return self.seen

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("how", ["terminal closed", "SIGKILL"])
def test_the_lab_leaves_nothing_behind(how: str) -> None:
    term = _Terminal()
    prefix = None
    try:
        prefix = _prefix(term.read_until(r"lab ipr[0-9a-f]+:", 30.0))
        term.read_until(r"answered by", 30.0)  # the hosts run, the live table is up
        assert len(_leftovers(prefix)) == 5  # switch, 3 hosts, client
        if how == "terminal closed":
            os.close(term.master)
            term.master = -1
            term.proc.wait(timeout=20.0)
        else:
            os.kill(term.proc.pid, signal.SIGKILL)
            term.proc.wait(timeout=5.0)
        wait_for(lambda: _leftovers(prefix) == [], 20.0, step=0.2)
    finally:
        term.close()
        if prefix is not None:
            from iprotate.lab.janitor import sweep

            sweep(prefix)  # whatever the test's failure left


def test_no_service_leaves_the_service_out() -> None:
    argv = [sys.executable, "-m", "iprotate", "lab", "--hosts", "1", "--vips", "1"]
    r = subprocess.run(
        [*argv, "--demo", "--no-service"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("settled in") == 1 and "served by" not in r.stdout
    assert _leftovers(_prefix(r.stdout)) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--vips6", "300"], "0..245 IPv6 VIPs"),
        (["--hosts", "2", "--legacy", "2"], "ucarp, which speaks no IPv6: add --vips6 0"),
        (["--vips", "0", "--vips6", "0"], "or none, with IPv6 ones"),
    ],
)
def test_impossible_labs_are_refused_before_anything_is_built(args: list[str], says: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "iprotate", "lab", *args, "--demo"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and says in r.stderr, r.stdout + r.stderr
    assert "lab ipr" not in r.stdout
