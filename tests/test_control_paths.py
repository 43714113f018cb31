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
