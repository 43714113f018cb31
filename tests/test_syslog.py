"""`iprotate run --syslog [FACILITY]` and `[run] syslog`: log lines on the local syslog socket.

The handler is checked against a datagram socket the test owns; the real daemon runs in a lab host
whose mount namespace has that socket bind-mounted on /dev/log (the machine's own /dev/log, if it
has one, is never touched), and the test reads what arrives: the `<PRI>` header, the ident and the
host name in each line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from labtools import settled, takeover_bound, wait_for

from iprotate.cluster.loader import parse_cluster
from iprotate.cluster.model import ClusterError
from iprotate.engine.syslog_handler import SyslogHandler
from iprotate.lab.lab import Lab, lab_cluster_toml

DAEMON_INFO = 3 * 8 + 6  # facility daemon, severity info
LOCAL3_INFO = 19 * 8 + 6


def _cluster(extra: str) -> dict[str, object]:
    text = lab_cluster_toml(2, 2).replace('password_file = "password"', 'password = "x"')
    return tomllib.loads(text + extra)


def test_run_syslog_key_takes_a_facility_name() -> None:
    c = parse_cluster(_cluster('\n[run]\nsyslog = "local3"\n'), "c.toml")
    assert c.run.syslog == "local3"
    assert parse_cluster(_cluster(""), "c.toml").run.syslog is None
    for bad in ('"dæmon"', '"kern"', "3", "true", '""'):
        with pytest.raises(ClusterError) as e:
            parse_cluster(_cluster(f"\n[run]\nsyslog = {bad}\n"), "c.toml")
        assert "run.syslog: must be a syslog facility: auth, authpriv" in str(e.value)


def _listener(path: Path, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(str(path))
    s.settimeout(2.0)
    return s


def _record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("iprotate", level, "", 0, msg, (), None)


def test_handler_sends_pri_ident_and_host(tmp_path: Path) -> None:
    sock = _listener(tmp_path / "log")
    h = SyslogHandler("daemon", "alpha", str(tmp_path / "log"))
    h.emit(_record("203.0.113.10/24 vhid 10: BACKUP -> MASTER\nsecond line"))
    h.emit(_record("peer silent", logging.WARNING))
    first = sock.recv(9000).decode()
    assert re.fullmatch(
        r"<30>\w{3} [ \d]\d \d\d:\d\d:\d\d iprotate\[\d+\]: alpha: "
        r"203\.0\.113\.10/24 vhid 10: BACKUP -> MASTER second line",
        first,
    ), first
    assert sock.recv(9000).decode().startswith("<28>")  # daemon.warning
    h.close()


def test_handler_never_blocks_on_a_stalled_syslog(tmp_path: Path) -> None:
    """A syslog daemon that reads nothing fills its queue: lines are dropped at once (the event
    loop must keep sending adverts), counted, and the count is logged when lines flow again."""
    sock = _listener(tmp_path / "log", rcvbuf=4096)
    h = SyslogHandler("local3", "bravo", str(tmp_path / "log"))
    t0 = time.monotonic()
    for i in range(2000):
        h.emit(_record(f"line {i} " + "x" * 200))
    assert time.monotonic() - t0 < 2.0  # a blocking send would hang here forever
    assert h.dropped > 0
    sock.settimeout(0.0)
    got = []
    while True:
        try:
            got.append(sock.recv(9000).decode())
        except BlockingIOError:
            break
    h.emit(_record("after"))
    sock.settimeout(2.0)
    note = sock.recv(9000).decode()
    assert re.search(r"<156>.* bravo: \d+ log lines dropped: the syslog socket was full", note)
    assert sock.recv(9000).decode().endswith("bravo: after")
    assert h.dropped == 0
    h.close()


def test_handler_reconnects_after_a_syslog_restart(tmp_path: Path) -> None:
    path = tmp_path / "log"
    sock = _listener(path)
    h = SyslogHandler("daemon", "alpha", str(path))
    h.emit(_record("one"))
    assert sock.recv(9000).endswith(b"one")
    sock.close()
    path.unlink()
    h.emit(_record("lost"))  # nobody listens: dropped, no exception, no hang
    sock = _listener(path)
    h.emit(_record("two"))
    assert b"1 log lines dropped" in sock.recv(9000)
    assert sock.recv(9000).endswith(b"two")
    h.close()


def _stream_listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)
    s.settimeout(2.0)
    return s


def _read_lines(conn: socket.socket, n: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\0") < n:
        chunk = conn.recv(65536)
        assert chunk, buf
        buf += chunk
    return buf.split(b"\0")[:n]


def test_handler_speaks_to_a_stream_socket(tmp_path: Path) -> None:
    """/dev/log as a stream socket (syslog-ng's unix-stream): it was refused at start ("Protocol
    wrong type for socket: no syslog daemon listens here"). Lines end with a NUL, as glibc's."""
    path = tmp_path / "log"
    srv = _stream_listener(path)
    h = SyslogHandler("daemon", "alpha", str(path))
    conn, _ = srv.accept()
    conn.settimeout(2.0)
    h.emit(_record("one"))
    h.emit(_record("two\nlines", logging.WARNING))
    one, two = _read_lines(conn, 2)
    assert one.startswith(b"<30>") and one.endswith(b"alpha: one")
    assert two.startswith(b"<28>") and two.endswith(b"alpha: two lines")
    h.close()
    conn.close()
    srv.close()


def test_a_nul_or_a_carriage_return_never_splits_a_line(tmp_path: Path) -> None:
    """On a stream socket a NUL ends a line: one inside a message cut it in two (and the second
    half became a line of its own, without a header)."""
    path = tmp_path / "log"
    srv = _stream_listener(path)
    h = SyslogHandler("daemon", "alpha", str(path))
    conn, _ = srv.accept()
    conn.settimeout(2.0)
    h.emit(_record("one\0two\rthree\x1b[31m"))
    h.emit(_record("next"))
    first, second = _read_lines(conn, 2)
    assert first.endswith(b"alpha: one two three [31m") and second.endswith(b"alpha: next")
    h.close()
    conn.close()
    srv.close()


def test_a_stream_reader_that_stops_never_blocks_and_a_new_one_gets_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    srv = _stream_listener(path)
    h = SyslogHandler("local3", "bravo", str(path))
    conn, _ = srv.accept()
    t0 = time.monotonic()
    for i in range(5000):
        h.emit(_record(f"line {i} " + "x" * 200))
    assert time.monotonic() - t0 < 2.0  # a blocking send would hang here forever
    assert h.dropped > 0 and len(h.pending) <= 1 << 16
    # The syslog daemon restarts: the old connection goes, a new listener takes its place.
    conn.close()
    srv.close()
    path.unlink()
    srv = _stream_listener(path)
    h.emit(_record("again"))  # the broken connection is noticed, a new one made
    conn, _ = srv.accept()
    conn.settimeout(2.0)
    h.emit(_record("after"))
    assert h.dropped == 0
    note, again, after = _read_lines(conn, 3)
    assert re.search(rb"bravo: \d+ log lines dropped", note), note
    assert again.endswith(b"bravo: again") and after.endswith(b"bravo: after")
    h.close()
    conn.close()
    srv.close()


# --- the real daemon, in a mount namespace of its own -------------------------------------------


def _private_dev(dev: Path, argv: list[str]) -> list[str]:
    """`argv` in a mount namespace of its own whose /dev is `dev` (with null, zero, urandom bound
    in from the real one): the test's socket is its /dev/log, the machine's /dev is untouched."""
    binds = " && ".join(
        f"touch {dev}/{n} && mount --bind /dev/{n} {dev}/{n}" for n in ("null", "zero", "urandom")
    )
    script = f'{binds} && mount --rbind {dev} /dev && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]


@pytest.mark.netns
def test_daemon_logs_to_syslog(make_lab: Callable[..., Lab], tmp_path: Path) -> None:
    lab = make_lab(hosts=2, vips=2, run_args=("--hold-down", "0"))
    dev = tmp_path / "dev"
    dev.mkdir()
    sock = _listener(dev / "log")
    sock.settimeout(0.2)
    log = str(lab.workdir / "alpha.log")
    argv = _private_dev(dev, [*lab.run_argv("alpha"), "--syslog", "local3"])
    lab.procs["alpha"] = [lab.seg.spawn("alpha", argv, log=log)]
    lab.start("bravo")
    wait_for(settled(lab), 10.0)
    (proc,) = lab.procs["alpha"]
    lines: list[str] = []

    def arrived(text: str) -> Callable[[], bool]:
        def check() -> bool:
            with contextlib.suppress(TimeoutError):
                lines.append(sock.recv(9000).decode())
            return any(text in line for line in lines)

        return check

    wait_for(arrived("-> MASTER"), 5.0)
    master = next(line for line in lines if "-> MASTER" in line)
    assert master.startswith(f"<{LOCAL3_INFO}>")
    assert f" iprotate[{proc.pid}]: alpha: INFO " in master
    # Nothing of it on stderr: syslog replaces it.
    assert "-> MASTER" not in Path(log).read_text()
    assert lab.stop("alpha") == [0]
    wait_for(arrived("alpha: INFO alpha: stopping: handing over"), 3.0)


@pytest.mark.netns
def test_daemon_from_the_file_without_syslog_socket_says_so(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(hosts=2, vips=2, extra_run={"syslog": "daemon"})
    dev = tmp_path / "dev"
    dev.mkdir()  # no log in it
    log = lab.workdir / "alpha.log"
    argv = _private_dev(dev, lab.run_argv("alpha"))
    p = lab.seg.spawn("alpha", argv, log=str(log))
    assert p.wait(timeout=20) == 1
    assert "error: syslog: /dev/log: No such file or directory: no syslog daemon" in log.read_text()
    assert lab.holders() == {str(v.ip): [] for v in lab.plan.vips}
    # --stderr overrides the file: the same daemon runs, and logs where it always did.
    p = lab.seg.spawn(
        "alpha", _private_dev(dev, [*lab.run_argv("alpha"), "--stderr"]), log=str(log)
    )
    lab.procs["alpha"] = [p]
    wait_for(lambda: "-> MASTER" in log.read_text(), 10.0)
    assert lab.stop("alpha") == [0]


@pytest.mark.netns
def test_a_syslog_that_reads_nothing_never_stalls_the_daemon(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """The syslog daemon hangs (its socket is never read): the engine still takes its VIPs,
    answers every SIGUSR1 (each logs a line per VIP), and hands over and exits on SIGTERM."""
    lab = make_lab(hosts=2, vips=4, run_args=("--hold-down", "0"))
    dev = tmp_path / "dev"
    dev.mkdir()
    sock = _listener(dev / "log", rcvbuf=1)  # the kernel's minimum: full after a few lines
    argv = _private_dev(dev, [*lab.run_argv("alpha"), "--syslog", "-v"])
    lab.procs["alpha"] = [lab.seg.spawn("alpha", argv, log=str(lab.workdir / "alpha.log"))]
    lab.start("bravo")
    wait_for(settled(lab), 10.0)
    (proc,) = lab.procs["alpha"]
    for _ in range(50):
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.01)
    lab.kill("bravo")  # alpha must still take bravo's VIPs, on time
    wait_for(settled(lab, {"bravo"}), takeover_bound(lab, "bravo") + 1.0)
    assert lab.stop("alpha") == [0]
    sock.close()
