"""The control socket's path rules and how clients find their daemon's socket, on unix sockets
in a temporary directory (no root, no namespaces; the namespace tests run the real daemons)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from iprotate.engine import control
from iprotate.engine.control import ControlError, claim_path, find_socket


@contextlib.contextmanager
def listening(path: Path) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(8)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (pytest's tmp_path can be too long for sun_path)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="ipr-ctl-", dir="/tmp"))
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def test_claim_path_removes_only_a_stale_socket(short_dir: Path) -> None:
    stale = short_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # bound, nobody listens: what a killed daemon leaves
    claim_path(str(stale))
    assert not stale.exists()
    live = short_dir / "live.sock"
    with listening(live):
        with pytest.raises(ControlError, match=rf"is in use by pid {os.getpid()}"):
            claim_path(str(live))
        assert live.exists()


def test_claim_path_refuses_what_is_not_a_socket(short_dir: Path) -> None:
    f = short_dir / "file"
    f.write_text("keep me\n")
    with pytest.raises(ControlError, match="is a regular file: refusing to replace it"):
        claim_path(str(f))
    with pytest.raises(ControlError, match="is a directory: refusing"):
        claim_path(str(short_dir))
    with pytest.raises(ControlError, match=f"{f} is not a directory"):
        claim_path(str(f / "x.sock"))
    with pytest.raises(
        ControlError, match=r"too long for a unix socket \(\d+ bytes, at most 107\)"
    ):
        claim_path(str(short_dir / ("x" * 110)))
    assert f.read_text() == "keep me\n"


def test_find_socket_one_none_several(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "SOCKET_DIR", str(short_dir))
    with pytest.raises(ControlError, match="no iprotate daemon of this network namespace"):
        find_socket()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(short_dir / "dead.sock"))
    s.close()  # stale: ignored
    (short_dir / "file.sock").write_text("")  # not a socket: ignored
    with listening(short_dir / "alpha.sock"):
        assert find_socket() == str(short_dir / "alpha.sock")
        several = pytest.raises(ControlError, match=r"several daemons .* --host NAME or --socket")
        with listening(short_dir / "bravo.sock"), several:
            find_socket()


def _fill_backlog(path: Path) -> list[socket.socket]:
    """Connections queued until the listener's backlog is full (nobody accepts them)."""
    queued = []
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(str(path))
        except BlockingIOError:
            c.close()
            return queued
        queued.append(c)


def test_a_busy_daemon_is_waited_for_then_named_busy(short_dir: Path) -> None:
    """A burst of clients filling the daemon's backlog: connect() failed at once with EAGAIN,
    a bare '[Errno 11] Resource temporarily unavailable', and find_socket took the busy daemon
    for no daemon at all. Now the client waits for room, and says 'busy' if none comes."""
    import threading

    path = short_dir / "busy.sock"
    with listening(path) as srv:
        srv.listen(0)
        queued = _fill_backlog(path)
        try:
            with pytest.raises(ControlError, match="busy"):
                control.request(str(path), {"cmd": "status"}, timeout=0.3)
            with pytest.raises(ControlError, match="busy"):
                find_socket([str(path)])  # busy, not "no daemon"

            def answer() -> None:
                for c in queued:
                    c.close()
                for _ in range(len(queued) + 1):
                    conn, _ = srv.accept()
                    if conn.recv(100).startswith(b'{"cmd": "status"}'):
                        conn.sendall(b'{"ok": true}\n')
                    conn.close()

            threading.Timer(0.2, answer).start()
            assert control.request(str(path), {"cmd": "status"}, timeout=3.0) == {"ok": True}
        finally:
            for c in queued:
                c.close()


class _Refused(Exception):
    pass


def test_bind_server_raises_the_daemons_own_error_and_none_without_a_path(
    short_dir: Path,
) -> None:
    import asyncio

    async def handler(req: dict[str, object]) -> dict[str, object]:
        return {"ok": True}

    async def go() -> None:
        assert await control.bind_server(None, handler, None, _Refused) is None
        (short_dir / "f").write_text("")
        with pytest.raises(_Refused, match="is a regular file: refusing to replace it"):
            await control.bind_server(str(short_dir / "f"), handler, None, _Refused)
        server = await control.bind_server(str(short_dir / "s"), handler, None, _Refused)
        assert server is not None
        await server.close()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("req", "stopping", "error"),
    [
        ({"cmd": "drain"}, True, "stopping: no drain"),
        ({"cmd": "undrain", "vip": "203.0.113.10"}, True, "stopping: no undrain"),
        ({"cmd": "drain", "vip": 10}, False, "vip must be an address, or absent for every VIP"),
        ({"cmd": "drain", "vip": ""}, False, "'' is not an IP address"),
        ({"cmd": "drain", "vip": "x/24"}, False, "'x/24' is not an IP address"),
    ],
)
def test_a_drain_request_that_names_no_vip_is_refused_with_its_error(
    req: dict[str, object], stopping: bool, error: str
) -> None:
    with pytest.raises(control.BadRequest) as e:
        control.drain_target(req, stopping)
    assert str(e.value) == error


def test_a_drain_request_names_a_vip_with_or_without_its_prefix_or_every_vip() -> None:
    from ipaddress import ip_address

    assert control.drain_target({"cmd": "drain"}, False) is None
    assert control.drain_target({"cmd": "drain", "vip": "203.0.113.10/24"}, False) == ip_address(
        "203.0.113.10"
    )
    assert control.drain_target({"cmd": "undrain", "vip": "2001:db8::1"}, False) == ip_address(
        "2001:db8::1"
    )
    assert control.drain_answer(["203.0.113.10"], None) == {
        "ok": True,
        "drained": ["203.0.113.10"],
    }
    assert control.drain_answer([], "disk full")["warning"] == (
        "done, but not remembered across a restart: disk full"
    )
