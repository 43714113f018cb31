"""sd_notify without systemd: the exact datagrams a real AF_UNIX socket receives."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from iprotate.engine.sdnotify import Notifier


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def recv(self) -> str:
        return self.sock.recv(4096).decode()

    def nothing(self) -> bool:
        """True if no datagram is waiting."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(5)
        return False


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[Listener, Notifier]]:
    path = str(tmp_path / "notify.sock")
    listener = Listener(path)
    yield listener, Notifier({"NOTIFY_SOCKET": path})
    listener.sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[Listener, Notifier]]:
    name = f"iprotate-test-{uuid.uuid4().hex}"
    listener = Listener("\0" + name)
    yield listener, Notifier({"NOTIFY_SOCKET": "@" + name})
    listener.sock.close()


def test_ready(path_socket: tuple[Listener, Notifier]) -> None:
    listener, n = path_socket
    assert n.enabled
    assert n.ready()
    assert listener.recv() == "READY=1"


def test_ready_with_status(path_socket: tuple[Listener, Notifier]) -> None:
    listener, n = path_socket
    assert n.ready("4 VIPs, 2 master")
    assert listener.recv() == "READY=1\nSTATUS=4 VIPs, 2 master"


def test_status(path_socket: tuple[Listener, Notifier]) -> None:
    listener, n = path_socket
    assert n.status("draining 203.0.113.10")
    assert listener.recv() == "STATUS=draining 203.0.113.10"


def test_status_cannot_inject_assignments(path_socket: tuple[Listener, Notifier]) -> None:
    listener, n = path_socket
    n.status("two\nREADY=1")
    assert listener.recv() == "STATUS=two READY=1"


def test_watchdog_stopping(path_socket: tuple[Listener, Notifier]) -> None:
    listener, n = path_socket
    assert n.watchdog()
    assert listener.recv() == "WATCHDOG=1"
    assert n.stopping()
    assert listener.recv() == "STOPPING=1"


def test_reloading(path_socket: tuple[Listener, Notifier]) -> None:
    listener, n = path_socket
    before = time.monotonic_ns() // 1000
    assert n.reloading()
    after = time.monotonic_ns() // 1000
    m = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", listener.recv())
    assert m is not None
    # CLOCK_MONOTONIC, in microseconds: what systemd compares with its own clock.
    assert before <= int(m.group(1)) <= after


def test_abstract_socket(abstract_socket: tuple[Listener, Notifier]) -> None:
    listener, n = abstract_socket
    assert n.address is not None and n.address.startswith("\0")
    assert n.ready("up")
    assert listener.recv() == "READY=1\nSTATUS=up"
    assert n.watchdog()
    assert listener.recv() == "WATCHDOG=1"


def test_unset_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready("x")
    assert not n.status("x")
    assert not n.watchdog()
    assert not n.stopping()
    assert not n.reloading()
    assert n.watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "@", "relative/path", "vsock:2:1234"])
def test_unusable_socket_values_disable(value: str) -> None:
    n = Notifier({"NOTIFY_SOCKET": value})
    assert not n.enabled
    assert not n.ready()


def test_default_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    listener = Listener(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        assert Notifier().ready()
        assert listener.recv() == "READY=1"
    finally:
        listener.sock.close()


def test_send_failure_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level(logging.DEBUG, logger="iprotate"):
        assert not n.ready()
        assert not n.watchdog()
    assert "nobody-listens.sock" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_socket_gone_after_start(path_socket: tuple[Listener, Notifier]) -> None:
    listener, n = path_socket
    assert n.ready()
    listener.sock.close()
    assert n.address is not None
    os.unlink(n.address)
    assert not n.watchdog()


def test_one_datagram_per_message(path_socket: tuple[Listener, Notifier]) -> None:
    listener, n = path_socket
    n.watchdog()
    n.watchdog()
    assert listener.recv() == "WATCHDOG=1"
    assert listener.recv() == "WATCHDOG=1"
    assert listener.nothing()


SOCK = {"NOTIFY_SOCKET": "/run/systemd/notify"}


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 10.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "4242"}, 0.5),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "4243"}, None),  # our parent's
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], want: float | None) -> None:
    assert Notifier({**SOCK, **env}, pid=4242).watchdog_interval() == want


def test_watchdog_interval_needs_the_socket() -> None:
    assert Notifier({"WATCHDOG_USEC": "10000000"}).watchdog_interval() is None


def test_watchdog_pid_defaults_to_ours() -> None:
    env = {**SOCK, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval() == 2.0


def test_environment_read_once() -> None:
    env = {**SOCK, "WATCHDOG_USEC": "1000000"}
    n = Notifier(env)
    env.clear()  # e.g. the daemon scrubbing NOTIFY_SOCKET before running hook scripts
    assert n.enabled
    assert n.watchdog_interval() == 1.0
